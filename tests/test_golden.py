"""Golden JSON files of every schema, on small fixed inputs: the layout may move, the output not.

Each case runs one CLI command on the bundled `tiny` model (weights from its files, so no
random state is involved) or on the seeded placement experiment, and compares the JSON with
tests/golden/NAME.json: keys, strings, integers (counts, indices, ranks) exactly; floats to
a tolerance that follows from the arithmetic, not from one machine's rounding.

Every float here is float32 arithmetic of `tiny` (12 blocks, reductions of length <= 3072)
or of the placement experiment, summed in an order that depends on the CPU's vector width,
the BLAS kernel and the thread count. With unit roundoff u = 2^-24 = 6e-8, a reduction of
length n typically errs by sqrt(n) u (3e-6 at n = 3072), and 24 sub-layers add that up to
about 8e-5. So a float may differ by RELATIVE = 1e-4 of its scale: the largest |value| among
its float siblings (the list or object that holds it). Scaling by the siblings, not by the
value, is what keeps a mean near 0 or an interval's bound after a subtraction (mean - t s)
from failing on cancellation. Measured: with `ATEN_CPU_CAPABILITY=default` (scalar kernels
instead of AVX-512) and one thread, the worst case of all documents is 6e-6 of its scale.

The placement model's ReLU is the exception: its gradient mask is a step function of its
input, so a pre-activation within rounding of 0 flips under another CPU's kernels and moves
a gradient norm by percents (seen: -1.3e-8 under AVX2, +4.7e-8 under AVX-512, 1.5 % on an
interval bound). The placement cases are sized so that every ReLU input that carries a
gradient is at least RELU_MARGIN of its call's largest |input| away from 0, checked on each run.

`LNINSPECT_UPDATE_GOLDEN=1 pytest tests/test_golden.py` rewrites the files, keeping every
float that is within the tolerance of the old one (no churn of unchanged numbers); do that
only for a deliberate change of output, and say so in docs/statistics.md when a schema changes.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from lninspect.cli import app

GOLDEN = Path(__file__).parent / "golden"
TEXT = "Layer normalization keeps every token at a steady scale. The end."
CORPUS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "A language model predicts the next token from the ones before it. " * 2,
]
CASES = {
    "stats": ["stats", "tiny", "--text", TEXT, "--spikes"],
    "grads": ["grads", "tiny", "--text", TEXT],
    "norms": ["norms", "tiny"],
    "compare": ["compare", "tiny", "tiny", "--text", TEXT],
    "corpus": [
        "stats",
        "tiny",
        "--file",
        "{a}",
        "--file",
        "{b}",
        "--seq-len",
        "16",
        "--batch-size",
        "2",
        "--spikes",
    ],
    "placement": [
        "placement",
        "--layers",
        "2,3",
        "--d-model",
        "16",
        "--heads",
        "2",
        "--seeds",
        "2",
        "--seq-len",
        "16",
        "--batch",
        "2",
    ],
    "placement-train": [
        "placement",
        "--train",
        "--layers",
        "2",
        "--d-model",
        "16",
        "--heads",
        "2",
        "--seeds",
        "2",
        "--seq-len",
        "16",
        "--batch",
        "1",
        "--steps",
        "4",
        "--warmup",
        "2",
        "--lr",
        "1e-3",
        "--eval-every",
        "2",
        "--stats-every",
        "2",
    ],
}


RELATIVE = 1e-4  # of a float's scale: the derivation is in the module docstring
RELU_MARGIN = 1e-5  # 50x the relative disagreement of the placement model's forward passes


def _scale(container: Any) -> float:
    """The largest finite |float| among the floats of a list or an object's values."""
    values = container.values() if isinstance(container, dict) else container
    floats = [abs(v) for v in values if isinstance(v, float) and math.isfinite(v)]
    return max(floats, default=0.0)


def _float_matches(got: Any, want: float, scale: float) -> bool:
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        return False
    if not (math.isfinite(want) and math.isfinite(got)):  # NaN == NaN, inf == inf
        return (math.isnan(want) and math.isnan(got)) or got == want
    return abs(got - want) <= RELATIVE * max(scale, abs(want))


