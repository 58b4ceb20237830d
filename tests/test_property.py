"""Property: whatever the text and options, `stats` ends in one clean line or a valid JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from lninspect import statistics
from lninspect.cli import app
from lninspect.results import StatsResult
from lninspect.results.one_text import STATS_SCHEMA

runner = CliRunner()
NORM_KEYS = {
    "name",
    "type",
    "kind",
    "layer",
    "role",
    "placement",
    "eps",
    "weight",
    "input",
    "output",
    "calls",
}
INPUT_KEYS = {s.field for s in statistics.FORWARD if s.side == "input"}

# Any Unicode but lone surrogates (they cannot be encoded), NUL and emoji included.
texts = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=60),
    st.sampled_from(["", " ", "\n\t", "\0", "a\0b", "👋🏽", "ab" * 200, "\u200b", "é" * 30]),
)


def bfloat16_attention_runs() -> bool:
    """Whether this torch runs bfloat16 attention on this CPU. Not under PyTorch's scalar
    kernels (ATEN_CPU_CAPABILITY=default, as `make test-other-cpu` sets) on a CPU with AMX:
    its flash attention then packs for AMX but finds no AVX-512 kernel ("pack_vnni2 is only
    supported when avx512 is supported", torch 2.13), a failure of torch, not of lninspect."""
    q = torch.zeros(1, 1, 64, 8, dtype=torch.bfloat16)
    try:
        torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
    except RuntimeError:
        return False
    return True


DTYPES = ["float32", "bfloat16"] if bfloat16_attention_runs() else ["float32"]
options = st.fixed_dictionaries(
    {
        "--max-tokens": st.none() | st.integers(1, 20),
        "--dtype": st.sampled_from(DTYPES),
        "--layers": st.none() | st.sampled_from(["0", "1", "0-1", "0,1"]),
        "--stride": st.none() | st.integers(1, 24),
        "--spikes": st.booleans(),
    }
)


def validate(doc: dict) -> None:
    """The documented keys, and per-token arrays of shape (sequences, tokens per sequence)."""
    assert doc["schema"] == STATS_SCHEMA
    assert set(doc) >= {"model", "input", "norms", "passes", "notes"}
    inp = doc["input"]
    ids = inp["token_ids"]
    shape = (inp["num_sequences"], len(ids[0]))
    assert len(ids) == inp["num_sequences"] and {len(i) for i in ids} == {shape[1]}
    assert inp["num_tokens"] == shape[0] * shape[1] and [len(t) for t in inp["tokens"]] == [
        len(i) for i in ids
    ]
    assert doc["norms"]
    for norm in doc["norms"]:
        assert set(norm) >= NORM_KEYS and set(norm["input"]) == INPUT_KEYS
        for values in (*norm["input"].values(), *norm["output"].values()):
            assert np.shape(values) == shape
    assert StatsResult.from_json(doc).to_json() == doc


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=texts, opts=options)
def test_stats_never_shows_a_traceback(tiny_model_dir: Path, text: str, opts: dict) -> None:
    args = ["stats", str(tiny_model_dir), f"--text={text}", "--json", "-"]
    for name, value in opts.items():
        if value is True:
            args.append(name)
        elif value not in (None, False):
            args += [name, str(value)]
    result = runner.invoke(app, args, env={"COLUMNS": "200", "HF_HUB_OFFLINE": "1"})
    assert "Traceback" not in result.output
    assert result.exit_code in (0, 2), result.output
    event(f"exit {result.exit_code}")  # shown by --hypothesis-show-statistics
    if result.exit_code == 2:
        assert result.stderr.strip().splitlines()[-1].startswith("error: ")
        return
    validate(json.loads(result.stdout))
