"""Numbers derived from results for people to read: what tables, figures and the report share.

Everything here takes result objects (lninspect.results) and returns plain numbers, arrays
or (norm, value) pairs; nothing draws or prints. No torch.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lninspect.results import (
    GradsResult,
    GradStats,
    NormStats,
    Spike,
    StatsResult,
)
from lninspect.results.aggregate import AggregateResult
from lninspect.roles import ordered_roles
from lninspect.statistics import BY_KEY
from lninspect.streams import Group, Location, by_leaf, groups_present, location, norms_of_group

Values = Callable[[NormStats], np.ndarray | None]  # a per-token array of a norm, if it has one


def nan_quantiles(values: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """Quantiles of the finite entries (NaN when there are none)."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return [float("nan")] * len(qs)
    return [float(q) for q in np.quantile(finite, qs)]


def per_token(norm: NormStats, of: str) -> np.ndarray | None:
    """A norm's per-token array named by a Summary's `of`: a statistic's key, "denominator"
    (std, or rms for an RMSNorm) or "grad_scale"; None where the norm did not record it."""
    if of == "denominator":
        return norm.denominator
    if of == "grad_scale":
        return norm.grad.scale if norm.grad is not None else None
    statistic = BY_KEY[of]
    block = getattr(norm, statistic.side)
    return None if block is None else block.get(statistic.field)


@dataclass
class Peak:
    """A norm's largest finite |x| over its tokens: the value, its hidden dimension, and the
    token's index into the per-token arrays (NaN, -1, None when no |x| is finite)."""

    value: float
    dim: int
    where: tuple[int, ...] | None
    at: Location | None = None  # `where` as a sequence, token and head


