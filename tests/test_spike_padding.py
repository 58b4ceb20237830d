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

SPIKES = SpikeOptions(z=2.5, max_spikes=10_000)  # d = 32: |z| <= sqrt(31); every spike listed
IDS = torch.tensor([[5, 6, 7, 8, 9, 10, 11], [12, 13, 14, 15, 0, 0, 0]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]])


@pytest.fixture(scope="module")
def model():
    return tiny_gpt2()


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
