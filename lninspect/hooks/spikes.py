"""Spike and order metrics of one norm call, on the device, by sorting (docs/metrics.md).

For a token with input x and output y over d hidden dimensions, centre c (the mean for
LayerNorm, 0 for RMSNorm) and denominator s (std or rms): z = (x - c) / s. A spike is a
dimension with |z| >= z_min, or a massive activation (|x| > 100 and > 1000 x the token's
median |x|, Sun et al. 2024). Ranks are ordinal (ties broken by position), 1 = largest.
"""

from __future__ import annotations

import numpy as np
import torch

from lninspect.hooks.reduce import gather, hidden_flat
from lninspect.options import SpikeOptions
from lninspect.results import AcrossToken, OrderStats, Spike

Tensor = torch.Tensor
MASSIVE_ABS = 100.0
MASSIVE_RATIO = 1000.0
ORDER_KEYS = ("within_token_spearman", "within_token_spearman_z", "topk_retention", "spike_count")


def ranks(t: Tensor, dim: int = -1) -> Tensor:
    """Ordinal ranks (0 = smallest) of `t` along `dim`, as int64."""
    order = t.argsort(dim=dim, stable=True)
    positions = torch.arange(t.shape[dim], device=t.device)
    shape = [1] * t.dim()
    shape[dim] = -1
    return torch.empty_like(order).scatter_(dim, order, positions.view(shape).expand_as(order))


def spearman(a: Tensor, b: Tensor, dim: int = -1) -> Tensor:
    """Spearman's rho of `a` and `b` along `dim`."""
    return rank_correlation(ranks(a, dim), ranks(b, dim), dim)


def rank_correlation(ra: Tensor, rb: Tensor, dim: int = -1) -> Tensor:
    """Spearman's rho from ordinal ranks: 1 - 6 sum(d^2) / (n (n^2 - 1)), in float64."""
    n = ra.shape[dim]
    if n < 2:
        return torch.full(ra.sum(dim).shape, float("nan"), device=ra.device, dtype=torch.float64)
    squared = (ra - rb).square().sum(dim)  # exact in int64
    return 1.0 - 6.0 * squared.double() / (n * (n * n - 1.0))


@torch.no_grad()
def spike_metrics(
    x: Tensor,
    y: Tensor,
    *,
    centre: Tensor | None,
    scale: Tensor,
    bias: Tensor | None,
    options: SpikeOptions,
    reduced_dims: int = 1,
) -> dict[str, Tensor]:
    """Per-token order measures, the largest spikes, and per-dimension across-token rho.

    `centre` (the per-token mean; None for RMSNorm) and `scale` (std or rms) are the
    token's statistics as lninspect.reduce.token_stats computed them, shape x.shape[:-1].
    """
    x = hidden_flat(x, reduced_dims).float()
    d = x.shape[-1]
    lead = x.shape[:-1]
    x = x.reshape(-1, d)  # (N, d): every token of the call
    y = hidden_flat(y, reduced_dims).float().reshape(-1, d)
    shift = 0.0 if centre is None else centre.reshape(-1, 1)
    z = (x - shift) / scale.reshape(-1, 1)  # (N, d)
    size_in = z.abs()  # |x - c| / s: the same order as |x - c| within a token
    size_out = (y - bias.detach().float().reshape(-1)).abs() if bias is not None else y.abs()
    magnitude = x.abs()
    massive = (magnitude > MASSIVE_ABS) & (
        magnitude > MASSIVE_RATIO * magnitude.median(-1, keepdim=True).values
    )
    spike = (size_in >= options.z) | massive  # (N, d)
    k = min(options.top_k, d)
    top_in, top_out = size_in.topk(k).indices, size_out.topk(k).indices  # (N, k)
    kept = (top_in[:, :, None] == top_out[:, None, :]).any(-1).float().mean(-1)
    rank_x = ranks(x)  # (N, d), shared by both within-token correlations
    return {
        "within_token_spearman": rank_correlation(rank_x, ranks(y)).float().reshape(lead),
        "within_token_spearman_z": rank_correlation(rank_x, ranks(z)).float().reshape(lead),
        "topk_retention": kept.reshape(lead),
        "spike_count": spike.sum(-1).reshape(lead),
        **_largest_spikes(x, y, z, size_in, size_out, spike, massive, options.max_spikes),
        "across_rho": spearman(x, y, dim=0).float(),  # (d,): every dim; spiking ones kept later
        "across_spiking": spike.any(0),  # (d,)
    }


def _largest_spikes(
    x: Tensor,
    y: Tensor,
    z: Tensor,
    size_in: Tensor,
    size_out: Tensor,
    spike: Tensor,
    massive: Tensor,
    limit: int,
) -> dict[str, Tensor]:
    """The `limit` spikes of largest |z| (entries with score -inf are no spikes: dropped later)."""
    d = x.shape[-1]
    score = torch.where(spike, size_in, torch.full_like(size_in, -torch.inf)).flatten()
    top = score.topk(min(limit, score.numel()))
    token, dim = top.indices // d, top.indices % d
    return {
        "spike_valid": torch.isfinite(top.values),
        "spike_token": token,  # index into the call's flattened tokens
        "spike_dim": dim,
        "spike_value": x[token, dim],
        "spike_z": z[token, dim],
        "spike_out": y[token, dim],
        "spike_rank_in": (size_in[token] > size_in[token, dim, None]).sum(-1) + 1,
        "spike_rank_out": (size_out[token] > size_out[token, dim, None]).sum(-1) + 1,
        "spike_massive": massive[token, dim],
    }


def collect_spikes(
    records: list[dict[str, Tensor]], limit: int
) -> tuple[list[Spike], OrderStats, list[AcrossToken]]:
    """Turn the per-call records of one norm into result objects, on the CPU.

    Calls follow each other along the sequence axis, as the statistics do; the spikes of
    all calls are merged and the `limit` largest |z| kept.
    """
    order = OrderStats(**{k: gather([r[k] for r in records]) for k in ORDER_KEYS})
    spikes, across, offset = [], [], 0
    for record in records:
        lead = tuple(record["within_token_spearman"].shape)  # (sequences, tokens, ...) or (tokens,)
        spikes += _spikes_of_call({k: v.cpu().numpy() for k, v in record.items()}, lead, offset)
        rho, spiking = record["across_rho"].cpu().numpy(), record["across_spiking"].cpu().numpy()
        tokens = int(np.prod(lead))
        across += [
            AcrossToken(dim=int(j), rho=float(rho[j]), tokens=tokens)
            for j in np.flatnonzero(spiking)
        ]
        offset += lead[0] if len(lead) > 1 else 1
    spikes.sort(key=lambda s: -abs(s.z))
    return spikes[:limit], order, across


def _spikes_of_call(r: dict[str, np.ndarray], lead: tuple[int, ...], offset: int) -> list[Spike]:
    spikes = []
    for i in np.flatnonzero(r["spike_valid"]):
        where = np.unravel_index(int(r["spike_token"][i]), lead)
        sequence, token = (where[0], where[1]) if len(lead) > 1 else (0, where[0])
        spikes.append(
            Spike(
                sequence=int(sequence) + offset,
                token=int(token),
                dim=int(r["spike_dim"][i]),
                value=float(r["spike_value"][i]),
                z=float(r["spike_z"][i]),
                out_value=float(r["spike_out"][i]),
                rank_in=int(r["spike_rank_in"][i]),
                rank_out=int(r["spike_rank_out"][i]),
                massive=bool(r["spike_massive"][i]),
            )
        )
    return spikes
