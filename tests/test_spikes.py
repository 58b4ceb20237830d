"""Spike and order metrics on planted cases where the answer is known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from lninspect import capture
from lninspect.cli import app
from lninspect.hooks.spikes import ranks, spearman
from lninspect.options import SpikeOptions
from lninspect.results import StatsResult

D = 64


DEFAULT_SPIKES = SpikeOptions()


def run(norm: nn.Module, x: torch.Tensor, options: SpikeOptions = DEFAULT_SPIKES):
    with torch.no_grad(), capture(norm, spikes=options) as cap:
        norm(x)
    return cap.result().norms[0]


def planted(token: int = 3, dim: int = 17, value: float = 40.0) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(1, 10, D)
    x[0, token, dim] = value
    return x


def test_ranks_and_spearman_against_numpy():
    torch.manual_seed(1)
    a, b = torch.randn(5, 30), torch.randn(5, 30)
    want_ranks = np.argsort(np.argsort(a.numpy(), axis=-1), axis=-1)
    np.testing.assert_array_equal(ranks(a).numpy(), want_ranks)
    ra, rb = want_ranks.astype(float), np.argsort(np.argsort(b.numpy(), -1), -1).astype(float)
    want = [np.corrcoef(ra[i], rb[i])[0, 1] for i in range(5)]  # Pearson of ranks
    np.testing.assert_allclose(spearman(a, b).numpy(), want, rtol=1e-12)


def test_planted_spike_is_found_and_unit_weight_keeps_order_exactly():
    ln = nn.LayerNorm(D)  # weight 1, bias 0
    norm = run(ln, planted())
    top = norm.spikes[0]
    assert (top.sequence, top.token, top.dim) == (0, 3, 17)
    assert top.value == 40.0 and top.rank_in == 1 and top.rank_out == 1
    x = planted()[0, 3]
    assert top.z == pytest.approx(
        ((x[17] - x.mean()) / (x.var(correction=0) + ln.eps).sqrt()).item(), rel=1e-6
    )
    assert top.out_value == pytest.approx(top.z, rel=1e-6)
    assert not top.massive
    assert np.all(norm.order.within_token_spearman == 1.0)
    assert np.all(norm.order.within_token_spearman_z == 1.0)
    assert np.all(norm.order.topk_retention == 1.0)
    assert norm.order.spike_count[0, 3] == 1 and norm.order.spike_count.sum() == 1
    assert [a.dim for a in norm.across_token_spearman] == [17]


def test_negative_weight_on_the_spike_dimension_changes_the_order():
    ln = nn.LayerNorm(D)
    with torch.no_grad():
        ln.weight[17] = -1.0
    norm = run(ln, planted())
    top = norm.spikes[0]
    assert top.out_value < 0 < top.value
    assert top.rank_out == 1  # still the largest in magnitude
    assert norm.order.within_token_spearman[0, 3] < 0.95  # but the order of values changed
    assert norm.order.within_token_spearman_z[0, 3] == 1.0  # the normalization alone kept it


def test_small_weight_demotes_the_spike():
    ln = nn.LayerNorm(D)
    with torch.no_grad():
        ln.weight[17] = 0.01
    norm = run(ln, planted())
    top = norm.spikes[0]
    assert top.rank_in == 1 and top.rank_out > 8
    assert norm.order.topk_retention[0, 3] == pytest.approx(7 / 8)


def test_across_token_order_flips_for_a_token_with_a_huge_std():
    torch.manual_seed(2)
    x = torch.randn(1, 10, D) * 0.01
    x[0, :, 2] = -50.0  # the same large value in every token: the stds are alike
    x[0, :, 0] = 10.0 + torch.arange(10.0)  # dim 0 grows with the token index
    x[0, 9, 1] = 1000.0  # token 9 also has a massive activation: its std is huge
    norm = run(nn.LayerNorm(D), x, SpikeOptions(z=2.0))
    rho = {a.dim: a.rho for a in norm.across_token_spearman}
    # Token 9 goes from the largest x[:, 0] to the smallest y[:, 0]: sum d^2 = 81 + 9 * 1.
    assert rho[0] == pytest.approx(1 - 6 * 90 / (10 * 99), rel=1e-7)  # stored as float32
    massive = [s for s in norm.spikes if s.massive]
    assert [(s.token, s.dim) for s in massive] == [(9, 1)]


def test_rmsnorm_centres_at_zero():
    torch.manual_seed(3)
    rms = nn.RMSNorm(D, eps=1e-6)
    x = torch.randn(1, 6, D) + 3.0  # a large mean: centring would matter
    x[0, 2, 5] = 30.0
    norm = run(rms, x)
    top = norm.spikes[0]
    row = x[0, 2]
    assert (top.token, top.dim) == (2, 5)
    assert top.z == pytest.approx((row[5] / (row.square().mean() + 1e-6).sqrt()).item(), rel=1e-6)


def test_stats_spikes_through_the_cli(tiny_model_dir: Path, tmp_path: Path):
    path = tmp_path / "spikes.json"
    result = CliRunner().invoke(
        app,
        [
            "stats",
            str(tiny_model_dir),
            "--text",
            "A fox. " * 8,
            "--spikes",
            "--spike-z",
            "2.5",
            "--json",
            str(path),
        ],
        env={"COLUMNS": "200", "HF_HUB_OFFLINE": "1"},
    )
    assert result.exit_code == 0, result.output
    assert "largest spikes" in result.stdout and "order kept" in result.stdout
    doc = json.loads(path.read_text())
    assert doc["spike_z"] == 2.5 and doc["top_k"] == 8
    n = doc["input"]["num_tokens"]
    for entry in doc["norms"]:
        assert set(entry["order"]) >= {"within_token_spearman", "topk_retention"}
        assert np.shape(entry["order"]["within_token_spearman"]) == (1, n)
        for spike in entry["spikes"]:
            assert set(spike) == {
                "sequence",
                "token",
                "dim",
                "value",
                "z",
                "out_value",
                "rank_in",
                "rank_out",
                "massive",
            }
            assert abs(spike["z"]) >= 2.5 or spike["massive"]
        assert all(set(a) == {"dim", "rho", "tokens"} for a in entry["across_token_spearman"])
    assert any(entry["spikes"] for entry in doc["norms"])
    assert StatsResult.from_json(doc).to_json() == doc
