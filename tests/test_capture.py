"""The capture core against independent references: native_layer_norm, autograd, the module."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lninspect import capture
from lninspect.derived import largest_abs
from lninspect.hooks.reduce import token_stats
from lninspect.norms.discovery import find_norms

RTOL = 1e-5


def rel_err(got: np.ndarray, want: np.ndarray | torch.Tensor) -> float:
    want = want.detach().double().cpu().numpy() if isinstance(want, torch.Tensor) else want
    got = np.asarray(got, dtype=np.float64)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


class FullTensors:
    """An independent recorder that keeps every norm's full input and output (tests only)."""

    def __init__(self, model: nn.Module, retain_grad: bool = False) -> None:
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = []
        for name, module in model.named_modules():
            if isinstance(module, nn.LayerNorm):
                # prepend: see the input before any other hook (capture's alias) replaces it
                self.handles.append(
                    module.register_forward_pre_hook(self._keep_input(name), prepend=True)
                )
                self.handles.append(
                    module.register_forward_hook(self._keep_output(name, retain_grad))
                )

    def _keep_input(self, name: str):
        def hook(module, args):
            self.inputs[name] = args[0]

        return hook

    def _keep_output(self, name: str, retain_grad: bool):
        def hook(module, args, output):
            self.outputs[name] = output
            if retain_grad and output.requires_grad:
                output.retain_grad()

        return hook

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def run_captured(model: nn.Module, ids: torch.Tensor, grads: bool = False):
    full = FullTensors(model, retain_grad=grads)
    with capture(model, grads=grads) as cap:
        out = model(ids, labels=ids if grads else None)
        if grads:
            out.loss.backward()
    full.close()
    return cap.result(), full, out


def test_mean_and_std_equal_native_layer_norm(tiny_model):
    ids = torch.randint(0, 300, (3, 17))
    result, full, _ = run_captured(tiny_model, ids)
    assert len(result.norms) == 5
    for norm in result.norms:
        module = tiny_model.get_submodule(norm.name)
        x = full.inputs[norm.name]
        _, mean, rstd = torch.native_layer_norm(
            x, module.normalized_shape, module.weight, module.bias, module.eps
        )
        assert norm.input.mean.shape == (3, 17)
        assert rel_err(norm.input.mean, mean.squeeze(-1)) < RTOL
        assert rel_err(norm.input.std, 1 / rstd.squeeze(-1)) < RTOL
        x64 = x.double()
        assert rel_err(norm.input.rms, (x64.square().mean(-1) + module.eps).sqrt()) < RTOL
        assert rel_err(norm.input.absmax, x64.abs().amax(-1)) < RTOL
        np.testing.assert_array_equal(norm.input.absmax_dim, x.abs().argmax(-1).numpy())
        y64 = full.outputs[norm.name].double()
        assert rel_err(norm.output.mean, y64.mean(-1)) < RTOL
        assert rel_err(norm.output.std, y64.std(-1, correction=0)) < RTOL


def test_output_recomputed_from_statistics(tiny_model):
    ids = torch.randint(0, 300, (2, 11))
    result, full, _ = run_captured(tiny_model, ids)
    for norm in result.norms:
        module = tiny_model.get_submodule(norm.name)
        x = full.inputs[norm.name].detach().double()
        mean = torch.from_numpy(norm.input.mean).double()[..., None]
        std = torch.from_numpy(norm.input.std).double()[..., None]
        y_hat = (x - mean) / std * module.weight.detach().double() + module.bias.detach().double()
        assert rel_err(y_hat.numpy(), full.outputs[norm.name]) < RTOL
        assert norm.eps == module.eps
        assert norm.weight.mean == pytest.approx(module.weight.mean().item(), rel=1e-6)
        assert norm.weight.negative == int((module.weight < 0).sum())


