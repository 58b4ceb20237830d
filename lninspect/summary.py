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
from lninspect.results.aggregate import AggregateResult, NormAggregate
from lninspect.roles import group_label, group_order, ordered_roles
from lninspect.statistics import BY_KEY

Values = Callable[[NormStats], np.ndarray | None]
CensusNorm = (
    NormStats | NormAggregate
)  # a norm with a census: of one run, or of a corpus  # a per-token array of a norm, if it has one


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


@dataclass(frozen=True)
class Location:
    """Where a per-token value sits: its sequence, token and, for a norm that sees heads (a
    q/k norm), its head. The one way every table, caption, hover and JSON names a place."""

    sequence: int
    token: int
    head: int | None = None


def canonical(norm: NormStats, values: np.ndarray) -> np.ndarray:
    """A norm's per-token array as (sequences, tokens, heads): a (tokens,) or (sequences,
    tokens) array gets one head; the token axis of a q/k norm is its recorded `token_axis`
    (Gemma 3's arrays are (sequences, heads, tokens)), its other axes are heads."""
    array = np.asarray(values)
    if array.ndim <= 1:
        return array.reshape(1, -1, 1)
    if array.ndim == 2:
        return array[:, :, None]
    moved = np.moveaxis(array, norm.token_axis or 1, 1)
    return moved.reshape(moved.shape[0], moved.shape[1], -1)


def location(norm: NormStats, index: tuple[int, ...]) -> Location:
    """The Location of an index into a norm's per-token arrays (module order)."""
    shape = np.shape(norm.input.mean)
    if len(index) <= 1:
        return Location(0, int(index[0]) if index else 0)
    if len(index) == 2:
        return Location(int(index[0]), int(index[1]))
    axis = norm.token_axis or 1
    heads = [n for a, n in enumerate(shape) if a not in (0, axis)]
    head = np.ravel_multi_index([i for a, i in enumerate(index) if a not in (0, axis)], heads)
    return Location(int(index[0]), int(index[axis]), int(head))


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


@dataclass(frozen=True)
class Group:
    """Norms that read the same stream at the same place of a block: what every view that
    speaks of the residual stream, of "before attention" or of a role selects by."""

    reads: str  # lninspect.roles.STREAMS
    role: str
    placement: str

    @property
    def label(self) -> str:
        return group_label(self.reads, self.role, self.placement)

    @property
    def residual(self) -> bool:
        return self.reads == "residual"


def group_of(norm: NormDescription) -> Group:
    return Group(norm.reads, norm.role, norm.placement)


def groups_present(result: StatsResult | AggregateResult) -> list[Group]:
    """The groups of the result's norms, in block order (by role, pre before post)."""
    found = {group_of(n) for n in result.norms}
    return sorted(found, key=lambda g: (*group_order(g.role, g.placement), g.reads))


def norms_of_group(result: StatsResult, group: Group) -> list[NormStats]:
    """The norms of one group, in layer order (norms outside the blocks last)."""
    found = [n for n in result.norms if group_of(n) == group]
    return sorted(found, key=lambda n: math.inf if n.layer is None else n.layer)


@dataclass
class Panel:
    """One panel of a modules x tokens heatmap: norms of one group and module name, one row
    per layer (`layered`), or the norms outside the blocks, one row per name."""

    title: str
    norms: list[NormStats]
    layered: bool


def heatmap_panels(result: StatsResult) -> list[Panel]:
    """Every norm in one panel: one per group and module name inside the blocks, in block
    order (Gemma's q_norm and k_norm apart), then the norms outside them (final, embed)."""
    panels: list[Panel] = []
    for group in groups_present(result):
        inside = [n for n in norms_of_group(result, group) if n.layer is not None]
        for leaf in dict.fromkeys(n.name.rsplit(".", 1)[-1] for n in inside):
            rows = [n for n in inside if n.name.rsplit(".", 1)[-1] == leaf]
            panels.append(Panel(f"{leaf} ({group.label})", rows, layered=True))
    outside = [n for n in result.norms if n.layer is None]
    if outside:
        panels.append(Panel("outside the blocks", outside, layered=False))
    return panels