def _close(got: Any, want: Any, where: str = "$", scale: float = 0.0) -> None:
    """Assert `got` equals `want`: same structure and keys, floats within the tolerance."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), f"{where}: keys differ"
        for key in want:
            _close(got[key], want[key], f"{where}.{key}", _scale(want))
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: length differs"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _close(g, w, f"{where}[{i}]", _scale(want))
    elif isinstance(want, float):
        assert _float_matches(got, want, scale), f"{where}: {got!r} != {want!r} (scale {scale})"
    else:  # keys, strings, integers, booleans, null: exactly, and of the same type
        assert got == want and type(got) is type(want), f"{where}: {got!r} != {want!r}"


def _kept(new: Any, old: Any, scale: float = 0.0) -> Any:
    """`new`, with each float that matches the old document's replaced by the old value."""
    if isinstance(new, dict) and isinstance(old, dict):
        return {k: _kept(v, old[k], _scale(old)) if k in old else v for k, v in new.items()}
    if isinstance(new, list) and isinstance(old, list) and len(new) == len(old):
        return [_kept(n, o, _scale(old)) for n, o in zip(new, old, strict=True)]
    if isinstance(old, float) and _float_matches(new, old, scale):
        return old
    return new


class ReluMargin:
    """F.relu, recording the smallest |input| / largest |input| of the calls that carry a
    gradient: how far the closest pre-activation is from flipping its gradient mask."""

    def __init__(self) -> None:
        self.smallest = math.inf
        self.relu = torch.nn.functional.relu

    def __call__(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        if x.requires_grad:
            size = x.detach().abs()
            self.smallest = min(self.smallest, float(size.min() / size.max()))
        return self.relu(x, inplace=inplace)


@pytest.mark.parametrize("name", list(CASES))
def test_json_matches_the_golden_file(name: str, tmp_path: Path, monkeypatch):
    relu = ReluMargin()
    monkeypatch.setattr(torch.nn.functional, "relu", relu)
    files = {}
    for key, text in zip("ab", CORPUS, strict=True):
        files[key] = tmp_path / f"{key}.txt"
        files[key].write_text(text)
    args = [arg.format(**files) for arg in CASES[name]]
    out = tmp_path / "out.json"
    result = CliRunner().invoke(
        app, [*args, "--json", str(out)], env={"COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
    )
    assert result.exit_code == 0, result.output
    if name.startswith("placement"):
        assert relu.smallest >= RELU_MARGIN, (
            f"a ReLU input at {relu.smallest:.1e} of its call's largest |input| is within "
            "rounding of its kink: choose a case whose gradients other kernels cannot flip"
        )
    doc = json.loads(out.read_text())
    if name == "corpus":  # temporary paths differ from run to run
        doc["corpus"]["files"] = [Path(f).name for f in doc["corpus"]["files"]]
    golden = GOLDEN / f"{name}.json"
    if os.environ.get("LNINSPECT_UPDATE_GOLDEN") == "1":
        old = json.loads(golden.read_text()) if golden.exists() else None
        golden.write_text(json.dumps(_kept(doc, old), ensure_ascii=False) + "\n")
    _close(doc, json.loads(golden.read_text()))


def test_the_tolerance_follows_the_scale_and_can_fail():
    _close({"mean": [1e-6, 2.0]}, {"mean": [1.5e-6, 2.0]})  # near 0, within 1e-4 of 2.0
    _close({"low": 0.0774137, "high": 0.6096}, {"low": 0.0774127, "high": 0.6096})
    for got, want in [([2.0003], [2.0]), ([1e-6], [2e-6]), ({"n": 3}, {"n": 4}), ([1.0], [1])]:
        with pytest.raises(AssertionError):
            _close(got, want)
    with pytest.raises(AssertionError):
        _close([float("nan")], [1.0])


def test_regenerating_keeps_the_floats_that_did_not_change():
    old = {"a": [1.0, 2.0], "b": 3.0, "c": "x"}
    new = {"a": [1.00001, 2.5], "b": 3.0000001, "c": "y", "d": 1.0}
    assert _kept(new, old) == {"a": [1.0, 2.5], "b": 3.0, "c": "y", "d": 1.0}
