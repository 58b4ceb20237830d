"""Results of `lninspect placement`: plain dataclasses of numpy arrays, with JSON in and out.

Imports neither torch nor transformers. Every measured number is kept per seed with its mean
and 95% interval (lninspect.results.seeds.OverSeeds); per-layer quantities have one column
per block. Runs are keyed by layout (lninspect.placement.layouts). The derived numbers
(ratios to the baseline layout, slopes across layers, the growth exponents over depth, the
stream's growth law) are computed per seed, then summarized, and stored with the runs. The
training runs of `--train` are in lninspect.results.placement_training.

Schema 3 keys the sweep and the growth exponent by layout; a schema-2 document (pre and
post only) is read through `upgrade_2`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from lninspect.placement.config import PlacementConfig
from lninspect.results.codec import Document, meta
from lninspect.results.placement_training import TrainingResult
from lninspect.results.seeds import OverSeeds

# 4: training's stream variance and absmax; 5: training's input_std is input_denominator
PLACEMENT_SCHEMA = "lninspect.placement/5"
PLACEMENT_SCHEMAS = (
    "lninspect.placement/2",
    "lninspect.placement/3",
    "lninspect.placement/4",
    PLACEMENT_SCHEMA,
)
# Weights whose gradient norm is reported per layer; ffn_out is W^{2,l} of the paper.
GRAD_KEYS = ("ffn_out", "ffn_in", "attn_out", "norm_weight")


@dataclass
class StreamGrowth:
    """How the residual stream's variance grows with depth l = 0 .. L, fitted per seed:
    geometric, ln v = a + rate * l, and linear, v = c + slope * l."""

    rate: OverSeeds  # (seeds,) the geometric fit's exponent per block
    slope: OverSeeds  # (seeds,) the linear fit's slope per block
    # (seeds,) ln(RSS of the geometric fit / RSS of the linear fit), both measured on v:
    # below 0 the geometric law fits better, above 0 the linear one
    log_rss_ratio: OverSeeds

    def better(self) -> str:
        """ "geometric" or "linear" where the interval of log_rss_ratio excludes 0, else "tie"."""
        _, low, high = self.log_rss_ratio.at()
        return "geometric" if high < 0 else "linear" if low > 0 else "tie"


@dataclass
class PlacementRun:
    """One layout at one depth at initialization, over the seeds."""

    layout: str = field(metadata=meta(was="placement"))  # a name of LAYOUTS
    norm: str
    layers: int
    # GRAD_KEYS -> (seeds, layers): Frobenius norms of dL/dW per block
    grad_norm: dict[str, OverSeeds]
    # the layout's norm keys -> (seeds, layers; ln_f: 1): mean per-token sqrt(var(x) + eps)
    # at each norm's input, and E|x|^2/d there (Lemma 2's quantity)
    input_std: dict[str, OverSeeds]
    input_ms: dict[str, OverSeeds]
    loss: OverSeeds  # (seeds,) LM loss at initialization (about ln vocab_size)
    # (seeds,) of the ffn_out gradients: block 0 / block L-1, and the least-squares slope of
    # ln |dL/dW^{2,l}| against l (per block; 0 when flat)
    first_over_last: OverSeeds
    slope: OverSeeds
    # (seeds, layers + 1): the residual stream's variance over d (mean over tokens) after
    # the embeddings (l = 0) and after each block l; its growth law (schema 3 on)
    stream_var: OverSeeds | None = field(default=None, metadata=meta(omit_none=True))
    stream_growth: StreamGrowth | None = field(default=None, metadata=meta(omit_none=True))

    def last(self, key: str = "ffn_out") -> float:
        """The mean gradient norm of the last block's weight `key`."""
        return float(self.grad_norm[key].mean[-1])


@dataclass
class SweepRow:
    """The last block's FFN-output gradient at one depth L per layout, its ratio to the
    baseline's, and Theorem 1's sqrt(L) law."""

    layers: int
    last: dict[str, OverSeeds]  # layout -> (seeds,)
    ratio: dict[str, OverSeeds]  # layout -> layout / baseline, per seed (baseline left out)
    # layout -> sqrt(L / L0) * its ratio at L0 (the smallest depth run), per seed
    expected: dict[str, OverSeeds]


