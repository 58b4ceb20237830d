"""Result objects of a corpus run: per-position moments and histograms, with JSON in and out.

Plain dataclasses of numpy arrays (no torch), like lninspect.results; the JSON layout is
documented in docs/corpus.md. Every per-position array has one entry per token position
0 .. seq_len - 1; a position no token reached has count 0 and NaN (null) elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from lninspect.results.codec import ByName, Document, meta
from lninspect.results.normmap import NormMap
from lninspect.results.one_text import (
    CensusEntry,
    DimensionStats,
    ModelInfo,
    NormDescription,
    Trajectory,
)
from lninspect.scale import ScaleSpread
from lninspect.statistics import AGGREGATED_KEYS, denominator_key, schemas

AGGREGATE_SCHEMAS = schemas("stats-aggregate")  # oldest first (lninspect.statistics)
AGGREGATE_SCHEMA = AGGREGATE_SCHEMAS[-1]
# The per-token statistics aggregated per position (lninspect.statistics), and spike_count
# when spikes were captured.
MOMENT_KEYS = AGGREGATED_KEYS
SPIKE_KEY = "spike_count"
PACKING = "documents concatenated, each followed by the end-of-text token, cut into seq_len"


@dataclass
class Moments:
    """Streaming moments of one per-token statistic, per position, over the corpus.

    Merged with Chan et al.'s formula in float64: var = m2 / count (population variance of
    the statistic across the corpus's tokens at that position). Non-finite values are
    counted in `nonfinite` and kept out of every other field.
    """

    count: np.ndarray = field(metadata=meta(dtype="int64"))  # (positions,): finite values seen
    mean: np.ndarray = field(metadata=meta(dtype="float64"))  # (positions,)
    m2: np.ndarray = field(
        metadata=meta(dtype="float64")
    )  # (positions,): sum of squared deviations from mean
    min: np.ndarray = field(metadata=meta(dtype="float64"))  # (positions,)
    max: np.ndarray = field(metadata=meta(dtype="float64"))  # (positions,)
    nonfinite: int = 0

    @property
    def std(self) -> np.ndarray:
        """Per-position spread of the statistic across the corpus: sqrt(m2 / count)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.sqrt(self.m2 / self.count)

    def pooled(self, start: int = 0, stop: int | None = None) -> tuple[int, float, float]:
        """(count, mean, std) over positions start .. stop - 1 together (Chan's merge)."""
        count = self.count[start:stop].astype(np.float64)
        total = count.sum()
        if total == 0:
            return 0, float("nan"), float("nan")
        seen = count > 0
        mean = float((self.mean[start:stop][seen] * count[seen]).sum() / total)
        m2 = self.m2[start:stop][seen] + count[seen] * (self.mean[start:stop][seen] - mean) ** 2
        return int(total), mean, float(np.sqrt(m2.sum() / total))


@dataclass
class Histogram:
    """Fixed-bin counts of one per-token statistic over the whole corpus.

    Bin i holds values in [edges[i], edges[i + 1]); `underflow` counts values below edges[0]
    and `overflow` values from edges[-1] up. Histograms of several processes add up exactly.
    """

    edges: np.ndarray = field(metadata=meta(dtype="float64"))  # (bins + 1,)
    counts: np.ndarray = field(metadata=meta(dtype="int64"))  # (bins,)
    underflow: int = 0
    overflow: int = 0

    @property
    def total(self) -> int:
        return int(self.counts.sum()) + self.underflow + self.overflow

    def quantile(self, q: float) -> float:
        """The q-quantile, interpolated geometrically inside its bin (NaN when empty).

        Exact to within one bin width (5 % of the value for the std histogram); values
        beyond the edges answer with the edge they lie beyond.
        """
        total = self.total
        if total == 0:
            return float("nan")
        rank = q * total
        if rank <= self.underflow:
            return float(self.edges[0])
        cumulative = self.underflow + np.cumsum(self.counts)
        index = int(np.searchsorted(cumulative, rank))
        if index >= len(self.counts):
            return float(self.edges[-1])
        before = cumulative[index] - self.counts[index]
        share = (rank - before) / max(int(self.counts[index]), 1)
        lo, hi = self.edges[index], self.edges[index + 1]
        if lo > 0:
            return float(lo * (hi / lo) ** share)
        return float(lo + (hi - lo) * share)


@dataclass
class NormAggregate(NormDescription):
    """Everything aggregated over a corpus for one normalization module."""

    calls: int  # forward calls seen (one per batch, normally)
    positions: dict[str, Moments]  # MOMENT_KEYS (+ SPIKE_KEY) -> per-position moments
    denominator_hist: Histogram  # per-token std (LayerNorm) or rms (RMSNorm)
    spike_count_hist: Histogram | None = None  # per-token spike counts, when captured
    census: list[CensusEntry] | None = field(default=None, metadata=meta(omit_none=True))
    dimensions: DimensionStats | None = field(default=None, metadata=meta(omit_none=True))
    # how far s is from a constant (lninspect.scale), from the moments: derived when absent
    scale: ScaleSpread | None = field(default=None, metadata=meta(omit_none=True))
    # a bounded sample of the map ŷ(x) over the corpus and its fits (--map; lninspect.mapfit)
    map: NormMap | None = field(default=None, metadata=meta(omit_none=True))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scale is None:
            self.scale = corpus_spread(self.denominator, self.denominator_hist)

    @property
    def denominator(self) -> Moments:
        """What the module divides by, per position: std for LayerNorm, rms for RMSNorm."""
        return self.positions[denominator_key(self.kind)]


def corpus_spread(s: Moments, histogram: Histogram) -> ScaleSpread:
    """lninspect.scale's numbers from a corpus's per-position moments of s: cv and cv_rest
    exact (Chan's merge over positions 0.., 1..); first_ratio the mean s at position 0 over
    the median of every token's s (its histogram, within one bin; the first tokens are 1 in
    seq_len of them)."""
    _, mean, std = s.pooled()
    _, rest_mean, rest_std = s.pooled(1)
    first = float(s.mean[0]) if s.count.size and s.count[0] > 0 else float("nan")
    median = histogram.quantile(0.5)
    return ScaleSpread(
        cv=std / mean if mean else float("nan"),
        cv_rest=rest_std / rest_mean if rest_mean else float("nan"),
        first_ratio=first / median if median else float("nan"),
    )


@dataclass
class CorpusInfo:
    """What was read, and how it was cut into sequences."""

    files: list[str]
    documents: int
    sequences: int
    tokens: int
    seq_len: int
    batch_size: int
    world_size: int = 1  # processes that shared the sequences (torchrun)
    packing: str = PACKING


@dataclass
class AggregateResult(Document, ByName[NormAggregate]):
    """Per-position statistics of every normalization module, aggregated over a corpus."""

    SCHEMAS: ClassVar[tuple[str, ...]] = AGGREGATE_SCHEMAS

    model: ModelInfo
    corpus: CorpusInfo
    norms: list[NormAggregate]
    passes: int = 0  # forward passes of the model, over all processes
    notes: list[str] = field(default_factory=list)
    # The spike rules, when spikes were captured (lninspect.options.SpikeOptions):
    spike_z: float | None = None
    spike_abs: float | None = None
    spike_ratio: float | None = None
    trajectory: Trajectory | None = field(default=None, metadata=meta(omit_none=True))
    schema: str = AGGREGATE_SCHEMA

    def to_dataframe(self) -> Any:
        """A pandas DataFrame in long format, one row per (module, position, statistic,
        moment) (lninspect.results.frames)."""
        from lninspect.results.frames import aggregate_frame

        return aggregate_frame(self)
