"""Discovery open to any module: a user's ScaleNorm (scalar gain, eps 0) in a tiny GPT-2."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_gpt2
from torch import nn

from lninspect import capture
from lninspect.errors import LninspectError
from lninspect.jobs import norm_classes_of
from lninspect.norms.discovery import discover, find_norms


class ScaleNorm(nn.Module):
    """Nguyen & Salazar's ScaleNorm: g * x / ||x|| * sqrt(d), one scalar gain, no eps."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.d = d
        self.g = nn.Parameter(torch.tensor(1.3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.g * x / x.norm(dim=-1, keepdim=True) * math.sqrt(self.d)


class WeightScaleNorm(ScaleNorm):
    """The same with its 0-d gain named `weight` (crashed the weight summary once)."""

    def __init__(self, d: int) -> None:
        super().__init__(d)
        del self.g
        self.weight = nn.Parameter(torch.tensor(0.7))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x / x.norm(dim=-1, keepdim=True) * math.sqrt(self.d)


def scalenorm_gpt2(cls: type[ScaleNorm] = ScaleNorm) -> nn.Module:
    model = tiny_gpt2(n_layer=2, n_embd=32)
    for block in model.transformer.h:
        block.ln_1, block.ln_2 = cls(32), cls(32)
    return model


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return scalenorm_gpt2()


def test_found_with_include(model: nn.Module) -> None:
    found = discover(model, include=(ScaleNorm,))
    by_name = {n.name: n for n in found.norms}
    assert len(found.norms) == 5 and not found.notes
    ln_1 = by_name["transformer.h.0.ln_1"]
    assert (ln_1.kind, ln_1.eps, ln_1.eps_known, ln_1.gain) == ("rmsnorm", 0.0, True, "g")
    assert (ln_1.role, ln_1.placement, ln_1.reduced_dims) == ("attn", "pre", 1)
    assert by_name["transformer.h.1.ln_2"].role == "mlp"
    weight = ln_1.describe().weight
    assert weight is not None and weight.mean == pytest.approx(1.3) and weight.std == 0


def test_reported_without(model: nn.Module) -> None:
    found = discover(model)
    assert [n.name for n in found.norms] == ["transformer.ln_f"]
    assert found.notes == [
        "4 modules look like norms but were not hooked: transformer.h.0.ln_1, "
        "transformer.h.0.ln_2, transformer.h.1.ln_1, ...; pass include=(ScaleNorm,)"
    ]


def test_stats_match_float64(model: nn.Module) -> None:
    seen: dict[str, torch.Tensor] = {}
    target = model.transformer.h[1].ln_2
    handle = target.register_forward_hook(lambda m, a, y: seen.update(x=a[0], y=y))
    ids = torch.arange(10)[None] % 50
    try:
        with torch.no_grad(), capture(model, find_norms(model, include=(ScaleNorm,))) as cap:
            model(ids)
    finally:
        handle.remove()
    stats = cap.result().norm("transformer.h.1.ln_2")
    x, y = seen["x"].double(), seen["y"].double()
    rms = x.square().mean(-1).sqrt()  # eps 0
    tol = 1e-5  # float32 reductions of 32 entries, against float64
    np.testing.assert_allclose(stats.input.mean, x.mean(-1).numpy(), atol=tol * rms.max().item())
    np.testing.assert_allclose(stats.input.rms, rms.numpy(), rtol=tol)
    np.testing.assert_allclose(stats.input.std, x.std(-1, correction=0).numpy(), rtol=tol)
    np.testing.assert_allclose(stats.input.absmax, x.abs().amax(-1).numpy(), rtol=tol)
    np.testing.assert_allclose(stats.output.std, y.std(-1, correction=0).numpy(), rtol=tol)
    # y is x / rms times the scalar gain: the statistics agree with the formula measured
    np.testing.assert_allclose(stats.output.std, 1.3 * stats.input.std / stats.input.rms, rtol=tol)


def test_scalar_gain_named_weight_summarised() -> None:
    model = scalenorm_gpt2(WeightScaleNorm)
    norms = find_norms(model, include=(WeightScaleNorm,))
    with torch.no_grad(), capture(model, norms) as cap:
        model(torch.arange(4)[None])
    described = {n.name: n for n in cap.result().norms}["transformer.h.0.ln_1"]
    assert described.weight is not None and described.weight.mean == pytest.approx(0.7)


def test_norm_class_names_resolved_and_refused(model: nn.Module) -> None:
    assert norm_classes_of(model, ("ScaleNorm",)) == (ScaleNorm,)
    with pytest.raises(LninspectError, match="did you mean ScaleNorm") as caught:
        norm_classes_of(model, ("ScaleNrm",))
    assert caught.value.exit_code == 2


def test_formula_failure_is_a_note() -> None:
    class Odd(nn.Module):  # refuses the float32 probe: its forward needs a keyword
        normalized_shape = (8,)

        def forward(self, x: torch.Tensor, *, scale: float) -> torch.Tensor:
            return x * scale

    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = Odd()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.norm(x, scale=1.0)

    found = discover(Holder(), include=(Odd,))
    assert found.norms[0].eps_known is False
    (note,) = [n for n in found.notes if "formula not measured" in n]
    assert "raised TypeError" in note and note.endswith("eps 1e-05 assumed")
    width = discover(nn.Sequential(ScaleNorm(8)), include=(ScaleNorm,)).notes[-1]
    assert width == (
        "0: formula not measured (its width is unknown: no normalized_shape, vector gain or "
        "probe input); its kind is read from its class name, eps 1e-05 assumed"
    )


def test_the_recipe_in_the_architecture_doc_runs() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "architecture.md").read_text()
    section = doc.split("## Recipe: add a norm class", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    exec(compile(code.group(1), "architecture.md", "exec"), {"__name__": "recipe"})
