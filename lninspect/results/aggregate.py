"""Result objects of a corpus run: per-position moments and histograms, with JSON in and out.

Plain dataclasses of numpy arrays (no torch), like lninspect.results; the JSON layout is
documented in docs/corpus.md. Every per-position array has one entry per token position
0 .. seq_len - 1; a position no token reached has count 0 and NaN (null) elsewhere.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from lninspect.results.stats import ModelInfo, NormDescription, WeightSummary, _to_plain

AGGREGATE_SCHEMA = "lninspect.stats-aggregate/1"
# The per-token statistics aggregated per position (lninspect.results.InputStats / OutputStats),
# and spike_count when spikes were captured.
MOMENT_KEYS = ("mean", "std", "rms", "absmax", "out_mean", "out_std")
SPIKE_KEY = "spike_count"
PACKING = "documents concatenated, each followed by the end-of-text token, cut into seq_len"


@dataclass
class Moments:
    """Streaming moments of one per-token statistic, per position, over the corpus.

    Merged with Chan et al.'s formula in float64: var = m2 / count (population variance of
    the statistic across the corpus's tokens at that position). Non-finite values are
    counted in `nonfinite` and kept out of every other field.
    """

    count: np.ndarray  # (positions,) int64: finite values seen
    mean: np.ndarray  # (positions,) float64
    m2: np.ndarray  # (positions,) float64: sum of squared deviations from the mean
    min: np.ndarray  # (positions,) float64
    max: np.ndarray  # (positions,) float64
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

    edges: np.ndarray  # (bins + 1,) float64
    counts: np.ndarray  # (bins,) int64
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

    @property
    def denominator(self) -> Moments:
        """What the module divides by, per position: std for LayerNorm, rms for RMSNorm."""
        return self.positions["rms" if self.kind == "rmsnorm" else "std"]


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
class AggregateResult:
    """Per-position statistics of every normalization module, aggregated over a corpus."""

    model: ModelInfo
    corpus: CorpusInfo
    norms: list[NormAggregate]
    passes: int = 0  # forward passes of the model, over all processes
    notes: list[str] = field(default_factory=list)
    spike_z: float | None = None  # the spike threshold, when spikes were captured
    schema: str = AGGREGATE_SCHEMA

    def norm(self, name: str) -> NormAggregate:
        for norm in self.norms:
            if norm.name == name:
                return norm
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; arrays become lists, non-finite floats null (docs/corpus.md)."""
        doc = {"schema": self.schema, **_to_plain(self)}
        model = doc["model"]
        doc["model"] = {"class": model.pop("cls"), **model}
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> AggregateResult:
        """Rebuild a result from `to_json` output (null floats come back as NaN)."""
        if doc.get("schema") != AGGREGATE_SCHEMA:
            raise ValueError(f"not a {AGGREGATE_SCHEMA} document: {doc.get('schema')!r}")
        model = dict(doc["model"])
        model["cls"] = model.pop("class")
        return cls(
            model=ModelInfo(**model),
            corpus=CorpusInfo(**doc["corpus"]),
            norms=[_norm_from_json(n) for n in doc["norms"]],
            passes=doc["passes"],
            notes=list(doc["notes"]),
            spike_z=doc.get("spike_z"),
        )


def _norm_from_json(doc: dict[str, Any]) -> NormAggregate:
    described = {f.name: doc[f.name] for f in fields(NormDescription) if f.name != "weight"}
    spikes = doc.get("spike_count_hist")
    return NormAggregate(
        **described,
        weight=WeightSummary(**doc["weight"]) if doc["weight"] is not None else None,
        calls=doc["calls"],
        positions={k: _moments_from_json(v) for k, v in doc["positions"].items()},
        denominator_hist=_histogram_from_json(doc["denominator_hist"]),
        spike_count_hist=_histogram_from_json(spikes) if spikes is not None else None,
    )


def _moments_from_json(doc: dict[str, Any]) -> Moments:
    return Moments(
        count=np.asarray(doc["count"], dtype=np.int64),
        **{k: _float64(doc[k]) for k in ("mean", "m2", "min", "max")},
        nonfinite=doc["nonfinite"],
    )


def _histogram_from_json(doc: dict[str, Any]) -> Histogram:
    return Histogram(
        edges=_float64(doc["edges"]),
        counts=np.asarray(doc["counts"], np.int64),
        underflow=doc["underflow"],
        overflow=doc["overflow"],
    )


def _float64(values: list[float | None]) -> np.ndarray:
    """A list with None for non-finite values back to a float64 array."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
