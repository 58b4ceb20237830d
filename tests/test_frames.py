"""Results and corpus aggregates as pandas DataFrames in long format, checked against the
result's own arrays; padding left out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lninspect import capture
from lninspect.cli import app
from lninspect.results import StatsResult
from lninspect.results.aggregate import AggregateResult
from lninspect.statistics import STATISTICS
from tests.conftest import tiny_gpt2

pytest.importorskip("pandas")
TEXT = "The quick brown fox jumps over the lazy dog."


def _json(*args: str) -> dict:
    result = CliRunner().invoke(app, [*args, "--json", "-", "-q"], env={"HF_HUB_OFFLINE": "1"})
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_stats_frame_is_long_and_exact(tiny_model_dir: Path):
    result = StatsResult.from_json(_json("stats", str(tiny_model_dir), "--text", TEXT))
    frame = result.to_dataframe()
    assert list(frame.columns) == [
        "module", "layer", "role", "sequence", "token", "token_text", "statistic", "value"
    ]  # fmt: skip
    keys = {s.key for s in STATISTICS if s.side != "grad"}  # nonfinite: when recorded
    assert set(frame.statistic) in (keys, keys - {"nonfinite"})
    tokens = result.input.num_tokens
    assert len(frame) == len(result.norms) * frame.statistic.nunique() * tokens
    norm = result.norms[1]
    row = frame[(frame.module == norm.name) & (frame.token == 3) & (frame.statistic == "std")]
    assert row.value.item() == pytest.approx(float(norm.input.std[0, 3]), rel=1e-6)
    assert row.token_text.item() == result.input.tokens[0][3]
    assert set(frame.layer) == {0, 1, -1} and set(frame.role) == {"attn", "mlp", "final"}


def test_padding_is_not_in_the_frame():
    model = tiny_gpt2()
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    with capture(model) as cap:
        model(ids, attention_mask=mask)
    frame = cap.result().to_dataframe()
    std = frame[(frame.statistic == "std") & (frame.module == "transformer.ln_f")]
    pairs = sorted(zip(std.sequence, std.token, strict=True))
    assert pairs == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]
    assert np.isfinite(frame.value).all()


def test_aggregate_frame(tiny_model_dir: Path, tmp_path: Path):
    for i in range(2):
        (tmp_path / f"{i}.txt").write_text(TEXT * 2)
    doc = _json("stats", str(tiny_model_dir), "--file", str(tmp_path / "*.txt"), "--seq-len", "8")
    result = AggregateResult.from_json(doc)
    frame = result.to_dataframe()
    assert list(frame.columns) == [
        "module", "layer", "role", "position", "statistic", "moment", "value"
    ]  # fmt: skip
    norm = result.norms[0]
    moments = norm.positions["std"]
    got = frame[(frame.module == norm.name) & (frame.statistic == "std")]
    means = got[got.moment == "mean"].sort_values("position").value.to_numpy()
    np.testing.assert_allclose(means, moments.mean[moments.count > 0])


def test_public_loader_to_frame():
    import lninspect

    assert "load_model" in lninspect.__all__
    loaded = lninspect.load_model("tiny", device="cpu")
    ids = torch.tensor([loaded.tokenizer.encode("The quick brown fox")])
    with lninspect.capture(loaded.model) as cap:
        loaded.model(ids)
    frame = cap.result().to_dataframe()
    assert frame.sequence.nunique() == 1 and frame.token.nunique() == ids.shape[1]