def token_row(norm: NormStats, values: np.ndarray, sequence: int = 0) -> np.ndarray:
    """One sequence's per-token values of `norm` as (tokens,); heads are reduced by median."""
    row = canonical(norm, values)[sequence]  # (tokens, heads)
    if row.shape[1] == 1:
        return row[:, 0].astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN padding
        return np.nanmedian(row, axis=1).astype(np.float64)


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


def residual_norms(result: StatsResult | AggregateResult) -> list[CensusNorm]:
    """The norms that read the residual stream, in model order."""
    return [n for n in result.norms if n.reads == "residual"]


def depth_series(result: StatsResult, reads: str) -> list[tuple[Group, str, list[NormStats]]]:
    """(group, module name, norms) per line of a by-depth view of the norms that read
    `reads`: one line per group and module name, in block order; a residual view also has
    the final norm (a point after the last layer)."""
    series = []
    for group in groups_present(result):
        if group.reads != reads:
            continue
        norms = norms_of_group(result, group)
        for leaf in dict.fromkeys(n.name.rsplit(".", 1)[-1] for n in norms):
            series.append((group, leaf, [n for n in norms if n.name.rsplit(".", 1)[-1] == leaf]))
    return series


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


def _busiest_leaf(norms: Sequence[NormStats], kind: str) -> str:
    """The module name (the last part of the path) whose norms hold the most spikes of
    `kind`; the first in model order on a tie."""
    counts: dict[str, int] = {}
    for norm in norms:
        leaf = norm.name.rsplit(".", 1)[-1]
        counts[leaf] = counts.get(leaf, 0) + order_totals([norm], kind).spikes
    return max(counts, key=lambda leaf: counts[leaf])


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
    dims = [
        n.dimensions for n in result.norms if n.reads == "residual" and n.dimensions is not None
    ]
    found: dict[int, int] = {}
    for d in dims:
        for j in d.outliers_in if side == "in" else d.outliers_out:
            found[j] = found.get(j, 0) + 1
    ranked = sorted(found, key=lambda j: (-found[j], j))[:limit]
    return [(j, found[j], len(dims)) for j in ranked]


@dataclass
class DimCensus:
    """One dimension over the norms of the residual stream: where and how much it spikes."""

    dim: int
    layers: list[int]  # layers of the norms where it spikes
    norms: int  # how many norms it spikes at
    count: int  # spikes (of the kind asked for) over every norm of the residual stream
    massive: int  # of its spikes of any kind, the massive activations
    sequences: float  # the largest share of sequences with a spike at one norm
    first_token_share: float  # share of its spikes on the first token
    max_abs: float  # its max |x| over every norm of the residual stream, spiking or not
    tokens: list[tuple[str, int]]  # the tokens most often carrying it, of the norms' census
    max_at: list[int]  # [sequence, token] of that max |x|


def census_rows(
    result: StatsResult | AggregateResult, limit: int = 8, kind: str = "all", by: str = "count"
) -> list[DimCensus]:
    """The `limit` dimensions with the most spikes (of `kind`: all, massive, outlier) over the
    norms of the residual stream (a q/k norm's dimension is one within a head, another axis;
    a sub-layer's output is not the stream); `by="max"`: those of largest max |x| first.

    Counts, layers and maxima cover every spike (`DimensionStats.spiking`); the tokens come
    from each norm's census, which lists its dimensions with the most spikes.
    """
    total = (
        result.corpus.sequences
        if isinstance(result, AggregateResult)
        else result.input.num_sequences
    )
    norms = residual_norms(result)
    counted: dict[int, list[tuple[CensusNorm, dict[str, int]]]] = {}
    for norm in norms:
        for counts in _dim_counts(norm):
            if _kind_count(counts, kind):
                counted.setdefault(counts["dim"], []).append((norm, counts))
    rows = [_dim_census(j, found, norms, max(total, 1), kind) for j, found in counted.items()]
    key = (lambda r: (-r.count, r.dim)) if by == "count" else (lambda r: (-r.max_abs, r.dim))
    return sorted(rows, key=key)[:limit]


