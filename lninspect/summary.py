"""Numbers derived from results for people to read: what tables, figures and the report share.

Everything here takes result objects (lninspect.results) and returns plain numbers, arrays
or (norm, value) pairs; nothing draws or prints. No torch.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np

from lninspect.results import GradsResult, GradStats, NormStats, Spike, StatsResult
from lninspect.results.aggregate import AggregateResult
from lninspect.roles import ordered_roles

Values = Callable[[NormStats], np.ndarray | None]  # a per-token array of a norm, if it has one


def nan_quantiles(values: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """Quantiles of the finite entries (NaN when there are none)."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return [float("nan")] * len(qs)
    return [float(q) for q in np.quantile(finite, qs)]


def nan_median(values: np.ndarray) -> float:
    return nan_quantiles(values, (0.5,))[0]


# Layout of norms over depth -----------------------------------------------------------------


def layer_positions(result: StatsResult) -> dict[str, float]:
    """Module name -> x position: its layer; embed norms at -1, other norms after the last."""
    top = max((n.layer for n in result.norms if n.layer is not None), default=-1)
    outside = {"embed": -1.0}
    return {
        n.name: float(n.layer) if n.layer is not None else outside.get(n.role, top + 1.0)
        for n in result.norms
    }


def roles_present(result: StatsResult | AggregateResult) -> list[str]:
    """The roles of the result's norms, in the order of a block."""
    return ordered_roles({n.role for n in result.norms})


def norms_of_role(result: StatsResult, role: str) -> list[NormStats]:
    """The norms of one role, in layer order."""
    return sorted((n for n in result.norms if n.role == role), key=lambda n: n.layer or 0)


def token_row(values: np.ndarray, sequence: int = 0) -> np.ndarray:
    """One sequence's per-token values as (tokens,); extra axes (heads) are reduced by median."""
    row = values[sequence] if values.ndim > 1 else values
    if row.ndim > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN padding
            row = np.nanmedian(row.reshape(row.shape[0], -1), axis=1)
    return row.astype(np.float64)


def layer_quartiles(
    result: StatsResult, role: str, values: Values
) -> tuple[np.ndarray, np.ndarray]:
    """x positions and (25%, 50%, 75%) quantiles over tokens, per norm of `role` with values."""
    where = layer_positions(result)
    xs, qs = [], []
    for norm in sorted((n for n in result.norms if n.role == role), key=lambda n: where[n.name]):
        array = values(norm)
        if array is None:
            continue
        quartiles = nan_quantiles(array, (0.25, 0.5, 0.75))
        if np.isfinite(quartiles).all():
            xs.append(where[norm.name])
            qs.append(quartiles)
    return np.asarray(xs), np.asarray(qs).reshape(-1, 3)


def pooled_median(result: StatsResult, values: Values) -> tuple[np.ndarray, np.ndarray]:
    """Median over tokens and over the norms at each x position."""
    where = layer_positions(result)
    pooled: dict[float, list[np.ndarray]] = {}
    for norm in result.norms:
        array = values(norm)
        if array is not None:
            pooled.setdefault(where[norm.name], []).append(np.ravel(array))
    xs = np.array(sorted(pooled))
    return xs, np.array([nan_median(np.concatenate(pooled[x])) for x in xs])


# Headline numbers ---------------------------------------------------------------------------


def residual_growth(result: StatsResult) -> tuple[NormStats, float, NormStats, float] | None:
    """The first norm of the first and of the last layer with their median input std."""
    layered = [n for n in result.norms if n.layer is not None]
    if not layered:
        return None
    depths = [n.layer for n in layered if n.layer is not None]
    first = next(n for n in layered if n.layer == min(depths))
    last = next(n for n in layered if n.layer == max(depths))
    low, high = nan_median(first.denominator), nan_median(last.denominator)
    if first is last or not (np.isfinite(low) and np.isfinite(high) and low > 0):
        return None
    return first, low, last, high