def largest_finite(values: np.ndarray) -> tuple[int, ...] | None:
    """The index of the largest finite entry of `values` (None when none is finite)."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return None
    where = np.unravel_index(int(np.argmax(np.where(finite, values, -np.inf))), values.shape)
    return tuple(int(i) for i in where)


def largest_abs(norm: NormStats) -> Peak:
    """The largest finite |x| of a norm, where it sits and in which dimension."""
    index = largest_finite(norm.input.absmax)
    if index is None:
        return Peak(math.nan, -1, None)
    value = float(np.asarray(norm.input.absmax)[index])
    dim = int(np.asarray(norm.input.absmax_dim)[index])
    return Peak(value, dim, index, location(norm, index))


def nan_median(values: np.ndarray) -> float:
    return nan_quantiles(values, (0.5,))[0]


# Layout of norms over depth -----------------------------------------------------------------


def layer_positions(result: StatsResult | AggregateResult) -> dict[str, float]:
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


def layer_quartiles(
    result: StatsResult, norms: Sequence[NormStats], values: Values
) -> tuple[np.ndarray, np.ndarray]:
    """x positions and (25%, 50%, 75%) quantiles over tokens (and heads), per norm of
    `norms` with values."""
    where = layer_positions(result)
    xs, qs = [], []
    for norm in sorted(norms, key=lambda n: where[n.name]):
        array = values(norm)
        if array is None:
            continue
        quartiles = nan_quantiles(array, (0.25, 0.5, 0.75))
        if np.isfinite(quartiles).all():
            xs.append(where[norm.name])
            qs.append(quartiles)
    return np.asarray(xs), np.asarray(qs).reshape(-1, 3)


def residual_growth(result: StatsResult) -> tuple[NormStats, float, NormStats, float] | None:
    """The residual stream's growth with depth: the median input denominator (std, rms for
    an RMSNorm) at the first and the last layer, read by the same residual norm of the block
    (the first residual group with norms in both). None without two such layers."""
    for group in groups_present(result):
        layered = [n for n in norms_of_group(result, group) if n.layer is not None]
        if not group.residual or len({n.layer for n in layered}) < 2:
            continue
        first, last = layered[0], layered[-1]
        low, high = nan_median(first.denominator), nan_median(last.denominator)
        if np.isfinite(low) and np.isfinite(high) and low > 0:
            return first, low, last, high
    return None


def largest_spike(result: StatsResult) -> tuple[NormStats, Spike] | None:
    """The module and spike with the largest |x| over the whole result; None without spikes.

    By |x|, never by z: |z| is bounded by sqrt(d - 1) and cannot rank spikes.
    """
    found = [
        (norm, spike)
        for norm in result.norms
        for spike in (norm.spikes or [])
        if math.isfinite(spike.value)
    ]
    return max(found, key=lambda pair: abs(pair[1].value), default=None)


@dataclass
class PeakNotSpike:
    """A norm's largest |x| that is larger than its largest spike's, so no spike: the peak
    and the most |z| it can have, (|x| + |c|) / s at its token (exact for RMSNorm, c = 0;
    the sign of x is not kept)."""

    norm: NormStats
    peak: Peak
    z_bound: float


def peak_not_spike(result: StatsResult) -> PeakNotSpike | None:
    """Why the largest spike's norm can show a larger max |x| than the spike: that |x| fails
    both rules (had it passed one, it would be its token's first ranked spike and listed).
    None when the largest spike is the norm's largest |x| (or there is no spike)."""
    found = largest_spike(result)
    if found is None:
        return None
    norm, spike = found
    peak = largest_abs(norm)
    if peak.where is None or not peak.value > abs(spike.value):
        return None
    centre = 0.0 if norm.kind == "rmsnorm" else abs(float(norm.input.mean[peak.where]))
    return PeakNotSpike(norm, peak, (peak.value + centre) / float(norm.denominator[peak.where]))


def spread(values: Sequence[float]) -> tuple[float, float]:
    """(mean, standard deviation with n - 1) of `values`; NaN where undefined."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return float("nan"), float("nan")
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else float("nan")


def has_order(result: StatsResult) -> bool:
    """Whether the spike metrics were captured (stats --spikes, report)."""
    return any(n.order is not None for n in result.norms)


@dataclass
class OrderTotals:
    """The order counts of several norms added up (OrderStats, pooled)."""

    norms: int  # norms with order metrics
    spiking: int  # norms with at least one spike
    spikes: int
    ranked: int
    kept: int
    pairs: int
    pairs_kept: int
    centre: int
    weight: int
    bias: int

    @property
    def rank_kept(self) -> float:
        """Share of ranked spikes whose rank is kept; NaN without one."""
        return self.kept / self.ranked if self.ranked else float("nan")

    @property
    def pair_share(self) -> float:
        """Share of same-token spike pairs whose order is kept; NaN without one."""
        return self.pairs_kept / self.pairs if self.pairs else float("nan")


KINDS = ("massive", "outlier")  # the two kinds of spike, in the order they are reported
KIND_NAMES = {"massive": "massive activations", "outlier": "z-rule outliers"}


def order_totals(norms: Sequence[NormStats], kind: str = "all") -> OrderTotals:
    """The counts of `norms` added up, of every spike or of one kind ("massive", "outlier");
    the shares are of the sums (each spike weighs one)."""
    orders = [n.order for n in norms if n.order is not None]
    kinds = [o if kind == "all" else getattr(o, kind) for o in orders]
    counts = [k for k in kinds if k is not None]
    return OrderTotals(
        norms=len(orders),
        spiking=sum(k.spikes > 0 for k in counts),
        spikes=sum(k.spikes for k in counts),
        ranked=sum(k.ranked for k in counts),
        kept=sum(round(k.rank_kept * k.ranked) for k in counts if k.ranked),
        pairs=sum(k.pairs for k in counts),
        pairs_kept=sum(round(k.pairs_kept * k.pairs) for k in counts if k.pairs),
        centre=sum(k.changed_by.centre for k in counts),
        weight=sum(k.changed_by.weight for k in counts),
        bias=sum(k.changed_by.bias for k in counts),
    )


def pooled_order(result: StatsResult, kind: str = "all") -> OrderTotals | None:
    """The order counts over every norm of the result; None when spikes were not captured."""
    return order_totals(result.norms, kind) if has_order(result) else None


@dataclass
class RoleOrder:
    """What the norms of one group (stream, role, placement) do to one kind of spike: how
    many keep its rank, and the stage and median gain at the spike's dimension where the
    rank changed."""

    group: Group
    leaf: str  # the module name (input_layernorm) of the group's norms with the most spikes
    totals: OrderTotals
    stage: str | None  # the stage that changed most ranks
    gain: float  # median effective weight at the listed spikes whose rank changed

    @property
    def role(self) -> str:
        return self.group.role


def role_orders(result: StatsResult, kind: str = "massive") -> list[RoleOrder]:
    """Per group, in block order, with at least one spike of `kind`."""
    rows = []
    for group in groups_present(result):
        norms = norms_of_group(result, group)
        totals = order_totals(norms, kind)
        if not totals.spikes:
            continue
        stages = {"centre": totals.centre, "weight": totals.weight, "bias": totals.bias}
        changed = [
            s.gain
            for n in norms
            for s in n.spikes or []
            if s.changed_by and s.massive == (kind == "massive")
        ]
        rows.append(
            RoleOrder(
                group=group,
                leaf=_busiest_leaf(norms, kind),
                totals=totals,
                stage=max(stages, key=lambda k: stages[k]) if any(stages.values()) else None,
                gain=nan_median(np.abs(np.array(changed))) if changed else float("nan"),
            )
        )
    return rows


def _busiest_leaf(norms: list[NormStats], kind: str) -> str:
    """The module name whose norms hold the most spikes of `kind`; the first on a tie."""
    counts = {leaf: order_totals(group, kind).spikes for leaf, group in by_leaf(norms).items()}
    return max(counts, key=lambda leaf: counts[leaf])


def spike_share(result: StatsResult) -> float:
    """Share of (token, norm) pairs with at least one spike, of either kind; NaN without."""
    counts = [np.ravel(n.order.spike_count) for n in result.norms if n.order is not None]
    if not counts:
        return float("nan")
    pooled = np.concatenate(counts)
    return float((pooled > 0).mean()) if pooled.size else float("nan")


def layer_span(layers: Sequence[int], sep: str = ", ") -> str:
    """[2, 3, 4, 7] -> `2-4, 7` (with sep="," as --layers takes it: `2-4,7`); [] -> `—`."""
    runs: list[list[int]] = []
    for layer in layers:
        if runs and layer == runs[-1][-1] + 1:
            runs[-1].append(layer)
        else:
            runs.append([layer])
    return sep.join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs) or "—"


def top_dimension(result: StatsResult) -> int | None:
    """The dimension of the largest spike, else the first of the trajectory."""
    found = largest_spike(result)
    if found is not None:
        return found[1].dim
    return result.trajectory.dims[0] if result.trajectory and result.trajectory.dims else None


def compression_by_norm(result: StatsResult, dim: int) -> list[tuple[NormStats, float, float]]:
    """(norm, median compression before, after) of dimension `dim` over sequences (and
    heads), for the norms of the residual stream that measured it across tokens."""
    rows = []
    for norm in (n for n in result.norms if n.reads == "residual"):
        found = [a for a in norm.across_token or [] if a.dim == dim and a.head is None]
        if found:
            rows.append(
                (
                    norm,
                    nan_median(np.array([a.compression_in for a in found])),
                    nan_median(np.array([a.compression_out for a in found])),
                )
            )
    return rows


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
