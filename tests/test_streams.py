"""What each norm reads decides every view: tiny Gemma 3 (sandwich norms and q/k norms with
tokens on axis 2), OLMo 2 (post norms only) and the reference GPT in post-LN, each checked
against what its architecture says and against full tensors kept by the test's own hooks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from lninspect import capture
from lninspect.derived import largest_abs, residual_growth
from lninspect.norms.discovery import find_norms
from lninspect.placement.refgpt import GPT, RefGPTConfig
from lninspect.render.format import place_label
from lninspect.render.interactive import page_data
from lninspect.render.report import findings
from lninspect.render.stats_plots import plot_depth
from lninspect.results import GradsResult
from lninspect.streams import heatmap_panels, token_row

LAYERS, T = 3, 7


def gemma3() -> torch.nn.Module:
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=32,
    )
    return Gemma3ForCausalLM(config).eval()


def run(model: torch.nn.Module) -> tuple[GradsResult, dict[str, torch.Tensor]]:
    """A capture of one pass, and every norm's input as the module saw it."""
    norms = find_norms(model)
    seen: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    handles = [
        modules[n.name].register_forward_pre_hook(
            lambda _, args, name=n.name: seen.setdefault(name, args[0].detach().clone())
        )
        for n in norms
    ]
    ids = torch.arange(T).unsqueeze(0) % 64
    try:
        with torch.no_grad(), capture(model, norms) as cap:
            model(ids)
    finally:
        for h in handles:
            h.remove()
    result = cap.result()
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(result) if f.init}
    return GradsResult(**fields), seen


@pytest.fixture(scope="module")
def sandwich() -> tuple[GradsResult, dict[str, torch.Tensor]]:
    return run(gemma3())


def test_each_gemma_norm_reads_what_its_block_says(sandwich):
    result, _ = sandwich
    reads = {n.name.rsplit(".", 1)[-1]: n.reads for n in result.norms}
    assert reads == {
        "q_norm": "projection",
        "k_norm": "projection",
        "input_layernorm": "residual",
        "post_attention_layernorm": "sublayer",
        "pre_feedforward_layernorm": "residual",
        "post_feedforward_layernorm": "sublayer",
        "norm": "residual",
    }


def test_growth_reads_the_residual_stream(sandwich):
    result, _ = sandwich
    growth = residual_growth(result)
    assert growth is not None
    first, low, last, _ = growth
    assert (first.name, last.name) == (
        "model.layers.0.input_layernorm",
        f"model.layers.{LAYERS - 1}.input_layernorm",
    )
    assert findings(result)[3][1].startswith("median input rms")  # an RMSNorm model: rms


def test_a_head_is_never_a_token(sandwich):
    """Gemma 3's q_norm sees (batch, heads, tokens, head_dim): its largest |x| is placed at
    the right token and head, its heatmap row and the interactive page have T tokens."""
    result, seen = sandwich
    q = result.norm("model.layers.0.self_attn.q_norm")
    x = seen[q.name][0].abs().amax(-1)  # (heads, tokens)
    head, token = np.unravel_index(int(x.argmax()), tuple(x.shape))
    at = largest_abs(q).at
    assert at is not None and (at.token, at.head) == (token, head)
    assert place_label(result, at, 3).startswith(f"t{token}") and f" h{head} d3" in place_label(
        result, at, 3
    )
    assert token_row(q, q.denominator).shape == (T,)
    page = page_data(result)
    assert len(page["tokens"]) == T
    assert all(len(row) == T for row in page["maps"]["denominator"]["values"])


def test_heatmap_panels_hold_one_kind_each(sandwich):
    result, _ = sandwich
    panels = heatmap_panels(result)
    assert sum(len(p.norms) for p in panels) == len(result.norms)
    assert [p.title for p in panels] == [
        "input_layernorm (before attention)",
        "post_attention_layernorm (on attention's output)",
        "pre_feedforward_layernorm (before the MLP)",
        "post_feedforward_layernorm (on the MLP's output)",
        "q_norm (query / key norms)",
        "k_norm (query / key norms)",
        "outside the blocks",
    ]
    figure = plot_depth(result)  # the stream, the sub-layer outputs, the q/k norms
    assert len([ax for ax in figure.axes if ax.lines]) == 3


def test_olmo2_has_no_residual_norm_inside_its_blocks():
    from transformers import Olmo2Config, Olmo2ForCausalLM

    torch.manual_seed(0)
    config = Olmo2Config(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
    )
    result, _ = run(Olmo2ForCausalLM(config).eval())
    assert {n.reads for n in result.norms if n.layer is not None} == {"sublayer", "projection"}
    assert residual_growth(result) is None
    assert dict(findings(result))["residual-stream growth"] == (
        "no norm inside the blocks reads the residual stream"
    )


def test_post_ln_norms_read_the_stream():
    """The reference GPT in post-LN: x = LN(x + f(x)) reads the sum, the residual stream."""
    model = GPT(
        RefGPTConfig(vocab_size=64, context=16, layers=3, d_model=32, heads=2, layout="post")
    )
    model.config = type("Config", (), {"vocab_size": 64})()  # lets the probe run
    result, _ = run(model)
    assert {n.reads for n in result.norms} == {"residual"}
    growth = residual_growth(result)
    assert growth is not None and growth[0].placement == "post"
    assert findings(result)[3][1].endswith("after attention (post-LN)")