def largest_spike(result: StatsResult) -> tuple[NormStats, Spike] | None:
    """The module and spike with the largest |z| over the whole result; None without spikes."""
    found = [
        (norm, spike)
        for norm in result.norms
        for spike in (norm.spikes or [])
        if math.isfinite(spike.z)
    ]
    return max(found, key=lambda pair: abs(pair[1].z), default=None)


def token_spikes(result: StatsResult, sequence: int, token: int) -> list[tuple[NormStats, Spike]]:
    """Every module's spikes at one token, in module order."""
    return [
        (norm, spike)
        for norm in result.norms
        for spike in (norm.spikes or [])
        if spike.sequence == sequence and spike.token == token
    ]


def has_order(result: StatsResult) -> bool:
    """Whether the order metrics were captured (stats --spikes, report)."""
    return any(n.order is not None for n in result.norms)


def pooled_order(result: StatsResult) -> tuple[float, float] | None:
    """(median within-token Spearman, median top-k retention) over every norm and token."""
    orders = [n.order for n in result.norms if n.order is not None]
    if not orders:
        return None
    rho = nan_median(np.concatenate([o.within_token_spearman.ravel() for o in orders]))
    kept = nan_median(np.concatenate([o.topk_retention.ravel() for o in orders]))
    return rho, kept


def with_grads(result: StatsResult) -> list[tuple[NormStats, GradStats]]:
    """The norms that have gradients, each with them."""
    return [(n, n.grad) for n in result.norms if n.grad is not None]


def largest_grad_scale(result: GradsResult) -> tuple[NormStats, float] | None:
    """The norm whose median gradient scale |dL/dx| / |dL/dy| over tokens is the largest."""
    scales = [(n, nan_median(grad.scale)) for n, grad in with_grads(result)]
    finite = [(n, v) for n, v in scales if np.isfinite(v)]
    return max(finite, key=lambda pair: pair[1], default=None)


# Parameter gradients ------------------------------------------------------------------------


def group_norms(result: GradsResult) -> dict[int | None, dict[str, float]]:
    """sqrt(sum of squared grad norms) per (layer, group); layer None first, then 0, 1, ..."""
    squares: dict[int | None, dict[str, float]] = {}
    for p in result.params:
        row = squares.setdefault(p.layer, {})
        row[p.group] = row.get(p.group, 0.0) + p.grad_norm**2
    order = sorted(squares, key=lambda layer: -1 if layer is None else layer)
    return {layer: {g: float(np.sqrt(v)) for g, v in squares[layer].items()} for layer in order}


# Corpus aggregates --------------------------------------------------------------------------


def role_curves(result: AggregateResult) -> dict[str, np.ndarray]:
    """Role -> per-position mean denominator, averaged over that role's modules."""
    curves: dict[str, list[np.ndarray]] = {}
    for norm in result.norms:
        curves.setdefault(norm.role, []).append(norm.denominator.mean)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # positions no token reached
        return {
            role: np.nanmean(np.stack(curves[role]), axis=0) for role in ordered_roles(set(curves))
        }


def position_ranges(seq_len: int) -> list[tuple[int, int]]:
    """[0, 1), [1, 2), [2, 3), [3, 4), [4, 8), [8, 16), ... up to seq_len."""
    ranges, start = [], 0
    while start < seq_len:
        stop = start + 1 if start < 4 else start * 2
        ranges.append((start, min(stop, seq_len)))
        start = stop
    return ranges


def role_means(result: AggregateResult, start: int, stop: int) -> dict[str, float]:
    """Mean denominator per role over positions start .. stop - 1 (modules weigh the same)."""
    by_role: dict[str, list[float]] = {}
    for norm in result.norms:
        count, mean, _ = norm.denominator.pooled(start, stop)
        if count:
            by_role.setdefault(norm.role, []).append(mean)
    return {role: float(np.mean(values)) for role, values in by_role.items()}