def test_gradient_norms_equal_autograd(tiny_model):
    ids = torch.randint(0, 300, (2, 9))
    full = FullTensors(tiny_model)
    with capture(tiny_model, grads=True) as cap:
        out = tiny_model(ids, labels=ids)
        inputs, outputs = list(full.inputs.values()), list(full.outputs.values())
        # Reference: autograd's gradients of the loss w.r.t. each norm's input and output.
        grads = torch.autograd.grad(out.loss, inputs + outputs, retain_graph=True)
        out.loss.backward()
    full.close()
    result = cap.result()
    for i, norm in enumerate(result.norms):
        g_in_total, g_out = grads[i], grads[len(inputs) + i]
        assert rel_err(norm.grad.output_norm, g_out.norm(dim=-1)) < RTOL
        assert rel_err(norm.grad.residual_norm, g_in_total.norm(dim=-1)) < RTOL
        # Through the norm alone: the vector-Jacobian product of the module at its input.
        module = tiny_model.get_submodule(norm.name)
        x = full.inputs[norm.name].detach().requires_grad_()
        (g_through,) = torch.autograd.grad(module(x), x, g_out)
        assert rel_err(norm.grad.input_norm, g_through.norm(dim=-1)) < RTOL


def test_what_the_watch_leaves_out_changes_nothing_else(tiny_model):
    """token_dims=False, residual=False and weights=False, as the watch captures:
    the peak's dimension alone (-1 at every other token), no residual-stream gradient and
    no weight summary; every other number as a full capture's."""
    ids = torch.randint(0, 300, (3, 13))
    results = []
    for options in ({}, {"token_dims": False, "residual": False, "weights": False}):
        with capture(tiny_model, grads=True, **options) as cap:
            tiny_model(ids, labels=ids).loss.backward()
        results.append(cap.result())
    for full, lean in zip(*(r.norms for r in results), strict=True):
        np.testing.assert_array_equal(lean.input.absmax, full.input.absmax)
        peak = largest_abs(full)
        assert peak.where is not None and lean.input.absmax_dim[peak.where] == peak.dim
        assert (lean.input.absmax_dim != -1).sum() == 1
        np.testing.assert_array_equal(lean.input.std, full.input.std)
        np.testing.assert_array_equal(lean.grad.input_norm, full.grad.input_norm)
        assert np.isnan(lean.grad.residual_norm).all() and lean.weight is None
        assert full.weight is not None


def test_the_peak_dimension_passes_over_padding_and_non_finite_tokens():
    x = torch.randn(2, 5, 16)
    x[0, 1, 3] = 50.0  # the largest |x|, on a pad token
    x[1, 0, 7] = -40.0  # the largest on a real one
    x[1, 2, 0] = float("inf")
    real = torch.ones(2, 5, dtype=torch.bool)
    real[0, 1:] = False
    stats = token_stats(x, x, 1e-5, token_dims=False, real=real)
    np.testing.assert_array_equal(stats["absmax"], x.abs().amax(-1))
    want = torch.full((2, 5), -1)
    want[1, 0] = 7
    np.testing.assert_array_equal(stats["absmax_dim"], want)


def test_backward_after_the_block_records_nothing(tiny_model):
    ids = torch.randint(0, 300, (1, 6))
    with capture(tiny_model, grads=True) as cap:
        out = tiny_model(ids, labels=ids)
    out.loss.backward()  # the tensor hooks are still on the graph, but the block is over
    assert all(not call for calls in cap._hooks.backward.values() for call in calls)


def test_residual_gradient_differs_from_branch_in_pre_ln(tiny_model):
    ids = torch.randint(0, 300, (1, 12))
    result, _, _ = run_captured(tiny_model, ids, grads=True)
    ln_1 = result.norm("transformer.h.1.ln_1").grad
    # The last position predicts nothing in next-token loss, so it gets no gradient at all.
    assert np.all(ln_1.residual_norm[:, -1] == 0)
    assert np.all(ln_1.residual_norm[:, :-1] > ln_1.input_norm[:, :-1])
    ln_f = result.norm("transformer.ln_f").grad  # ln_f's input feeds nothing else
    np.testing.assert_allclose(ln_f.residual_norm, ln_f.input_norm, rtol=RTOL)


def test_in_place_op_after_norm():
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln = nn.LayerNorm(8)
            self.proj = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.ln(x)
            y.mul_(2.0)  # in place on the norm's output
            return x + self.proj(y)

    torch.manual_seed(0)
    block, x = Block(), torch.randn(2, 5, 8, requires_grad=True)
    y_ref = block.ln(x)
    y_ref.retain_grad()
    (x + block.proj(2.0 * y_ref)).square().sum().backward()
    with capture(block, grads=True) as cap:
        block(x).square().sum().backward()
    grad = cap.result().norms[0].grad
    assert rel_err(grad.output_norm, y_ref.grad.norm(dim=-1)) < RTOL


