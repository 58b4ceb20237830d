"""Results of `lninspect placement`: plain dataclasses of numpy arrays, with JSON in and out.

Imports neither torch nor transformers. Every measured number is kept per seed with its mean
and 95% interval (lninspect.results.seeds.OverSeeds); per-layer quantities have one column
per block. The derived numbers (post/pre ratios, slopes across layers, the growth exponent
over depth) are computed per seed, then summarized, and stored with the runs. The training
runs of `--train` are in lninspect.results.placement_training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lninspect.results.codec import from_document, meta, to_document
from lninspect.results.placement_training import TrainingResult
from lninspect.results.seeds import OverSeeds

PLACEMENT_SCHEMA = "lninspect.placement/2"
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
    seeds: int = 8  # models (and token batches) per configuration
    vocab_size: int = 2048
    seq_len: int = 128  # tokens per sequence
    batch: int = 4  # sequences per seed (per step in training)
    tokens: str = "random"  # "random" (seeded), "bytes" (of --text) or "text" (--train)


@dataclass
class PlacementRun:
    """One placement at one depth at initialization, over the seeds."""

    placement: str  # "pre" or "post"
    norm: str
    layers: int
    # GRAD_KEYS -> (seeds, layers): Frobenius norms of dL/dW per block
    grad_norm: dict[str, OverSeeds]
    # NORM_KEYS -> (seeds, layers): mean per-token sqrt(var(x) + eps), and E|x|^2/d (Lemma 2's)
    input_std: dict[str, OverSeeds]
    input_ms: dict[str, OverSeeds]
    loss: OverSeeds  # (seeds,) LM loss at initialization (about ln vocab_size)
    # (seeds,) of the ffn_out gradients: block 0 / block L-1, and the least-squares slope of
    # ln |dL/dW^{2,l}| against l (per block; 0 when flat)
    first_over_last: OverSeeds
    slope: OverSeeds

    def last(self, key: str = "ffn_out") -> float:
        """The mean gradient norm of the last block's weight `key`."""
        return float(self.grad_norm[key].mean[-1])


@dataclass
class SweepRow:
    """The last block's FFN-output gradient at one depth L, and Theorem 1's sqrt(L) law."""

    layers: int
    pre: OverSeeds  # (seeds,)
    post: OverSeeds
    ratio: OverSeeds  # post / pre, per seed
    expected: OverSeeds  # sqrt(L / L0) * ratio at L0 (the smallest depth run), per seed


@dataclass
class PlacementResult:
    """Every run of one `lninspect placement` call."""

    config: PlacementConfig
    runs: list[PlacementRun]  # at initialization; empty with --train
    sweep: list[SweepRow] = field(default_factory=list)  # one row per depth, increasing L
    # (seeds,) slope of ln(post/pre) against ln L; None for one depth
    growth_exponent: OverSeeds | None = field(default=None, metadata=meta(omit_none=True))
    training: TrainingResult | None = field(default=None, metadata=meta(omit_none=True))
    notes: list[str] = field(default_factory=list)
    schema: str = PLACEMENT_SCHEMA

    def run(self, placement: str, layers: int) -> PlacementRun:
        """The run of `placement` at depth `layers`."""
        for run in self.runs:
            if run.placement == placement and run.layers == layers:
                return run
        raise KeyError((placement, layers))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; arrays become lists, non-finite floats null."""
        return to_document(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> PlacementResult:
        """Rebuild a result from `to_json` output (null floats come back as NaN)."""
        return from_document(cls, doc, (PLACEMENT_SCHEMA,))


def layer_trend(grads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per seed, of (seeds, L) gradient norms: first / last block, and the slope of ln g on l."""
    if grads.shape[1] < 2:
        nan = np.full(len(grads), np.nan)
        return nan, nan
    slopes = np.polyfit(np.arange(grads.shape[1]), np.log(grads).T, 1)[0]  # one fit per seed
    return grads[:, 0] / grads[:, -1], slopes


def sweep_rows(runs: list[PlacementRun]) -> list[SweepRow]:
    """One row per depth, in increasing L: the last block's ffn_out gradient, paired by seed."""
    depths = sorted({run.layers for run in runs})
    by_key = {(run.placement, run.layers): run for run in runs}
    last = {key: run.grad_norm["ffn_out"].values[:, -1] for key, run in by_key.items()}
    first_ratio = last["post", depths[0]] / last["pre", depths[0]]
    return [
        SweepRow(
            layers=n,
            pre=OverSeeds.of(last["pre", n]),
            post=OverSeeds.of(last["post", n]),
            ratio=OverSeeds.of(last["post", n] / last["pre", n]),
            expected=OverSeeds.of(math.sqrt(n / depths[0]) * first_ratio),
        )
        for n in depths
    ]


def growth_exponent(rows: list[SweepRow]) -> OverSeeds | None:
    """Per seed, the slope of ln(post/pre) against ln L (Theorem 1: 0.5); None for one depth."""
    if len(rows) < 2:
        return None
    logs = np.log(np.stack([row.ratio.values for row in rows]))  # (depths, seeds)
    depths = np.log([row.layers for row in rows])
    return OverSeeds.of(np.polyfit(depths, logs, 1)[0])
