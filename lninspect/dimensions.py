"""The dimensions of the residual stream over a model: outlier dimensions (mean |x_j| far
above the others) and the census of the dimensions that spike, with exact counts. No torch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lninspect.results import CensusEntry, NormStats, StatsResult, TokenCount
from lninspect.results.aggregate import AggregateResult
from lninspect.streams import CensusNorm, residual_norms


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
