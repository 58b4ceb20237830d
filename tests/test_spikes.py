"""Spikes and their order, on planted cases, against an independent float64 reference.

The worked examples of docs/metrics.md run through the CLI's JSON: a GPT-2 with a byte-level
vocabulary (no tokenizer is saved, so token ids are the text's bytes) whose position
embeddings are zero, so that the first norm's input for the letter "A" is exactly the row
planted in the embedding for it.
"""

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
from lninspect.hooks.order import average_ranks, spearman
from lninspect.hooks.spikes import spike_metrics
from lninspect.options import SpikeOptions
from lninspect.results import StatsResult
from lninspect.results.one_text import STATS_SCHEMA

D = 96
FIRST = "transformer.h.0.ln_1"
STAGES = {1: "centre", 2: "weight", 3: "bias"}


# An independent reference: float64, counting ranks by the definitions ------------------------


def reference(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-5, **rules) -> dict:
    """Spikes of a LayerNorm on x (tokens, d) of one sequence, by the definitions."""
    z_min, magnitude, ratio = rules.get("z", 6.0), rules.get("abs", 100.0), rules.get("ratio", 1e3)
    x = x.astype(np.float64)
    mean = x.mean(-1, keepdims=True)
    std = np.sqrt(x.var(-1, keepdims=True) + eps)
    z = (x - mean) / std
    y = z * w + b
    size = np.abs(x).ravel()
    median = np.sort(size)[(size.size - 1) // 2]  # the lower middle value, as torch.median
    massive = (np.abs(x) > magnitude) & (np.abs(x) > ratio * median)
    spikes = {}
    for t, j in zip(*np.nonzero(massive | (np.abs(z) >= z_min)), strict=True):
        stages = [np.abs(x[t]), np.abs(x[t] - mean[t]), np.abs(y[t] - b), np.abs(y[t])]
        ranks = [int((a > a[j]).sum()) + 1 for a in stages]
        first = next((i for i in (1, 2, 3) if ranks[i] != ranks[i - 1]), None)
        spikes[(int(t), int(j))] = {
            "value": x[t, j],
            "out_value": y[t, j],
            "z": z[t, j],
            "massive": bool(massive[t, j]),
            "ranks": ranks,
            "changed_by": STAGES[first] if ranks[3] != ranks[0] else None,
        }
    return spikes


# A model whose first norm sees planted rows ---------------------------------------------------


def planted_model(
    folder: Path, rows: dict[str, np.ndarray], weight: dict[int, float] | None = None
) -> Path:
    """A 2-layer GPT-2 (width 96, byte vocabulary) with the given embedding rows per letter;
    the first norm has weight 1 (or `weight` at some dims) and bias 0."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=D, n_head=4, n_positions=32, vocab_size=256)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        model.transformer.wpe.weight.zero_()
        for letter, row in rows.items():
            model.transformer.wte.weight[ord(letter)] = torch.tensor(row, dtype=torch.float32)
        ln = model.transformer.h[0].ln_1
        ln.weight.fill_(1.0)
        ln.bias.zero_()
        for dim, value in (weight or {}).items():
            ln.weight[dim] = value
    model.save_pretrained(folder)
    return folder


def stats_json(model: Path, text: str, tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "out.json"
    result = CliRunner().invoke(
        app,
        ["stats", str(model), "--text", text, "--spikes", *extra, "--json", str(out), "--force"],
        env={"COLUMNS": "80", "HF_HUB_OFFLINE": "1"},
    )
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def first_norm(doc: dict) -> dict:
    return next(n for n in doc["norms"] if n["name"] == FIRST)


def check_against_reference(norm: dict, want: dict) -> None:
    got = {(s["token"], s["dim"]): s for s in norm["spikes"]}
    assert set(got) == set(want)
    for key, spike in got.items():
        ref = want[key]
        assert spike["sequence"] == 0 and spike["head"] is None
        assert spike["value"] == pytest.approx(ref["value"], rel=1e-6)
        assert spike["out_value"] == pytest.approx(ref["out_value"], rel=1e-5)
        assert spike["z"] == pytest.approx(ref["z"], rel=1e-5)
        assert spike["massive"] is ref["massive"]
        ranks = [spike[k] for k in ("rank_in", "rank_centred", "rank_weighted", "rank_out")]
        assert ranks == ref["ranks"], key
        assert spike["changed_by"] == ref["changed_by"], key
    values = [abs(s["value"]) for s in norm["spikes"]]
    assert values == sorted(values, reverse=True)  # largest |x| first
    order = norm["order"]
    assert order["spikes"] == order["ranked"] == len(want)
    kept = sum(r["ranks"][0] == r["ranks"][3] for r in want.values())
    assert order["rank_kept"] == pytest.approx(kept / len(want))
    for stage in ("centre", "weight", "bias"):
        assert order["changed_by"][stage] == sum(r["changed_by"] == stage for r in want.values())


def bulk(value: float = 0.1) -> np.ndarray:
    return np.full(D, value, dtype=np.float32)


def test_centring_swaps_two_massive_activations(tmp_path: Path):
    """+200 and -199.9 on a bulk of 0.1: centring by the mean (~0.1) makes -199.9 larger."""
    row = bulk()
    row[3], row[7] = 200.0, -199.9
    doc = stats_json(planted_model(tmp_path / "m", {"A": row}), "A", tmp_path)
    norm = first_norm(doc)
    want = reference(row[None], np.ones(D), np.zeros(D))
    check_against_reference(norm, want)
    by_dim = {s["dim"]: s for s in norm["spikes"]}
    assert [by_dim[3][k] for k in ("rank_in", "rank_centred", "rank_out")] == [1, 2, 2]
    assert [by_dim[7][k] for k in ("rank_in", "rank_centred", "rank_out")] == [2, 1, 1]
    assert by_dim[3]["changed_by"] == by_dim[7]["changed_by"] == "centre"
    assert by_dim[3]["massive"] and by_dim[7]["massive"]
    assert norm["order"]["pairs"] == 1 and norm["order"]["pairs_kept"] == 0.0
    assert doc["schema"] == STATS_SCHEMA
    assert (doc["spike_abs"], doc["spike_ratio"], doc["spike_z"]) == (100.0, 1000.0, 6.0)


def test_a_small_gain_demotes_a_planted_spike(tmp_path: Path):
    rng = np.random.default_rng(0)
    row = rng.standard_normal(D).astype(np.float32)
    row[17] = 40.0
    model = planted_model(tmp_path / "m", {"A": row}, weight={17: 0.01})
    norm = first_norm(stats_json(model, "A", tmp_path))
    w = np.ones(D)
    w[17] = 0.01
    want = reference(row[None], w, np.zeros(D))
    check_against_reference(norm, want)
    spike = next(s for s in norm["spikes"] if s["dim"] == 17)
    assert spike["rank_in"] == spike["rank_centred"] == 1 and spike["rank_out"] > 50
    assert spike["changed_by"] == "weight" and not spike["massive"]
    assert norm["order"]["rank_kept"] == 0.0 and norm["order"]["changed_by"]["weight"] == 1


def test_the_massive_rule_uses_the_layer_median(tmp_path: Path):
    """5063 on a token whose own bulk is 10: massive against the layer's median |x| (0.1),
    though not against the token's own (10 x 1000 > 5063); 500 on a sequence whose bulk is
    1 everywhere is not massive (1000 x 1 > 500), only a z spike."""
    raised = bulk(10.0)
    raised[5] = 5063.0
    high = bulk(1.0)
    high[9] = 500.0
    rows = {"A": bulk(0.1), "B": raised, "C": bulk(1.0), "D": high}
    model = planted_model(tmp_path / "m", rows)
    norm = first_norm(stats_json(model, "AAAAB", tmp_path))
    x = np.stack([rows[c] for c in "AAAAB"])
    check_against_reference(norm, reference(x, np.ones(D), np.zeros(D)))
    assert [(s["token"], s["dim"], s["massive"]) for s in norm["spikes"]] == [(4, 5, True)]
    census = norm["census"][0]
    assert (census["dim"], census["count"], census["first_token_share"]) == (5, 1, 0.0)
    assert census["tokens"] == [{"token": "B", "count": 1, "id": 66}]  # the byte fallback's
    assert census["massive_tokens"] == census["tokens"] and census["outlier_tokens"] == []
    assert (census["massive"], census["massive_first_share"], census["max_at"]) == (1, 0.0, [0, 4])
    other = first_norm(stats_json(model, "CCCD", tmp_path))
    assert [(s["token"], s["dim"], s["massive"]) for s in other["spikes"]] == [(3, 9, False)]
    x = np.stack([rows[c] for c in "CCCD"])
    check_against_reference(other, reference(x, np.ones(D), np.zeros(D)))


def test_a_constant_token_gives_nan_not_a_number(tmp_path: Path):
    norm = first_norm(stats_json(planted_model(tmp_path / "m", {"A": bulk(0.5)}), "A", tmp_path))
    order = norm["order"]
    assert norm["spikes"] == [] and norm["across_token"] == [] and norm["census"] == []
    assert order["spikes"] == order["pairs"] == 0
    assert order["rank_kept"] is None and order["pairs_kept"] is None  # NaN is null
    assert order["topk_retention"] == [[None]]
    assert order["spike_count"] == [[0]]


def test_ablation_follows_sun_et_al(tmp_path: Path):
    """B carries 3000 at dim 5, C 1000: with the other texts "AC" and "CAC" (--ablate-file),
    B's entries are set to the mean over theirs (1000), then to 0, and the losses are those
    of the same inputs embedded with 1000 or 0 there (the head, tied to the embedding,
    unchanged). Each other text, ablated with the mean of the rest (1000 again), changes
    nothing: that is its spread."""
    rows = {"A": bulk(0.1), "B": bulk(0.1), "C": bulk(0.1)}
    rows["B"][5], rows["C"][5] = 3000.0, 1000.0
    model = planted_model(tmp_path / "m", rows)
    others = tmp_path / "others.txt"
    others.write_text("AC\n\nCAC\n")
    doc = stats_json(model, "ABAB", tmp_path, "--ablate-spikes", "--ablate-file", str(others))
    ablation = doc["ablation"]
    assert (ablation["layer"], ablation["dims"], ablation["module"]) == (0, [5], FIRST)
    assert (ablation["entries"], ablation["texts"], ablation["reference_entries"]) == (2, 2, 3)
    assert ablation["no_mean"] == [] and ablation["mean_is_value"] is False

    def loss(text: str, **planted: float) -> float:
        from transformers import GPT2LMHeadModel

        lm = GPT2LMHeadModel.from_pretrained(model).eval()
        ids = torch.tensor([[ord(c) for c in text]])
        embedded = np.stack([rows[c] for c in text]).copy()
        for letter, value in planted.items():
            embedded[[i for i, c in enumerate(text) if c == letter], 5] = value
        with torch.no_grad():
            return float(lm(inputs_embeds=torch.tensor(embedded)[None], labels=ids).loss)

    assert ablation["loss"] == pytest.approx(loss("ABAB"), rel=1e-5)
    assert ablation["loss_mean"] == pytest.approx(loss("ABAB", B=1000.0), rel=1e-5)
    assert ablation["loss_zero"] == pytest.approx(loss("ABAB", B=0.0), rel=1e-5)
    assert ablation["changes_mean"] == pytest.approx([0.0, 0.0], abs=1e-6)
    zero = [loss(t, C=0.0) - loss(t) for t in ("AC", "CAC")]
    assert ablation["changes_zero"] == pytest.approx(zero, rel=1e-4)


def test_ablation_of_chosen_dimensions_and_layers(tmp_path: Path):
    """B carries 3000 at dim 5 and 2000 at dim 7: --ablate-dims 7 zeroes dim 7's entry
    only (the loss is that of the input with 0 there), --ablate-layer picks another layer,
    and a choice with no massive activation says so and replaces nothing."""
    rows = {"A": bulk(0.1), "B": bulk(0.1)}
    rows["B"][5], rows["B"][7] = 3000.0, 2000.0
    model = planted_model(tmp_path / "m", rows)
    others = tmp_path / "others.txt"
    others.write_text("AB\n")
    ablate = ("--ablate-spikes", "--ablate-file", str(others))
    doc = stats_json(model, "ABAB", tmp_path, *ablate, "--ablate-dims", "7")
    ablation = doc["ablation"]
    assert (ablation["layer"], ablation["dims"], ablation["entries"]) == (0, [7], 2)
    assert ablation["chosen_dims"] == [7] and "chosen_layer" not in ablation

    def zeroed(text: str) -> float:
        from transformers import GPT2LMHeadModel

        lm = GPT2LMHeadModel.from_pretrained(model).eval()
        embedded = np.stack([rows[c] for c in text]).copy()
        embedded[[i for i, c in enumerate(text) if c == "B"], 7] = 0.0
        with torch.no_grad():
            ids = torch.tensor([[ord(c) for c in text]])
            return float(lm(inputs_embeds=torch.tensor(embedded)[None], labels=ids).loss)

    assert ablation["loss_zero"] == pytest.approx(zeroed("ABAB"), rel=1e-5)
    none = stats_json(model, "ABAB", tmp_path, *ablate, "--ablate-dims", "3,9-11")["ablation"]
    assert none["layer"] is None and none["entries"] == 0 and none["chosen_dims"] == [3, 9, 10, 11]
    later = stats_json(model, "ABAB", tmp_path, *ablate, "--ablate-layer", "1")["ablation"]
    assert (later["chosen_layer"], later["layer"], later["module"]) == (
        1,
        1,
        "transformer.h.1.ln_1",
    )


def test_ablation_choices_need_the_ablation(tmp_path: Path):
    from typer.testing import CliRunner

    from lninspect.cli import app

    ran = CliRunner().invoke(app, ["stats", "tiny", "--text", "a b", "--ablate-dims", "3"])
    assert ran.exit_code == 2 and "add --ablate-spikes" in ran.output


# The API on hand-built modules --------------------------------------------------------------


DEFAULT = SpikeOptions()


def run(norm: nn.Module, x: torch.Tensor, options: SpikeOptions = DEFAULT):
    with torch.no_grad(), capture(norm, spikes=options) as cap:
        norm(x)
    return cap.result().norms[0]


def test_average_ranks_and_spearman_against_numpy():
    torch.manual_seed(1)
    a, b = torch.randn(5, 30), torch.randn(5, 30)
    a[0, :10] = 0.5  # ties share their average rank
    ra = np.array([_numpy_average_ranks(row) for row in a.numpy()])
    rb = np.array([_numpy_average_ranks(row) for row in b.numpy()])
    np.testing.assert_array_equal(average_ranks(a).numpy(), ra)
    want = [np.corrcoef(ra[i], rb[i])[0, 1] for i in range(5)]  # Pearson of ranks
    np.testing.assert_allclose(spearman(a, b).numpy(), want, rtol=1e-12)
    assert torch.isnan(spearman(torch.ones(4), torch.arange(4.0)))  # constant: undefined


def _numpy_average_ranks(row: np.ndarray) -> np.ndarray:
    return np.array([(row < v).sum() + ((row == v).sum() + 1) / 2 for v in row])


def test_across_token_order_and_compression_for_a_token_with_a_huge_std():
    torch.manual_seed(2)
    x = torch.randn(1, 10, D) * 0.01
    x[0, :, 2] = -50.0  # the same large value in every token: the stds are alike
    x[0, :, 0] = 10.0 + torch.arange(10.0)  # dim 0 grows with the token index
    x[0, 9, 1] = 1000.0  # token 9 also has a massive activation: its std is huge
    norm = run(nn.LayerNorm(D), x, SpikeOptions(spike_z=2.0))
    across = {a.dim: a for a in norm.across_token}
    y = torch.nn.functional.layer_norm(x.double(), (D,))[0]
    column, out = x[0, :, 0].double().numpy(), y[:, 0].numpy()
    # Token 9 goes from the largest x[:, 0] to the smallest y[:, 0]: sum d^2 = 81 + 9 * 1.
    assert across[0].rho == pytest.approx(1 - 6 * 90 / (10 * 99), rel=1e-6)
    assert across[0].compression_in == pytest.approx(column.max() / np.sort(column)[4], rel=1e-6)
    assert across[0].compression_out == pytest.approx(
        np.abs(out).max() / np.sort(np.abs(out))[4], rel=1e-5
    )
    assert across[0].tokens == 10 and across[0].head is None
    assert [(s.token, s.dim) for s in norm.spikes if s.massive] == [(9, 1)]


def test_negative_weight_flips_values_but_keeps_the_magnitude_order():
    ln = nn.LayerNorm(D)
    with torch.no_grad():
        ln.weight[17] = -1.0
    torch.manual_seed(0)
    x = torch.randn(1, 10, D)
    x[0, 3, 17] = 40.0
    norm = run(ln, x)
    top = norm.spikes[0]
    assert top.out_value < 0 < top.value and top.rank_out == 1 and top.changed_by is None
    rho = {a.dim: a for a in norm.across_token}[17]
    assert rho.rho < 0 < rho.rho_abs  # values reversed across tokens, magnitudes not


def test_rmsnorm_never_centres():
    torch.manual_seed(3)
    rms = nn.RMSNorm(D, eps=1e-6)
    x = torch.randn(1, 6, D) + 3.0  # a large mean: centring would matter
    x[0, 2, 5] = 60.0
    top = run(rms, x).spikes[0]
    row = x[0, 2].double()
    assert (top.token, top.dim, top.rank_in, top.rank_centred) == (2, 5, 1, 1)
    assert top.z == pytest.approx((row[5] / (row.square().mean() + 1e-6).sqrt()).item(), rel=1e-6)


class HeadsFirstNorm(nn.Module):
    """Gemma 3's q/k norm layout: the norm sees (batch, heads, tokens, head_dim), a view of
    a (batch, tokens, heads * head_dim) projection."""

    def __init__(self, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.q_norm = nn.RMSNorm(head_dim, eps=1e-6)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = q.shape
        view = q.view(batch, tokens, self.heads, self.head_dim).transpose(1, 2)
        return self.q_norm(view)


@pytest.mark.parametrize("heads_first", [True, False])
def test_per_head_spikes_carry_head_and_token(heads_first: bool):
    heads, head_dim, tokens = 4, 16, 4  # as many heads as tokens: only the layout tells
    torch.manual_seed(4)
    q = torch.randn(2, tokens, heads * head_dim)
    q[1, 2, 3 * head_dim + 5] = 30.0  # sequence 1, token 2, head 3, dim 5
    if heads_first:
        module = HeadsFirstNorm(heads, head_dim)
        with torch.no_grad(), capture(module, spikes=SpikeOptions(spike_z=3.5)) as cap:
            module(q)
    else:
        module = nn.RMSNorm(head_dim, eps=1e-6)
        with torch.no_grad(), capture(module, spikes=SpikeOptions(spike_z=3.5)) as cap:
            module(q.view(2, tokens, heads, head_dim))
    norm = cap.result().norms[0]
    top = norm.spikes[0]
    assert (top.sequence, top.token, top.head, top.dim) == (1, 2, 3, 5)
    count = norm.order.spike_count
    assert count.shape == ((2, heads, tokens) if heads_first else (2, tokens, heads))
    assert (count[1, 3, 2] if heads_first else count[1, 2, 3]) >= 1
    column = next(a for a in norm.across_token if a.sequence == 1 and a.dim == 5)
    assert column.head == 3 and column.tokens == tokens


def test_spikes_beyond_the_per_token_cap_are_counted_not_ranked():
    torch.manual_seed(5)
    x = torch.randn(1, 3, D)
    x[0, 1, :12] = 80.0 + torch.arange(12.0)  # 12 spikes on token 1
    norm = run(nn.LayerNorm(D), x, SpikeOptions(spike_z=1.5, per_token=4))
    assert norm.order.spike_count[0, 1] >= 12
    assert norm.order.spikes == int(norm.order.spike_count.sum())
    assert norm.order.ranked < norm.order.spikes
    ranked_on_1 = sorted(s.dim for s in norm.spikes if s.token == 1)
    assert ranked_on_1 == [8, 9, 10, 11]  # the 4 largest |x| of the token


def test_stats_spikes_through_the_cli_on_the_tiny_fixture(tiny_model_dir: Path, tmp_path: Path):
    doc = stats_json(tiny_model_dir, "A fox. " * 8, tmp_path, "--spike-z", "2.5")
    n = doc["input"]["num_tokens"]
    keys = [
        "sequence",
        "token",
        "head",
        "dim",
        "value",
        "out_value",
        "z",
        "massive",
        "rank_in",
        "rank_centred",
        "rank_weighted",
        "rank_out",
        "changed_by",
        "gain",
        "bias",
    ]
    for entry in doc["norms"]:
        assert list(entry["order"])[:6] == [
            "spikes",
            "ranked",
            "rank_kept",
            "pairs",
            "pairs_kept",
            "changed_by",
        ]
        assert np.shape(entry["order"]["topk_retention"]) == (1, n)
        for spike in entry["spikes"]:
            assert list(spike) == keys
            assert abs(spike["z"]) >= 2.5 or spike["massive"]
            # (y - b) / z is the LayerNorm's own weight at that dimension
            assert spike["gain"] == pytest.approx(
                (spike["out_value"] - spike["bias"]) / spike["z"], rel=1e-6
            )
        for a in entry["across_token"]:
            assert list(a)[:5] == ["dim", "rho", "rho_abs", "compression_in", "compression_out"]
        for c in entry["census"]:
            assert list(c)[:6] == [
                "dim",
                "count",
                "max_abs",
                "first_token_share",
                "positions",
                "tokens",
            ]
    assert any(entry["spikes"] for entry in doc["norms"])
    assert list(doc["trajectory"]) == ["dims", "norms", "max_abs_in", "max_abs_out"]
    assert np.shape(doc["trajectory"]["max_abs_in"]) == (
        len(doc["trajectory"]["dims"]),
        len(doc["trajectory"]["norms"]),
    )
    assert StatsResult.from_json(doc).to_json() == doc


def test_census_token_table_merges_batches_exactly_within_capacity():
    """The fixed-size (token id, dim) table, merged batch by batch by sorting, against a
    plain count; past its capacity it never over-counts and counts what it dropped."""
    from collections import Counter

    from lninspect.hooks.census import Census

    rng = np.random.default_rng(6)
    want: Counter[tuple[int, int]] = Counter()
    census = Census(width=8, device=torch.device("cpu"), capacity=64)
    small = Census(width=8, device=torch.device("cpu"), capacity=4)
    for _ in range(5):
        ids = rng.integers(0, 6, size=(2, 10))
        dims = rng.integers(-1, 8, size=(2, 10, 1, 3))  # -1: no spike in that slot
        for (s, t, _, _), j in np.ndenumerate(dims):
            if j >= 0:
                want[(int(ids[s, t]), int(j))] += 1
        keys = torch.where(
            torch.tensor(dims) >= 0, torch.tensor(ids)[..., None, None] * 8 + torch.tensor(dims), -1
        ).flatten()
        for table in (census, small):
            table._merge(keys, (keys >= 0).to(torch.int64))
    got = {
        (int(k) // 8, int(k) % 8): int(n)
        for k, n in zip(census.keys, census.key_counts, strict=True)
        if k >= 0
    }
    assert got == dict(want) and int(census.evicted) == 0
    for key, n in zip(small.keys.tolist(), small.key_counts.tolist(), strict=True):
        assert 0 < n <= want[(key // 8, key % 8)]  # what fell out earlier is not counted
    assert int(small.evicted) == sum(want.values()) - int(small.key_counts.sum())


# Ties: of equal |x| (or |y|), the lower index first, against a Python reference ----------------

TIED = [5, 90, 33, 12, 71, 2, 60, 44, 19, 85, 27, 50]  # dims planted with exactly 80.0


def _lower_first(values: np.ndarray, k: int) -> list[int]:
    """The reference: the k largest values' indices, ties by the lower index (Python sort)."""
    return sorted(range(len(values)), key=lambda j: (-values[j], j))[:k]


def test_ties_are_broken_by_the_lower_index():
    """Exact ties in the per-token cut, top-k retention, the listed spikes and the
    across-token columns: the lower (sequence, token, head) dim first, not torch's order."""
    torch.manual_seed(7)
    x = torch.randn(2, 3, D) * 0.1
    x[:, :, TIED] = 80.0  # every token of both sequences: the same 12 tied spikes
    ln = nn.LayerNorm(D)
    with torch.no_grad():  # distinct gains on the tied dims: |y| orders them, |x| cannot
        ln.weight[TIED] = torch.linspace(2.0, 1.0, len(TIED))
    options = SpikeOptions(spike_z=1.5, per_token=4, top_k=8, max_spikes=5, across_dims=3)
    norm = run(ln, x, options)
    listed = [(s.sequence, s.token, s.dim) for s in norm.spikes]
    assert listed == [(0, 0, 2), (0, 0, 5), (0, 0, 12), (0, 0, 19), (0, 1, 2)]
    assert [a.dim for a in norm.across_token if a.sequence == 0] == sorted(TIED)[:3]
    y = torch.nn.functional.layer_norm(x.double(), (D,), ln.weight.double(), ln.bias.double())
    for s, t in np.ndindex(2, 3):
        top_x = _lower_first(np.abs(x[s, t].double().numpy()), 8)
        top_y = _lower_first(np.abs(y[s, t].detach().numpy()), 8)
        assert norm.order.topk_retention[s, t] == len(set(top_x) & set(top_y)) / 8
    with torch.no_grad():
        mean, std = x.mean(-1), x.var(-1, unbiased=False).add(1e-5).sqrt()
        record = spike_metrics(x, ln(x), centre=mean, scale=std, bias=ln.bias, options=options)
    assert record["ranked_dims"].reshape(-1, 4).tolist() == [sorted(TIED)[:4]] * 6


def test_the_largest_spike_and_its_norms_larger_max_abs_are_told_apart():
    """On the bundled `tiny`, ln_f's largest spike (x = -44.43) is below its max |x| (47.27 at
    t95): that |x| is no spike, its |z| (float64 reference) under 6 and under the bound
    that the spikes table and the report print."""
    from rich.console import Console

    from lninspect.derived import largest_spike, peak_not_spike
    from lninspect.jobs import prepare
    from lninspect.options import RunOptions
    from lninspect.render.spike_tables import peak_note, spikes_table

    prepared = prepare(RunOptions(model="tiny"))  # the default text, as `stats tiny --spikes`
    model, seen = prepared.loaded.model, []
    ln_f = model.transformer.ln_f
    handle = ln_f.register_forward_hook(lambda m, args, out: seen.append(args[0].double()))
    with torch.no_grad(), capture(model, prepared.norms, spikes=DEFAULT) as cap:
        model(input_ids=prepared.input_ids[0][None])
    handle.remove()
    stats = cap.result(model=prepared.loaded.info, input=prepared.input)
    found, spike = peak_not_spike(stats), largest_spike(stats)
    assert found is not None and spike is not None and found.norm is spike[0]
    assert found.norm.name == "transformer.ln_f" and found.peak.where is not None
    x = seen[0][0, found.peak.where[1]]
    z = ((x - x.mean()) / (x.var(unbiased=False) + ln_f.eps).sqrt())[found.peak.dim].item()
    assert found.peak.value == pytest.approx(x.abs().max().item(), rel=1e-6)
    assert abs(spike[1].value) < found.peak.value
    assert abs(z) < 6 and abs(z) <= found.z_bound * (1 + 1e-6)
    note = peak_note(stats)
    assert note is not None and f"|z| ≤ {found.z_bound:.3g} < 6" in note
    console = Console(width=200, record=True)
    console.print(spikes_table(stats))
    assert " ".join(note.split()) in " ".join(console.export_text().split())
