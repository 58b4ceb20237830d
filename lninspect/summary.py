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
    CensusEntry,
    GradsResult,
    GradStats,
    NormDescription,
    NormStats,
    Spike,
    StatsResult,
    TokenCount,
)
from lninspect.results.aggregate import AggregateResult
from lninspect.roles import ordered_roles
from lninspect.statistics import BY_KEY

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
    return Peak(value, int(np.asarray(norm.input.absmax_dim)[index]), index)


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
    """What the norms of one role do to one kind of spike: how many keep its rank, and the
    stage and median gain at the spike's dimension where the rank changed."""

    role: str
    leaf: str  # the norms' own name (input_layernorm), the most common one
    totals: OrderTotals
    stage: str | None  # the stage that changed most ranks
    gain: float  # median effective weight at the listed spikes whose rank changed


def role_orders(result: StatsResult, kind: str = "massive") -> list[RoleOrder]:
    """Per role, in the order of a block, with at least one spike of `kind`."""
    rows = []
    for role in roles_present(result):
        norms = norms_of_role(result, role)
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
        leaves = [n.name.rsplit(".", 1)[-1] for n in norms]
        rows.append(
            RoleOrder(
                role=role,
                leaf=max(set(leaves), key=lambda leaf: (leaves.count(leaf), leaf)),
                totals=totals,
                stage=max(stages, key=lambda k: stages[k]) if any(stages.values()) else None,
                gain=nan_median(np.abs(np.array(changed))) if changed else float("nan"),
            )
        )
    return rows


def spike_share(result: StatsResult) -> float:
    """Share of (token, norm) pairs with at least one spike, of either kind; NaN without."""
    counts = [np.ravel(n.order.spike_count) for n in result.norms if n.order is not None]
    if not counts:
        return float("nan")
    pooled = np.concatenate(counts)
    return float((pooled > 0).mean()) if pooled.size else float("nan")


def dimension_scores(norms: Sequence[NormStats], side: str = "in") -> np.ndarray:
    """(norms, d): each dimension's mean |value| over tokens as a z over dimensions, the
    quantity the outlier rule compares with k."""
    rows = []
    for norm in norms:
        assert norm.dimensions is not None
        mean = np.asarray(getattr(norm.dimensions, f"mean_abs_{side}"), dtype=np.float64)
        rows.append((mean - mean.mean()) / (mean.std() or 1.0))
    return np.stack(rows)


def outlier_dimensions(
    result: StatsResult | AggregateResult, side: str = "in", limit: int = 5
) -> list[tuple[int, int, int]]:
    """(dim, norms where it is an outlier dimension, norms measured) for the dimensions that
    are outliers at the most norms of the model's width (Kovaleva et al.'s view)."""
    dims = [n.dimensions for n in result.norms if n.role != "qk" and n.dimensions is not None]
    found: dict[int, int] = {}
    for d in dims:
        for j in d.outliers_in if side == "in" else d.outliers_out:
            found[j] = found.get(j, 0) + 1
    ranked = sorted(found, key=lambda j: (-found[j], j))[:limit]
    return [(j, found[j], len(dims)) for j in ranked]


@dataclass
class DimCensus:
    """One dimension over every norm of a result: where and how much it spikes."""

    dim: int
    layers: list[int]  # layers of the norms where it is in the census
    norms: int  # how many norms list it
    count: int  # spikes over those norms
    sequences: float  # the largest share of sequences with a spike at one norm
    first_token_share: float  # share of its spikes on the first token
    max_abs: float
    tokens: list[tuple[str, int]]  # the tokens most often carrying it, over the norms
    max_at: list[int]  # [sequence, token] of its largest |x|, at the norm where it is largest


def census_rows(
    result: StatsResult | AggregateResult, limit: int = 8, kind: str = "all"
) -> list[DimCensus]:
    """The `limit` dimensions with the most spikes (of `kind`: all, massive, outlier) over the
    model, from every norm's census.

    Only the norms of the model's width count (the residual stream): a q/k norm's dimension
    is one within a head, another axis.
    """
    total = (
        result.corpus.sequences
        if isinstance(result, AggregateResult)
        else result.input.num_sequences
    )
    by_dim: dict[int, list[tuple[NormDescription, CensusEntry]]] = {}
    for norm in result.norms:
        if norm.role == "qk":
            continue
        for entry in getattr(norm, "census", None) or []:
            if _kind_count(entry, kind):
                by_dim.setdefault(entry.dim, []).append((norm, entry))
    rows = [_dim_census(dim, pairs, max(total, 1), kind) for dim, pairs in by_dim.items()]
    return sorted(rows, key=lambda r: (-r.count, r.dim))[:limit]


def _kind_count(entry: CensusEntry, kind: str) -> int:
    if kind == "massive":
        return entry.massive
    return entry.count - entry.massive if kind == "outlier" else entry.count


def _kind_first(entry: CensusEntry, kind: str) -> float:
    """Spikes of `kind` on the first token (a count, from the entry's shares)."""
    massive = entry.massive_first_share * entry.massive if entry.massive else 0.0
    if kind == "massive":
        return massive
    every = entry.first_token_share * entry.count
    return every - massive if kind == "outlier" else every


def _kind_tokens(entry: CensusEntry, kind: str) -> list[TokenCount]:
    if kind == "massive":
        return entry.massive_tokens
    return entry.outlier_tokens if kind == "outlier" else entry.tokens


def _dim_census(
    dim: int, pairs: list[tuple[NormDescription, CensusEntry]], total: int, kind: str
) -> DimCensus:
    count = sum(_kind_count(e, kind) for _, e in pairs)
    tokens: dict[str, int] = {}
    for _, entry in pairs:
        for t in _kind_tokens(entry, kind):
            tokens[t.token] = tokens.get(t.token, 0) + t.count
    return DimCensus(
        dim=dim,
        layers=sorted({n.layer for n, _ in pairs if n.layer is not None}),
        norms=len(pairs),
        count=count,
        sequences=max(e.sequences for _, e in pairs) / total,
        first_token_share=round(sum(_kind_first(e, kind) for _, e in pairs)) / count,
        max_abs=max(e.max_abs for _, e in pairs),
        max_at=max(pairs, key=lambda pair: pair[1].max_abs)[1].max_at,
        tokens=sorted(tokens.items(), key=lambda kv: (-kv[1], kv[0]))[:3],
    )


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
    heads), for the norms that measured it across tokens."""
    rows = []
    for norm in result.norms:
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