def spikes_by_dim(norm: CensusNorm) -> dict[int, int]:
    """Dimension -> the norm's spikes in it: every one where the result holds the counts in
    full, else its census's dimensions with the most."""
    return {c["dim"]: c["count"] for c in _dim_counts(norm)}


def _dim_counts(norm: CensusNorm) -> list[dict[str, int]]:
    """One dict of counts per spiking dimension (keys: dim and SpikeCounts' fields), of
    every dimension (`dimensions.spiking`), else (documents before it) of the census."""
    names = ("count", "massive", "first", "massive_first", "sequences")
    dimensions = getattr(norm, "dimensions", None)
    spiking = dimensions.spiking if dimensions is not None else None
    if spiking is None:
        return [
            {
                "dim": e.dim,
                "count": e.count,
                "massive": e.massive,
                "first": round(e.first_token_share * e.count),
                "massive_first": round(e.massive_first_share * e.massive) if e.massive else 0,
                "sequences": e.sequences,
            }
            for e in getattr(norm, "census", None) or []
        ]
    columns = [getattr(spiking, name) for name in names]
    return [
        {"dim": j, **dict(zip(names, values, strict=True))}
        for j, *values in zip(spiking.dims, *columns, strict=True)
    ]


def _kind_count(counts: dict[str, int], kind: str) -> int:
    if kind == "massive":
        return counts["massive"]
    return counts["count"] - counts["massive"] if kind == "outlier" else counts["count"]


def _kind_first(counts: dict[str, int], kind: str) -> int:
    """Spikes of `kind` on the first token."""
    if kind == "massive":
        return counts["massive_first"]
    every = counts["first"]
    return every - counts["massive_first"] if kind == "outlier" else every


def _kind_tokens(entry: CensusEntry, kind: str) -> list[TokenCount]:
    if kind == "massive":
        return entry.massive_tokens
    return entry.outlier_tokens if kind == "outlier" else entry.tokens


def _dim_census(
    dim: int,
    found: list[tuple[CensusNorm, dict[str, int]]],
    norms: Sequence[CensusNorm],
    total: int,
    kind: str,
) -> DimCensus:
    count = sum(_kind_count(c, kind) for _, c in found)
    tokens: dict[int, tuple[str, int]] = {}  # id -> (text, count)
    for norm, _ in found:
        for entry in getattr(norm, "census", None) or []:
            for t in _kind_tokens(entry, kind) if entry.dim == dim else []:
                tokens[t.id] = (t.token, tokens.get(t.id, (t.token, 0))[1] + t.count)
    peak, at = _peak(dim, found, norms)
    return DimCensus(
        dim=dim,
        layers=sorted({n.layer for n, _ in found if n.layer is not None}),
        norms=len(found),
        count=count,
        massive=sum(c["massive"] for _, c in found),
        sequences=max(c["sequences"] for _, c in found) / total,
        first_token_share=sum(_kind_first(c, kind) for _, c in found) / count,
        max_abs=peak,
        max_at=at,
        tokens=[tokens[i] for i in sorted(tokens, key=lambda i: (-tokens[i][1], i))][:3],
    )


def _peak(
    dim: int, found: list[tuple[CensusNorm, dict[str, int]]], norms: Sequence[CensusNorm]
) -> tuple[float, list[int]]:
    """The dimension's largest |x| over every norm of `norms` and its [sequence, token];
    documents without `max_at_in` give the largest of the census entries of `found`."""
    measured = [d for n in norms if (d := n.dimensions) is not None and d.max_at_in is not None]
    if measured:
        top = max(measured, key=lambda d: np.nan_to_num(d.max_abs_in[dim], nan=-1.0))
        assert top.max_at_in is not None
        return float(top.max_abs_in[dim]), [int(i) for i in top.max_at_in[dim]]
    entries = [e for n, _ in found for e in n.census or [] if e.dim == dim]
    entry = max(entries, key=lambda e: e.max_abs, default=None)
    return (entry.max_abs, list(entry.max_at)) if entry else (math.nan, [])


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
