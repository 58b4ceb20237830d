"""Results of `lninspect placement --train` (no torch): the training runs of the grid.

Step t is the model after t optimizer updates. Per-step arrays have one row per seed and one
column per step t = 0 .. steps - 1 (the loss of the batch that update t + 1 learns from);
held-out losses are at `held_out_steps` (0, every `eval_every`, and `steps`) and the norms'
input denominator (std; rms under RMSNorm) at `stats_steps` (every `stats_every`). After a
run diverged its values are NaN.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from lninspect.placement.config import TrainConfig
from lninspect.placement.layouts import LAYOUTS
from lninspect.results.codec import meta
from lninspect.results.seeds import OverSeeds

BETAS = (0.9, 0.98)  # Adam's, as in the Transformer setting of Xiong et al. (and Vaswani et al.)
EPS = 1e-9
TARGET_FRACTION = 0.1  # the automatic target loss: 10% of the way back from the best to start
LAYER_GRAD_KEYS = ("ffn_out", "block")  # W^{2,l} of the paper, and all of block l's weights
MAP_FITS = ("alpha", "tanh_error", "line_error")  # TrainRun's map_<fit> (lninspect.mapfit)
MAP_AT = ("start", "end")  # the first held-out evaluation (step 0) and the last one
MAP_META = meta(dtype="float64", omit_none=True)  # the fits, as lninspect.mapfit gives them


@dataclass
class TrainRun:
    """One cell of the grid (layout, warm-up, learning rate) over the seeds."""

    layout: str = field(metadata=meta(was="placement"))  # a name of placement.layouts.LAYOUTS
    warmup: int  # steps of linear warm-up; 0: none
    lr: float  # the peak (constant after the warm-up) learning rate
    train_loss: np.ndarray  # (seeds, steps) nats per token, with dropout on
    grad_norm: np.ndarray  # (seeds, steps) global norm of the gradient of every parameter
    # LAYER_GRAD_KEYS -> (seeds, steps, layers): per block, |dL/dW^{2,l}| and |dL/d(block l)|
    layer_grad_norm: dict[str, np.ndarray]
    held_out_steps: np.ndarray = field(metadata=meta(dtype="int64"))  # (evals,)
    held_out_loss: np.ndarray = field(metadata=meta(dtype="float64"))  # (seeds, evals)
    stats_steps: np.ndarray = field(metadata=meta(dtype="int64"))  # (strides,)
    # the layout's norm keys -> (seeds, strides, layers; ln_f: 1): the median over the step's
    # tokens of each norm's input denominator, the watch log's summary: sqrt(var + eps), or
    # the rms for RMSNorm (placement/4 and older: `input_std`; placement/3 and older: the mean)
    input_denominator: dict[str, np.ndarray] = field(metadata=meta(was="input_std"))
    diverged_at: list[int | None]  # per seed: the step at which it diverged, or null
    # (seeds, strides, L + 1) the residual stream's variance over d, mean over the tokens,
    # after the embeddings and after each block (absent before placement/4)
    stream_var: np.ndarray | None = field(default=None, metadata=meta(omit_none=True))
    # input_denominator's keys and shapes: the largest |x| of each norm's input (placement/4 on)
    absmax: dict[str, np.ndarray] | None = field(default=None, metadata=meta(omit_none=True))
    # with --map (placement/5 on; none for DyT, which has no s): each norm's map fitted at the
    # first and the last held-out evaluation, MAP_AT; the keys of absmax -> (seeds, 2, layers)
    map_alpha: dict[str, np.ndarray] | None = field(default=None, metadata=MAP_META)
    map_tanh_error: dict[str, np.ndarray] | None = field(default=None, metadata=MAP_META)
    map_line_error: dict[str, np.ndarray] | None = field(default=None, metadata=MAP_META)
    # filled in by finish_runs:
    final_held_out: OverSeeds | None = None  # (seeds,) held-out loss after the last step
    best_held_out: OverSeeds | None = None  # (seeds,) lowest held-out loss of the run
    steps_to_target: list[int | None] = field(default_factory=list)  # per seed; null: never

    @property
    def ffn_out_last(self) -> np.ndarray:
        """(seeds, steps) |dL/dW^{2,L}|, the last block's FFN output weight (Theorem 1's)."""
        return self.layer_grad_norm["ffn_out"][:, :, -1]

    def map_fit(self, fit: str) -> dict[str, np.ndarray] | None:
        """map_<fit> of MAP_FITS: norm key -> (seeds, len(MAP_AT), layers), or None."""
        found: dict[str, np.ndarray] | None = getattr(self, f"map_{fit}")
        return found

    def label(self) -> str:
        warm = f"warm-up {self.warmup}" if self.warmup else "no warm-up"
        return f"{LAYOUTS[self.layout].label}, {warm}, lr {self.lr:g}"


@dataclass
class TrainingResult:
    """Every training run of `lninspect placement --train`."""

    config: TrainConfig
    runs: list[TrainRun]
    target_loss: float  # the held-out loss that `steps_to_target` counts the steps to
    unigram_loss: float  # held-out loss of the training tokens' frequencies: a reference

    def run(self, layout: str, warmup: int, lr: float) -> TrainRun:
        for run in self.runs:
            if (run.layout, run.warmup, run.lr) == (layout, warmup, lr):
                return run
        raise KeyError((layout, warmup, lr))


def auto_target(runs: list[TrainRun]) -> float:
    """10% of the way from the best held-out loss of any run back to the loss at step 0."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        start = float(np.nanmean([run.held_out_loss[:, 0] for run in runs]))
        best = float(np.nanmin([np.nanmin(run.held_out_loss) for run in runs]))
    return best + TARGET_FRACTION * (start - best)


