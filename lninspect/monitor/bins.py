"""Quantiles over the tokens of every rank from a summary of fixed size that merges exactly.

Each rank counts its tokens' values of a statistic in the same fixed bins, log-spaced in
|value| at BINS_PER_OCTAVE per factor of two from 2**LOW_OCTAVE to 2**HIGH_OCTAVE, on both
sides of zero (a kurtosis may be negative), with one bin around zero and one beyond each
end. Counts add up exactly across ranks (an all-reduce sum), so the merged counts are those
a single process would count over the whole global batch; the exact minimum and maximum are
reduced beside them. A quantile is then read from the counts:
numpy's linear definition (position q * (n - 1) in sorted order) with each sorted value
placed log-uniformly inside its bin, the bin clipped to [min, max]. Its relative error is
at most one bin's width, 2**(1/32) - 1 = 2.2 %, and far less where a bin holds many tokens;
a quantile that falls on the minimum or maximum is exact. No torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

BINS_PER_OCTAVE = 32
LOW_OCTAVE, HIGH_OCTAVE = -32, 32  # 2.3e-10 .. 4.3e9: beyond, one bin each side
_POSITIVE = 2.0 ** (
    np.arange(LOW_OCTAVE * BINS_PER_OCTAVE, HIGH_OCTAVE * BINS_PER_OCTAVE + 1) / BINS_PER_OCTAVE
)
EDGES = np.concatenate([-_POSITIVE[::-1], _POSITIVE])  # ascending; one bin holds zero
NUM_BINS = len(EDGES) + 1  # below EDGES[0], between each pair of edges, above EDGES[-1]


def bin_counts(values: np.ndarray) -> np.ndarray:
    """(NUM_BINS,) int64 counts of the finite values in the bins."""
    finite = values[np.isfinite(values)].astype(np.float64)
    index = np.searchsorted(EDGES, finite, side="right")  # 0: below, len(EDGES): above
    return np.bincount(index, minlength=NUM_BINS).astype(np.int64)


def value_range(values: np.ndarray) -> tuple[float, float]:
    """(min, max) of the finite values; (inf, -inf) when there are none (neutral in a merge)."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return math.inf, -math.inf
    return float(finite.min()), float(finite.max())


def bin_quantiles(counts: np.ndarray, low: float, high: float, qs: Sequence[float]) -> list[float]:
    """The quantiles `qs` of the values counted in `counts`, whose min and max are given."""
    total = int(counts.sum())
    if total == 0:
        return [math.nan] * len(qs)
    ends = np.cumsum(counts)  # values of bins 0..i: sorted positions ends[i-1] .. ends[i]-1
    out = []
    for q in qs:
        position = q * (total - 1)
        below, above = math.floor(position), math.ceil(position)
        a = _sorted_value(counts, ends, below, low, high)
        b = a if above == below else _sorted_value(counts, ends, above, low, high)
        out.append(a + (position - below) * (b - a))
    return out


def _sorted_value(counts: np.ndarray, ends: np.ndarray, k: int, low: float, high: float) -> float:
    """The k-th smallest value (0-based), placed log-uniformly in |value| in its bin, clipped to
    [low, high]."""
    if k == 0:
        return low
    if k == int(ends[-1]) - 1:
        return high
    i = int(np.searchsorted(ends, k, side="right"))
    start = int(ends[i] - counts[i])
    lo = max(low, EDGES[i - 1] if i > 0 else low)
    hi = min(high, EDGES[i] if i < len(EDGES) else high)
    fraction = (k - start + 0.5) / int(counts[i])
    if hi <= lo or lo <= 0.0 <= hi:  # a clipped empty span, or the bin that holds zero
        return lo + fraction * (hi - lo)
    return lo * (hi / lo) ** fraction  # lo and hi of one sign: log-uniform in |value|