def test_plain_module_and_user_layernorm_without_affine():
    class MyLayerNorm(nn.Module):
        """A user's own LayerNorm, written from the formula, without parameters."""

        def __init__(self, epsilon: float = 1e-5) -> None:
            super().__init__()
            self.epsilon = epsilon

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            mu = x.mean(-1, keepdim=True)
            var = (x - mu).square().mean(-1, keepdim=True)
            return (x - mu) / torch.sqrt(var + self.epsilon)

    model = nn.Sequential(nn.Linear(16, 16), MyLayerNorm(1e-3), nn.Linear(16, 16), nn.LayerNorm(16))
    norms = find_norms(model)
    assert [n.type for n in norms] == ["MyLayerNorm", "LayerNorm"]
    assert norms[0].eps == 1e-3 and norms[0].eps_known
    x = torch.randn(4, 6, 16)
    with capture(model) as cap:
        model(x)
    result = cap.result()
    assert result.model.source == "module" and result.model.cls == "Sequential"
    assert result.norms[0].weight is None
    h = model[0](x)
    _, mean, rstd = torch.native_layer_norm(h, (16,), None, None, 1e-3)
    assert rel_err(result.norms[0].input.std, 1 / rstd.squeeze(-1)) < RTOL
    assert result.norms[0].output.std == pytest.approx(
        h.var(-1, correction=0).div(h.var(-1, correction=0) + 1e-3).sqrt().detach().numpy(),
        rel=1e-5,
    )


def test_bfloat16_model_statistics_in_float32():
    torch.manual_seed(0)
    ln = nn.LayerNorm(64).to(torch.bfloat16)
    x = (torch.randn(2, 7, 64) * 30 + 5).to(torch.bfloat16)
    with capture(ln) as cap:
        ln(x)
    norm = cap.result().norms[0]
    assert norm.input.std.dtype == np.float32
    _, mean, rstd = torch.native_layer_norm(x.float(), (64,), None, None, ln.eps)
    assert rel_err(norm.input.mean, mean.squeeze(-1)) < RTOL
    assert rel_err(norm.input.std, 1 / rstd.squeeze(-1)) < RTOL


def test_hooks_removed_and_mode_restored_after_error(tiny_model):
    tiny_model.train()
    with pytest.raises(ValueError), capture(tiny_model):
        assert not tiny_model.training
        raise ValueError("boom")
    assert tiny_model.training
    for module in tiny_model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


def test_hooks_keep_no_activation(tiny_model):
    ids = torch.randint(0, 300, (2, 13))
    with capture(tiny_model, grads=True) as cap:
        tiny_model(ids, labels=ids).loss.backward()
    for records in (*cap._hooks.forward.values(), *cap._hooks.backward.values()):
        for record in records:
            for tensor in record.values():
                assert tensor.shape == (2, 13)  # one number per token, never the hidden axis


def test_module_that_fires_twice_is_reported():
    ln = nn.LayerNorm(8)
    model = nn.Sequential(ln, nn.Linear(8, 8), ln)
    with capture(model) as cap:
        model(torch.randn(1, 3, 8))
    result = cap.result()
    assert result.passes == 1
    assert [n.calls for n in result.norms] == [2]
    assert result.norms[0].input.mean.shape == (2, 3)


def test_rmsnorm_and_multi_axis_layernorm():
    torch.manual_seed(0)
    rms = nn.RMSNorm(12, eps=1e-6)
    x = torch.randn(3, 4, 12) * 4 + 1
    stats = token_stats(x, rms(x), eps=1e-6)
    assert rel_err(stats["rms"].numpy(), (x.double().square().mean(-1) + 1e-6).sqrt()) < RTOL
    ln = nn.LayerNorm((4, 12))
    info = find_norms(nn.Sequential(ln))[0]
    assert info.reduced_dims == 2
    with capture(ln) as cap:
        ln(x)
    _, mean, rstd = torch.native_layer_norm(x, (4, 12), ln.weight, ln.bias, ln.eps)
    assert rel_err(cap.result().norms[0].input.std, 1 / rstd.reshape(3)) < RTOL


def test_result_without_a_forward_pass_is_a_clear_error(tiny_model):
    from lninspect.errors import EXIT_RUNTIME, LninspectError

    with capture(tiny_model) as cap:
        pass
    with pytest.raises(LninspectError, match="no normalization module ran") as raised:
        cap.result()
    assert raised.value.exit_code == EXIT_RUNTIME
