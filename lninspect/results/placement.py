"""Results of `lninspect placement`: plain dataclasses of numpy arrays, with JSON in and out.

Imports neither torch nor transformers. Per-layer arrays have one value per block,
averaged over the seeds; `*_std` arrays hold the spread (standard deviation) over them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lninspect.results.codec import from_document, meta, to_document

PLACEMENT_SCHEMA = "lninspect.placement/1"
# Weights whose gradient norm is reported per layer; ffn_out is W^{2,l} of the paper.
GRAD_KEYS = ("ffn_out", "ffn_in", "attn_out", "norm_weight")
# Norms whose input statistics are recorded: per block (ln_1, ln_2) and the final one.
NORM_KEYS = ("ln_1", "ln_2", "ln_f")


@dataclass
class PlacementConfig:
    """What the experiment runs: the model shape shared by every run, and its input."""

    layers: list[int] = field(default_factory=lambda: [12])  # block counts L to compare
    d_model: int = 256  # width d of the residual stream
    heads: int = 4  # attention heads
    mlp_ratio: int = 1  # FFN hidden width / d
    norm: str = "layernorm"  # "layernorm" or "rmsnorm"
    init: str = "xavier"  # "xavier" (the paper's setting) or "gpt2" (the control)
    seeds: int = 3  # models (and token batches) per configuration, averaged
    vocab_size: int = 2048
    seq_len: int = 128  # tokens per sequence
    batch: int = 4  # sequences per seed
    tokens: str = "random"  # "random" (seeded) or "text" (the bytes of --text)


@dataclass
class PlacementRun:
    """One placement at one depth: per-layer gradient norms and norm-input statistics."""

    placement: str  # "pre" or "post"
    norm: str
    layers: int
    # GRAD_KEYS -> (layers,) Frobenius norms of dL/dW, and their spread over seeds
    grad_norm: dict[str, np.ndarray] = field(metadata=meta(dtype="float64"))
    grad_norm_std: dict[str, np.ndarray] = field(metadata=meta(dtype="float64"))
    # NORM_KEYS -> (layers,) mean per-token sqrt(var(x) + eps), and E|x|^2 / d (Lemma 2's)
    input_std: dict[str, np.ndarray] = field(metadata=meta(dtype="float64"))
    input_ms: dict[str, np.ndarray] = field(metadata=meta(dtype="float64"))
    loss: float  # LM loss at initialization, mean over seeds (about ln vocab_size)

    def last(self, key: str = "ffn_out") -> float:
        """The gradient norm of the last block's weight `key`."""
        return float(self.grad_norm[key][-1])


@dataclass
class SweepRow:
    """The last block's FFN-output gradient at one depth L, and the paper's sqrt(L) law."""

    layers: int
    pre: float
    post: float
    ratio: float  # post / pre
    expected: float  # sqrt(L / L0) * ratio(L0), L0 the smallest depth run


@dataclass
class PlacementResult:
    """Every run of one `lninspect placement` call."""

    config: PlacementConfig
    runs: list[PlacementRun]
    notes: list[str] = field(default_factory=list)
    schema: str = PLACEMENT_SCHEMA

    def run(self, placement: str, layers: int) -> PlacementRun:
        """The run of `placement` at depth `layers`."""
        for run in self.runs:
            if run.placement == placement and run.layers == layers:
                return run
        raise KeyError((placement, layers))

    def sweep(self) -> list[SweepRow]:
        """One row per depth, in increasing L."""
        depths = sorted({run.layers for run in self.runs})
        pairs = [(self.run("pre", n).last(), self.run("post", n).last()) for n in depths]
        first = pairs[0][1] / pairs[0][0]
        return [
            SweepRow(n, pre, post, post / pre, math.sqrt(n / depths[0]) * first)
            for n, (pre, post) in zip(depths, pairs, strict=True)
        ]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; arrays become lists, non-finite floats null."""
        return to_document(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> PlacementResult:
        """Rebuild a result from `to_json` output (null floats come back as NaN)."""
        return from_document(cls, doc, (PLACEMENT_SCHEMA,))


def growth_exponent(rows: list[SweepRow]) -> float:
    """The slope of log(post/pre) against log L (the paper predicts 0.5); NaN for one depth."""
    if len(rows) < 2:
        return float("nan")
    logs = np.log([[row.layers, row.ratio] for row in rows])
    return float(np.polyfit(logs[:, 0], logs[:, 1], 1)[0])
