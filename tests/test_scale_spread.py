"""The scale's spread (lninspect.scale) against float64: each norm's s recomputed from its
input in float64 by a forward hook of the test's own, the spread taken with numpy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lninspect import capture
from lninspect.results import StatsResult
from lninspect.results.aggregate import Histogram, Moments, corpus_spread
from lninspect.scale import scale_spread
from tests.conftest import tiny_gpt2

RELATIVE = 1e-5  # float32 s against float64 s: one rounding of a sqrt of a short sum


def float64_s(model: torch.nn.Module, ids: torch.Tensor) -> dict[str, np.ndarray]:
    """Each LayerNorm's s = sqrt(var + eps) per token, from its input in float64."""
    found: dict[str, np.ndarray] = {}

    def keep(name: str, eps: float):
        def hook(_: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].double()
            var = ((x - x.mean(-1, keepdim=True)) ** 2).mean(-1)
            found[name] = (var + eps).sqrt().numpy()

        return hook

    handles = [
        m.register_forward_pre_hook(keep(n, m.eps))
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.LayerNorm)
    ]
    try:
        with torch.no_grad():
            model(input_ids=ids)
    finally:
        for h in handles:
            h.remove()
    return found


def reference(s: np.ndarray) -> tuple[float, float, float]:
    """cv, cv_rest, first_ratio written out on (sequences, tokens) float64."""
    rest = s[:, 1:].ravel()
    every = s.ravel()
    return (
        every.std() / every.mean(),
        rest.std() / rest.mean(),
        float(np.median(s[:, 0])) / float(np.median(rest)),
    )


def test_each_norms_spread_matches_float64() -> None:
    model = tiny_gpt2(n_layer=3)
    torch.manual_seed(1)
    ids = torch.randint(1, 300, (3, 12))
    with capture(model) as cap:
        with torch.no_grad():
            model(input_ids=ids)
    result = cap.result()
    expected = float64_s(model, ids)
    assert {n.name for n in result.norms} == set(expected)
    for norm in result.norms:
        assert norm.scale is not None
        got = (norm.scale.cv, norm.scale.cv_rest, norm.scale.first_ratio)
        np.testing.assert_allclose(got, reference(expected[norm.name]), rtol=RELATIVE)
        assert norm.scale.cv > 0


def test_the_spread_is_in_the_json_and_derived_for_older_documents() -> None:
    model = tiny_gpt2()
    with capture(model) as cap, torch.no_grad():
        model(input_ids=torch.arange(1, 9)[None])
    doc = json.loads(json.dumps(cap.result().to_json()))
    assert set(doc["norms"][0]["scale"]) == {"cv", "cv_rest", "first_ratio"}
    for norm in doc["norms"]:
        del norm["scale"]  # as a document of before the spread
    again = StatsResult.from_json(doc).to_json()
    assert (
        again["norms"][0]["scale"]
        == json.loads(json.dumps(cap.result().to_json()))["norms"][0]["scale"]
    )


def test_heads_and_padding() -> None:
    """Tokens on axis 2 (a q/k norm of Gemma 3: sequences, heads, tokens), NaN padding out."""
    rng = np.random.default_rng(0)
    s = rng.uniform(1, 3, (2, 4, 6))  # (sequences, heads, tokens)
    s[1, :, 5] = np.nan
    spread = scale_spread(s, token_axis=2)
    tokens = np.moveaxis(s, 2, 1)
    first, rest = tokens[:, 0].ravel(), tokens[:, 1:].ravel()
    rest = rest[np.isfinite(rest)]
    every = np.concatenate([first, rest])
    assert spread.cv == pytest.approx(every.std() / every.mean(), rel=1e-12)
    assert spread.cv_rest == pytest.approx(rest.std() / rest.mean(), rel=1e-12)
    assert spread.first_ratio == pytest.approx(np.median(first) / np.median(rest), rel=1e-12)


def test_one_token_has_no_rest() -> None:
    spread = scale_spread(np.array([[2.0]]))
    assert spread.cv == 0 and np.isnan(spread.cv_rest) and np.isnan(spread.first_ratio)


def test_corpus_spread_from_moments() -> None:
    """cv and cv_rest from per-position moments equal those of the values themselves."""
    rng = np.random.default_rng(1)
    s = rng.uniform(1, 5, (40, 8))  # (sequences, positions)
    s[:, 0] *= 4
    moments = Moments(
        count=np.full(8, 40),
        mean=s.mean(0),
        m2=((s - s.mean(0)) ** 2).sum(0),
        min=s.min(0),
        max=s.max(0),
    )
    edges = np.geomspace(0.5, 40, 200)
    histogram = Histogram(edges=edges, counts=np.histogram(s, edges)[0])
    spread = corpus_spread(moments, histogram)
    cv, cv_rest, _ = reference(s)
    assert spread.cv == pytest.approx(cv, rel=1e-12)
    assert spread.cv_rest == pytest.approx(cv_rest, rel=1e-12)
    ratio = s[:, 0].mean() / np.median(s)
    assert spread.first_ratio == pytest.approx(ratio, rel=0.05)  # within one bin
