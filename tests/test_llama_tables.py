"""A Llama-style model's tables (its real module names, 13 layers) at 80 and 120 columns:
names by the one abbreviation rule, on one line each; the full names in JSON and --wide."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lninspect.cli import app
from lninspect.render.format import short_names
from tests.conftest import build_tokenizer

runner = CliRunner()
TEXT = "The quick brown fox jumps over the lazy dog."
LAYERS = 13  # so that two-digit layers (`12.post_attn`) are shown


def tiny_llama(vocab_size: int, layers: int = LAYERS):
    """A randomly initialised LlamaForCausalLM with its real module names."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        num_hidden_layers=layers,
        hidden_size=16,
        intermediate_size=32,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=vocab_size,
        max_position_embeddings=64,
        bos_token_id=0,
        eos_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = build_tokenizer()
    tiny_llama(len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def shown(width: int, *args: str) -> list[str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": str(width), "HF_HUB_OFFLINE": "1"})
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def test_one_rule_for_every_family():
    llama = [f"model.layers.12.{n}" for n in ("input_layernorm", "post_attention_layernorm")]
    assert short_names([*llama, "model.norm"]) == ["12.in", "12.post_attn", "final"]
    gpt2 = ["transformer.h.0.ln_1", "transformer.h.0.ln_2", "transformer.ln_f"]
    assert short_names(gpt2) == ["0.ln_1", "0.ln_2", "final"]
    gemma = [f"model.layers.3.{n}_feedforward_layernorm" for n in ("pre", "post")]
    assert short_names(gemma) == ["3.pre_ffn", "3.post_ffn"]
    opt = ["model.decoder.layers.0.final_layer_norm", "model.decoder.final_layer_norm"]
    assert short_names(opt) == ["0.final_layer_norm", "final"]
    assert short_names(["model.layers.1.self_attn.q_norm"]) == ["1.attn.q_norm"]
    peri = ["blocks.0.ln_1", "blocks.0.ln_1_post", "ln_f"]  # placement's peri-LN
    assert short_names(peri) == ["0.ln_1", "0.ln_1_post", "final"]  # not `0.1_post`
    clash = ["a.ln_f", "b.ln_f"]  # the rule would make them equal: only the prefix goes
    assert short_names(clash) == clash


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("command", ["stats", "spikes", "norms", "grads"])
def test_llama_tables_fit_without_wrapping_names(llama_dir: Path, command: str, width: int):
    model = str(llama_dir)
    args = {
        "stats": ["stats", model, "--text", TEXT],
        "spikes": ["stats", model, "--text", TEXT, "--spikes"],
        "norms": ["norms", model],
        "grads": ["grads", model, "--text", TEXT],
    }[command]
    lines = shown(width, *args)
    assert all(len(line) <= width for line in lines), max(lines, key=len)
    assert all(line == line.rstrip() for line in lines)
    words = {w for line in lines for w in line.split()}
    assert {"12.post_attn", "final"} <= words or {"post_attn", "final"} <= words, lines
    assert not any("layernorm" in line or "ttention_" in line for line in lines)  # no pieces
    if command in ("stats", "norms"):
        rows = [line for line in lines if line.split()[:1] in (["12.in"], ["in"])]
        assert len(rows) == 1, lines


def test_full_names_in_json_and_wide(llama_dir: Path, tmp_path: Path):
    out = tmp_path / "s.json"
    shown(80, "stats", str(llama_dir), "--text", TEXT, "--json", str(out))
    names = [n["name"] for n in json.loads(out.read_text())["norms"]]
    assert "model.layers.12.post_attention_layernorm" in names and "model.norm" in names
    wide = shown(200, "stats", str(llama_dir), "--text", TEXT, "--wide")
    assert any(line.startswith("model.layers.12.post_attention_layernorm") for line in wide)


def test_stats_shows_the_output_side_and_rms(llama_dir: Path, tiny_model_dir: Path, tmp_path):
    import numpy as np

    from lninspect.render.format import fmt

    out = tmp_path / "s.json"
    lines = shown(120, "stats", str(llama_dir), "--text", TEXT, "--json", str(out))
    head = next(line for line in lines if line.startswith("module")).split("  ")
    head = [c.strip() for c in head if c.strip()]
    assert "rms med" in head and "std med" not in head  # an RMSNorm divides by the rms
    assert head[-2:] == ["out mean", "out std"]
    final = json.loads(out.read_text())["norms"][-1]
    row = next(line for line in lines if line.startswith("final")).split()
    want = [fmt(float(np.nanmedian(final["output"][k]))) for k in ("mean", "std")]
    assert row[-2:] == want
    gpt2 = shown(120, "stats", str(tiny_model_dir), "--text", TEXT)
    assert any(line.startswith("module") and "std med" in line for line in gpt2)
