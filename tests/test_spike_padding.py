"""Spike records through the Python API: census token ids without a tokenizer, and padding
left out of every spike statistic exactly as of the others (issue 24)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from lninspect import capture
from lninspect.options import SpikeOptions
from tests.conftest import tiny_gpt2

SPIKES = SpikeOptions(spike_z=2.5, max_spikes=10_000)  # d = 32: |z| <= sqrt(31); every spike listed
IDS = torch.tensor([[5, 6, 7, 8, 9, 10, 11], [12, 13, 14, 0, 0, 0, 0]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0]])


@pytest.fixture(scope="module")
def model():
    """The pad token (id 0) has a large embedding: the pads, most of the second sequence,
    would move its layer-wide median (the magnitude rule) and the census if counted."""
    built = tiny_gpt2()
    with torch.no_grad():
        built.transformer.wte.weight[0] = 0.5
    return built


def test_census_tokens_are_the_ids_without_a_tokenizer(model):
    with torch.no_grad(), capture(model, spikes=SPIKES) as cap:
        model(IDS[:1])
    result = cap.result()
    ids = IDS[0].tolist()
    assert any(norm.census for norm in result.norms)
    for norm in result.norms:
        for entry in norm.census:  # the reference: the listed (all) ranked spikes' token ids
            want = Counter(ids[s.token] for s in norm.spikes or [] if s.dim == entry.dim)
            ordered = sorted(want.items(), key=lambda pair: (-pair[1], pair[0]))[:5]
            assert [(t.id, t.count) for t in entry.tokens] == ordered
            assert all(t.token == f"#{t.id}" for t in entry.tokens)


def _spike_run(model, batches: list[tuple[torch.Tensor, torch.Tensor | None]], options):
    with torch.no_grad(), capture(model, spikes=options) as cap:
        for ids, mask in batches:
            model(ids, **({} if mask is None else {"attention_mask": mask}))
    return cap.result()


@pytest.mark.parametrize("massive", [False, True])
def test_a_padded_batch_gives_the_spikes_of_its_sequences(model, massive: bool):
    """Right padding: every spike statistic of the padded batch equals that of the two
    sequences run one at a time (membership, ranks, counts exactly; values to float32)."""
    # low magnitude thresholds make the layer-median rule fire on this random model
    options = (
        SpikeOptions(spike_z=2.5, max_spikes=10_000, spike_abs=0.05, spike_ratio=2.5)
        if massive
        else SPIKES
    )
    padded = _spike_run(model, [(IDS, MASK)], options)
    alone = _spike_run(model, [(IDS[:1], None), (IDS[1:, :3], None)], options)
    real = MASK.bool().numpy()
    kinds = 0
    for got, want in zip(padded.norms, alone.norms, strict=True):
        assert got.order is not None and want.order is not None
        key = lambda s: (s.sequence, s.token, s.dim)  # noqa: E731
        assert [key(s) for s in got.spikes or []] == [key(s) for s in want.spikes or []]
        for a, b in zip(got.spikes or [], want.spikes or [], strict=True):
            assert (a.massive, a.rank_in, a.rank_out, a.changed_by) == (
                b.massive,
                b.rank_in,
                b.rank_out,
                b.changed_by,
            )
            assert a.value == pytest.approx(b.value, rel=1e-5, abs=1e-6)
        for kind in ("massive", "outlier"):
            g, w = getattr(got.order, kind), getattr(want.order, kind)
            assert (g.spikes, g.ranked, g.pairs) == (w.spikes, w.ranked, w.pairs)
        kinds += got.order.massive.spikes if massive else got.order.outlier.spikes
        count, retention = got.order.spike_count, got.order.topk_retention
        assert (count[~real] == -1).all() and np.isnan(retention[~real]).all()
        np.testing.assert_array_equal(count[real], want.order.spike_count[real])
        np.testing.assert_array_equal(retention[real], want.order.topk_retention[real])
        pairs = lambda n: {(a.sequence, a.dim): a for a in n.across_token}  # noqa: E731
        columns, wanted = pairs(got), pairs(want)  # a call picks its columns over its batch
        for k in set(columns) & set(wanted):
            a, b = columns[k], wanted[k]
            np.testing.assert_allclose(
                [a.rho, a.rho_abs, a.compression_in, a.compression_out],
                [b.rho, b.rho_abs, b.compression_in, b.compression_out],
                rtol=1e-5,
            )
        census = lambda n: [  # noqa: E731
            (c.dim, c.count, c.massive, c.first_token_share, c.positions, c.tokens, c.sequences)
            for c in n.census
        ]
        assert census(got) == census(want)
        assert got.dimensions.tokens == want.dimensions.tokens == int(real.sum())
        np.testing.assert_allclose(
            got.dimensions.mean_abs_in, want.dimensions.mean_abs_in, rtol=1e-5
        )
        np.testing.assert_allclose(got.dimensions.max_abs_in, want.dimensions.max_abs_in, rtol=1e-5)
        assert got.dimensions.outliers_in == want.dimensions.outliers_in
    assert kinds > 0  # the rule under test fired