@dataclass
class PlacementResult(Document):
    """Every run of one `lninspect placement` call."""

    SCHEMAS: ClassVar[tuple[str, ...]] = PLACEMENT_SCHEMAS[1:]  # schema 2 is upgraded first

    config: PlacementConfig
    runs: list[PlacementRun]  # at initialization; empty with --train
    sweep: list[SweepRow] = field(default_factory=list)  # one row per depth, increasing L
    # layout -> (seeds,) slope of ln(layout / baseline) against ln L; empty for one depth
    growth_exponent: dict[str, OverSeeds] = field(default_factory=dict)
    training: TrainingResult | None = field(default=None, metadata=meta(omit_none=True))
    notes: list[str] = field(default_factory=list)
    schema: str = PLACEMENT_SCHEMA

    def run(self, layout: str, layers: int) -> PlacementRun:
        """The run of `layout` at depth `layers`."""
        for run in self.runs:
            if run.layout == layout and run.layers == layers:
                return run
        raise KeyError((layout, layers))

    def layouts(self) -> list[str]:
        """The layouts run, in the order asked for (the baseline among them)."""
        return list(self.config.layouts)

    @classmethod
    def upgrade(cls, doc: dict[str, Any]) -> dict[str, Any]:
        """A schema-2 document as schema 3 (upgrade_2); others as they are."""
        if isinstance(doc, dict) and doc.get("schema") == PLACEMENT_SCHEMAS[0]:
            return upgrade_2(doc)
        return doc


def upgrade_2(doc: dict[str, Any]) -> dict[str, Any]:
    """A schema-2 document (pre and post, placement-keyed sweep) as schema 3 (whose fields
    schema 4 reads as they are: it only adds training's)."""
    sweep = [
        {
            "layers": row["layers"],
            "last": {"pre": row["pre"], "post": row["post"]},
            "ratio": {"post": row["ratio"]},
            "expected": {"post": row["expected"]},
        }
        for row in doc.get("sweep", [])
    ]
    growth = doc.get("growth_exponent")
    config = {**doc["config"], "layouts": ["pre", "post"], "baseline": "pre"}
    return {
        **doc,
        "schema": PLACEMENT_SCHEMAS[1],
        "config": config,
        "sweep": sweep,
        "growth_exponent": {} if growth is None else {"post": growth},
    }


def layer_trend(grads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per seed, of (seeds, L) gradient norms: first / last block, and the slope of ln g on l."""
    if grads.shape[1] < 2:
        nan = np.full(len(grads), np.nan)
        return nan, nan
    slopes = np.polyfit(np.arange(grads.shape[1]), np.log(grads).T, 1)[0]  # one fit per seed
    return grads[:, 0] / grads[:, -1], slopes


def sweep_rows(runs: list[PlacementRun], baseline: str) -> list[SweepRow]:
    """One row per depth, in increasing L: the last block's ffn_out gradient of every layout,
    and its ratio to the baseline's, paired by seed."""
    depths = sorted({run.layers for run in runs})
    layouts = list(dict.fromkeys(run.layout for run in runs))
    last = {(r.layout, r.layers): r.grad_norm["ffn_out"].values[:, -1] for r in runs}
    others = [name for name in layouts if name != baseline]
    ratio = {(name, n): last[name, n] / last[baseline, n] for name in others for n in depths}
    return [
        SweepRow(
            layers=n,
            last={name: OverSeeds.of(last[name, n]) for name in layouts},
            ratio={name: OverSeeds.of(ratio[name, n]) for name in others},
            expected={
                name: OverSeeds.of(math.sqrt(n / depths[0]) * ratio[name, depths[0]])
                for name in others
            },
        )
        for n in depths
    ]


def growth_exponent(rows: list[SweepRow]) -> dict[str, OverSeeds]:
    """Per layout and seed, the slope of ln(layout / baseline) against ln L (Theorem 1, post
    against pre: 0.5); empty for one depth."""
    if len(rows) < 2:
        return {}
    depths = np.log([row.layers for row in rows])
    exponents = {}
    for name in rows[0].ratio:
        logs = np.log(np.stack([row.ratio[name].values for row in rows]))  # (depths, seeds)
        exponents[name] = OverSeeds.of(np.polyfit(depths, logs, 1)[0])
    return exponents


def stream_growth(variances: np.ndarray) -> StreamGrowth:
    """Both growth laws of (seeds, L + 1) stream variances, fitted per seed by least squares
    (the geometric one on ln v), each fit's residuals then measured on v itself."""
    depth = np.arange(variances.shape[1], dtype=np.float64)
    rate, log_start = np.polyfit(depth, np.log(variances).T, 1)
    slope, start = np.polyfit(depth, variances.T, 1)
    geometric = np.exp(log_start[:, None] + rate[:, None] * depth)  # (seeds, L + 1)
    linear = start[:, None] + slope[:, None] * depth
    rss_geometric = np.sum((variances - geometric) ** 2, axis=1)
    rss_linear = np.sum((variances - linear) ** 2, axis=1)
    return StreamGrowth(
        rate=OverSeeds.of(rate),
        slope=OverSeeds.of(slope),
        log_rss_ratio=OverSeeds.of(np.log(rss_geometric / rss_linear)),
    )
