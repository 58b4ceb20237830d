"""The fused per-token reductions (lninspect.hooks.fused) against the eager ones and float64.

The formulas are checked without compiling (cheap); one test compiles them on the CPU, as
inductor does on a GPU, for forward and backward and two token counts (one compile each:
the token axis is dynamic). Where CUDA is present the same comparison runs there.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters
from torch._inductor import cpu_vec_isa
from torch.fx.experimental import _config as _shape_config

from lninspect import capture
from lninspect.hooks import fused
from lninspect.hooks.fused import Reductions, as_record, fused_grad, stacked_stats
from lninspect.hooks.reduce import token_nonfinite, token_norm, token_stats
from lninspect.statistics import FORWARD, on_side

STAT_KEYS = [s.key for s in FORWARD]
# torch 2.13's inductor writes at::vec code that does not build without a vector ISA (a
# CPU without AVX2, or ATEN_CPU_CAPABILITY=default): lninspect then runs eagerly (tested
# below with a failing compiler), and the tests that need a compile skip.
compiles_on_this_cpu = pytest.mark.skipif(
    not cpu_vec_isa.pick_vec_isa(), reason="inductor has no vector ISA on this CPU"
)

RTOL = 1e-5


def close(got: np.ndarray, want: np.ndarray, rtol: float = RTOL) -> bool:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30)) < rtol


def reference(x: torch.Tensor, y: torch.Tensor, eps: float) -> dict[str, np.ndarray]:
    """Every forward statistic in float64, from its definition (a new one adds its line)."""
    x64, y64 = x.double(), y.double()
    mean, var = x64.mean(-1), x64.var(-1, correction=0)
    return {
        "mean": mean.numpy(),
        "std": (var + eps).sqrt().numpy(),
        "rms": (x64.square().mean(-1) + eps).sqrt().numpy(),
        "absmax": x64.abs().amax(-1).numpy(),
        "absmax_dim": x64.abs().argmax(-1).numpy(),
        "out_mean": y64.mean(-1).numpy(),
        "out_std": y64.std(-1, correction=0).numpy(),
        "nonfinite": (~torch.isfinite(x)).sum(-1).numpy(),
        "kurtosis": kurtosis(x64),
        "out_kurtosis": kurtosis(y64),
    }


def kurtosis(t: torch.Tensor) -> np.ndarray:
    """Excess kurtosis in float64: the fourth central moment over the squared variance - 3."""
    deviation = t - t.mean(-1, keepdim=True)
    return ((deviation**4).mean(-1) / deviation.square().mean(-1).square() - 3).numpy()


def test_fused_formulas_equal_float64_and_the_eager_reductions():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(37, 96, generator=generator) * 3 + 1.5
    x[4, 17] = 250.0  # a spike: absmax and its dimension
    y = torch.randn(37, 96, generator=generator)
    want = reference(x, y, 1e-5)
    assert sorted(want) == sorted(STAT_KEYS)
    fused_values = as_record(stacked_stats(x, y, 1e-5))
    eager = token_stats(x, y, 1e-5)
    for key in STAT_KEYS:
        assert close(fused_values[key], want[key]), key
        assert close(eager[key], want[key]), key
    norm, nonfinite = fused_grad(x)
    assert close(norm, x.double().norm(dim=-1).numpy())
    assert torch.equal(nonfinite, token_nonfinite(x))


def peak_on_a_pad() -> tuple[torch.Tensor, torch.Tensor]:
    """x (2, 9, 32) whose largest |x| sits on a pad token and the next on a real one (token
    3, dimension 30), and the mask of real tokens (bool, (2, 9))."""
    x = torch.randn(2, 9, 32, generator=torch.Generator().manual_seed(1))
    x[1, 8, 5], x[0, 3, 30] = 90.0, -40.0
    real = torch.ones(2, 9, dtype=torch.bool)
    real[1, 8] = False
    return x, real


def test_the_lean_fused_record_is_the_lean_eager_one():
    """Without counts and per-token dimensions (a watch log's capture), the stacked outputs
    hold the rest, and the peak's dimension skips the pad tokens that `real` marks."""
    x, real = peak_on_a_pad()
    fused_values = as_record(stacked_stats(x, x, 1e-5, 1, False, False, real), counts=False)
    eager = token_stats(x, x, 1e-5, 1, False, False, real)
    assert sorted(fused_values) == sorted(eager) == sorted(set(STAT_KEYS) - {"nonfinite"})
    for key, value in eager.items():
        assert torch.equal(fused_values[key], value), key
    dims = fused_values["absmax_dim"]
    assert dims[0, 3] == 30 and int((dims >= 0).sum()) == 1


@compiles_on_this_cpu
def test_the_lean_pass_compiles_with_a_mask_of_real_tokens():
    x, real = peak_on_a_pad()
    got = Reductions("compiled", counts=False, token_dims=False).stats(x, x, 1e-5, 1, real)
    assert not fused._COMPILED.failed
    want = token_stats(x, x, 1e-5, 1, False, False, real)
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        assert close(got[key], value), key
    assert torch.equal(got["absmax_dim"], want["absmax_dim"])


def test_the_kurtosis_of_a_constant_token_is_nan():
    x = torch.stack([torch.full((8,), 3.0), torch.arange(8.0)])
    for record in (token_stats(x, x, 1e-5), as_record(stacked_stats(x, x, 1e-5))):
        constant, even = record["kurtosis"].tolist()
        assert np.isnan(constant)  # var = 0: 0 / 0
        assert even == pytest.approx(-6 * 65 / (5 * 63), rel=1e-5)  # 8 evenly spaced values


@pytest.mark.parametrize("width", [96, 768, 2048])
def test_a_constant_token_has_no_spread_although_its_float_mean_is_off(width: int):
    """0.1 or 123.456 summed `width` times rounds: the float mean is an ulp or more off the
    value, so the deviations are all equal and non-zero; the corrected variance is 0."""
    x = torch.tensor([0.1, 3.7, 123.456, -1e-3]).repeat_interleave(width).view(4, width)
    record = {key: value.numpy() for key, value in token_stats(x, x, 1e-5).items()}
    assert (record["mean"] != x[:, 0].numpy()).any()  # the case this test is about
    np.testing.assert_array_equal(record["out_std"], np.zeros(4))
    np.testing.assert_array_equal(record["std"], np.full(4, np.float32(1e-5) ** 0.5))
    assert np.isnan(record["kurtosis"]).all() and np.isnan(record["out_kurtosis"]).all()


def test_fused_counts_nonfinite_entries():
    x = torch.ones(3, 8)
    x[0, 1], x[0, 2], x[2, 7] = float("nan"), float("inf"), float("-inf")
    nonfinite = as_record(stacked_stats(x, x, 1e-5))["nonfinite"]
    assert nonfinite.tolist() == [2, 0, 1]
    assert fused_grad(x)[1].tolist() == [2, 0, 1]


def test_fused_reads_bfloat16_without_losing_the_float32_statistics():
    x = (torch.randn(20, 64) * 4).to(torch.bfloat16)
    want = reference(x.float(), x.float(), 1e-5)  # float32 statistics of the same bf16 values
    got = as_record(stacked_stats(x, x, 1e-5))
    for key in (s.key for s in FORWARD if s.dtype == "float32"):
        assert got[key].dtype == torch.float32
        assert close(got[key], want[key]), key


def compare_paths(model: torch.nn.Module, device: str, shapes: list[tuple[int, int]]) -> None:
    """capture() with compiled reductions equals eager capture, forward and backward, for
    passes of (sequences, tokens) in `shapes`."""
    model = model.to(device)
    results = {}
    for mode in ("eager", "compiled"):
        with capture(model, grads=True, reductions=mode) as cap:
            for sequences, tokens in shapes:
                ids = torch.arange(sequences * tokens, device=device).view(sequences, -1) % 300
                model(ids, labels=ids).loss.backward()
        results[mode] = cap.result()
    for eager, compiled in zip(results["eager"].norms, results["compiled"].norms, strict=True):
        for side in ("input", "output", "grad"):
            for key in (s.field for s in on_side(side)):
                value, other = (
                    getattr(getattr(eager, side), key),
                    getattr(getattr(compiled, side), key),
                )
                if value is None:
                    assert other is None
                elif value.dtype.kind in "iu":
                    np.testing.assert_array_equal(other, value, err_msg=f"{side}.{key}")
                else:
                    finite = np.isfinite(value)
                    assert np.array_equal(finite, np.isfinite(other))
                    assert close(other[finite], value[finite]), f"{eager.name} {side}.{key}"


@compiles_on_this_cpu
def test_compiled_capture_equals_eager_on_the_cpu(tiny_model):
    torch._dynamo.reset()
    counters.clear()
    compare_paths(tiny_model, "cpu", [(1, 7), (2, 12)])  # a batch of one, then of two
    assert not fused._COMPILED.failed
    if hasattr(_shape_config, "backed_size_oblivious"):  # one graph each for stats and grad
        assert counters["stats"]["unique_graphs"] == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_capture_equals_eager_on_cuda(tiny_model):
    compare_paths(tiny_model, "cuda", [(1, 7), (2, 12), (1, 64)])


def test_a_compiler_failure_falls_back_to_eager(monkeypatch, caplog):
    monkeypatch.setattr(fused, "_COMPILED", fused._Compiled())

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    x = torch.randn(2, 5, 16)
    with caplog.at_level(logging.DEBUG, logger="lninspect"):
        got = Reductions("compiled").stats(x, x, 1e-5, 1)
    assert fused._COMPILED.failed
    assert "using eager ones" in caplog.text and "no compiler here" in caplog.text
    want = token_stats(x, x, 1e-5)
    for key in STAT_KEYS:
        assert torch.equal(got[key], want[key])
    norm, count = Reductions("compiled").grad(x, 1, count=False)
    assert torch.equal(norm, token_norm(x)) and count is None


def test_auto_compiles_on_cuda_only():
    assert not Reductions("auto").compiled_on(torch.device("cpu"))
    assert Reductions("compiled").compiled_on(torch.device("cpu")) != fused._COMPILED.failed
    with pytest.raises(ValueError):
        Reductions("fast")