def finish_runs(runs: list[TrainRun], target: float) -> list[TrainRun]:
    """Fill in each run's final and best held-out loss and its steps to `target`."""
    for run in runs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            best = np.nanmin(run.held_out_loss, axis=1)
        run.final_held_out = OverSeeds.of(run.held_out_loss[:, -1])
        run.best_held_out = OverSeeds.of(best)
        run.steps_to_target = [
            _first_step(run.held_out_steps, losses, target) for losses in run.held_out_loss
        ]
    return runs


def _first_step(steps: np.ndarray, losses: np.ndarray, target: float) -> int | None:
    reached = np.flatnonzero(losses <= target)
    return int(steps[reached[0]]) if len(reached) else None


def diverged_count(run: TrainRun) -> int:
    return sum(step is not None for step in run.diverged_at)


def mean_steps(steps: list[int | None]) -> float:
    """The mean steps to target over the seeds that reached it (NaN when none did)."""
    reached = [s for s in steps if s is not None]
    return sum(reached) / len(reached) if reached else math.nan


def end_absmax(run: TrainRun) -> OverSeeds | None:
    """Per seed, the largest |x| entering a norm that reads the residual stream, at the last
    recorded step (NaN: diverged before it); None: not recorded (placement/3 and older)."""
    if run.absmax is None:
        return None
    keys = LAYOUTS[run.layout].residual_keys()
    peaks = np.stack([run.absmax[key][:, -1, :].max(axis=1) for key in keys], axis=1)
    return OverSeeds.of(peaks.max(axis=1))


def map_ratio(run: TrainRun, key: str) -> np.ndarray | None:
    """(len(MAP_AT), layers): the tanh fit's relative error over the line's for norm `key`,
    mean over the seeds that have it: 1, the map is a line; below 1, an S (None: no --map)."""
    tanh, line = run.map_fit("tanh_error"), run.map_fit("line_error")
    if tanh is None or line is None or key not in tanh:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a seed that diverged: NaN
        return np.nanmean(tanh[key] / line[key], axis=0)


def end_stream_var(run: TrainRun) -> OverSeeds | None:
    """Per seed, the stream's variance after the last block at the last recorded step."""
    return None if run.stream_var is None else OverSeeds.of(run.stream_var[:, -1, -1])
