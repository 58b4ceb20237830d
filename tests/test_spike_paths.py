"""The CPU's data-sized spike path gives the record of the fixed-size path that an
accelerator runs (lninspect.hooks.spikes.host_reads), entry for entry; and the chunked
top-k equals a topk over every key."""

from __future__ import annotations

import pytest
import torch

from lninspect.hooks import spikes
from lninspect.hooks.order import top_lower_first
from lninspect.options import SpikeOptions

OPTIONS = SpikeOptions(per_token=4, max_spikes=20, across_dims=6)


def activations(kind: str, seed: int = 0) -> torch.Tensor:
    """(2, 48, 96): Gaussian tokens and, unless `kind` is "none" (no spike at all), a
    constant token, z-rule outliers, ties, a NaN and where "massive" a few entries far
    above the magnitude rule."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 48, 96, generator=g)
    if kind == "none":
        return x
    x[1, 9, :] = 1.0  # a constant token
    x[:, ::5, 7] = 40.0  # z-rule outliers (tied)
    x[0, 3, 11] = -40.0
    x[1, 20, 4] = torch.nan
    if kind == "massive":
        x[:, 2, 30] = 5000.0
        x[0, 30, 50] = -3000.0
    return x


def both_paths(
    monkeypatch: pytest.MonkeyPatch, x: torch.Tensor, rms: bool, biased: bool, real: bool
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    ln = torch.nn.LayerNorm(x.shape[-1], bias=biased)
    with torch.no_grad():
        ln.weight.copy_(torch.linspace(-2, 2, x.shape[-1]))
        if biased:
            ln.bias.copy_(torch.linspace(0, 1, x.shape[-1]))
        y = ln(x)
    mean = x.mean(-1)
    scale = (x.var(-1, unbiased=False) + 1e-5).sqrt()
    mask = torch.ones(x.shape[:2], dtype=torch.bool)
    mask[0, :5] = False  # left padding
    kwargs = {
        "centre": None if rms else mean,
        "scale": scale,
        "bias": ln.bias if biased else None,
        "options": OPTIONS,
        "real": mask if real else None,
    }
    sized = spikes.spike_metrics(x, y, **kwargs)
    monkeypatch.setattr(spikes, "host_reads", lambda t: False)
    fixed = spikes.spike_metrics(x, y, **kwargs)
    return sized, fixed


@pytest.mark.parametrize("kind", ["massive", "outliers", "none"])
@pytest.mark.parametrize(("rms", "biased", "real"), [(False, True, False), (True, False, True)])
def test_the_cpu_path_gives_the_fixed_size_record(
    monkeypatch: pytest.MonkeyPatch, kind: str, rms: bool, biased: bool, real: bool
) -> None:
    sized, fixed = both_paths(monkeypatch, activations(kind), rms, biased, real)
    assert sized.keys() == fixed.keys()
    for key in fixed:
        assert sized[key].dtype == fixed[key].dtype, key
        assert torch.equal(sized[key], fixed[key]) or torch.allclose(
            sized[key], fixed[key], rtol=0, atol=0, equal_nan=True
        ), key
    assert (int(fixed["order_counts"][1, 0]) > 0) == (kind == "massive")  # in sequence 0
    assert (int(fixed["order_counts"][0, 1]) > 0) == (kind != "none")  # ranked spikes


@pytest.mark.parametrize("n", [8, 13, 64, 72, 768])
@pytest.mark.parametrize("k", [1, 8, 100])
def test_chunked_top_k_equals_a_top_k_over_every_key(n: int, k: int) -> None:
    g = torch.Generator().manual_seed(n * 1000 + k)
    values = torch.randint(0, 4, (3, 5, n), generator=g).float()  # many ties
    values[..., ::7] = -1.0
    values.view(-1)[::11] = torch.nan
    values.view(-1)[::13] = torch.inf
    reverse = torch.arange(n - 1, -1, -1)
    key = values.view(torch.int32).to(torch.int64) * n + reverse
    assert torch.equal(top_lower_first(values, k), key.topk(min(k, n), dim=-1).indices)
