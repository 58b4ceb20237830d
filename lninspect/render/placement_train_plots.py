"""Figures of `lninspect placement --train` (matplotlib Figure objects; no torch).

- placement-train-loss.png: the held-out loss of every run of the grid, one panel per
  learning rate (mean over seeds, 95% band; the training loss faint behind it).
- placement-train-grads.png: |dL/dW^{2,l}| per block at a few steps, every layout trained,
  at the largest learning rate, with and without warm-up.
- placement-train-stream.png: the median std (rms) of every norm's input through depth at the
  recorded steps, one panel per layout (three to a row), at the largest learning rate.
- placement-train-stream-var.png: the residual stream's variance by depth at the first and
  the last recorded step, every layout trained, at the largest learning rate.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize, to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from lninspect.placement.layouts import FINAL, LAYOUTS
from lninspect.render.figures import allow_math, new_figure, plain_ticks, save_figure
from lninspect.render.placement_tables import describe, describe_training
from lninspect.results.placement import PlacementResult
from lninspect.results.placement_training import TrainingResult, TrainRun, diverged_count
from lninspect.results.seeds import OverSeeds
from lninspect.statistics import denominator_key

LOSS_PNG = "placement-train-loss.png"
GRADS_PNG = "placement-train-grads.png"
STREAM_PNG = "placement-train-stream.png"
STREAM_VAR_PNG = "placement-train-stream-var.png"
TRAIN_FIGURES = (LOSS_PNG, GRADS_PNG, STREAM_PNG, STREAM_VAR_PNG)
PANELS_PER_ROW = 3  # of the stream figure: six layouts make two rows, not one 28-inch row
SMOOTH = 10  # the training loss is drawn as a running mean over this many steps
GRAD_WINDOW = 5  # the gradient profiles average this many steps from the one named
MIN_WIDTH = 10.0  # inches: room for the three title lines


def save_training_figures(result: PlacementResult, folder: Path) -> list[Path]:
    """Draw the training figures into `folder`; return the paths written."""
    figures = [
        loss_figure(result),
        grads_figure(result),
        stream_figure(result),
        stream_var_figure(result),
    ]
    return [save_figure(f, folder / name) for f, name in zip(figures, TRAIN_FIGURES, strict=True)]


def training_of(result: PlacementResult) -> TrainingResult:
    if result.training is None:
        raise ValueError("the result holds no training runs (run with --train)")
    return result.training


def training_suptitle(figure: Figure, title: str, result: PlacementResult) -> None:
    figure.suptitle(f"{title}\n{describe(result.config)}\n{describe_training(result)}", fontsize=10)


# Loss curves --------------------------------------------------------------------------------


def loss_figure(result: PlacementResult) -> Figure:
    """One panel per learning rate: the held-out loss of each placement and warm-up."""
    training = training_of(result)
    lrs = sorted({run.lr for run in training.runs})
    figure = new_figure(max(MIN_WIDTH, 5.2 * len(lrs)), 5.6)
    axes = figure.subplots(1, len(lrs), sharey=True, squeeze=False)[0]
    for ax, lr in zip(axes, lrs, strict=True):
        plot_losses(training, lr, ax)
    for ax in axes[1:]:
        ax.set_ylabel("")
    labels = ", ".join(dict.fromkeys(LAYOUTS[run.layout].label for run in training.runs))
    training_suptitle(figure, f"Held-out loss of {labels}, with and without warm-up", result)
    return figure


def plot_losses(training: TrainingResult, lr: float, ax: Axes | None = None) -> Axes:
    """The runs at learning rate `lr`: held-out loss (mean, 95% band), training loss faint."""
    ax = ax or new_figure().subplots()
    runs = [run for run in training.runs if run.lr == lr]
    for run in runs:
        style: dict[str, Any] = {
            "color": LAYOUTS[run.layout].color,
            "linestyle": "-" if run.warmup else "--",
        }
        steps = np.arange(run.train_loss.shape[1])
        faint = _running_mean(_nanmean(run.train_loss))  # the mean over the seeds
        ax.plot(steps, faint, alpha=0.25, lw=1, label="_training", **style)
        held = OverSeeds.of(run.held_out_loss)
        ax.plot(run.held_out_steps, held.mean, lw=2, label=run_label(run), **style)
        ax.fill_between(
            run.held_out_steps, held.low, held.high, color=style["color"], alpha=0.15, lw=0
        )
        _mark_divergence(ax, run)
    warmups = sorted({run.warmup for run in runs if run.warmup})
    for warmup in warmups:
        ax.axvline(warmup, color="0.5", lw=0.8, linestyle=":", label=f"end of warm-up ({warmup})")
    ax.axhline(training.target_loss, color="k", lw=0.8, linestyle="-.", label="target loss")
    ax.axhline(training.unigram_loss, color="0.6", lw=0.8, label="unigram frequencies")
    _loss_limits(ax, training)
    ax.set_xlabel("step (optimizer updates)")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(f"peak learning rate {lr:g}", fontsize=10)
    ax.grid(True, alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    handles += [
        Line2D(
            [],
            [],
            color="0.45",
            alpha=0.5,
            lw=1,
            label=f"training loss (mean of seeds, {SMOOTH}-step avg.)",
        ),
        Patch(color="0.45", alpha=0.25, label="95% interval over seeds"),
    ]
    # below the axes: the training loss runs anywhere under 8.0, and early runs fall fast
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13),
              ncols=2, frameon=False)  # fmt: skip
    return ax


def run_label(run: TrainRun) -> str:
    warm = f"warm-up {run.warmup}" if run.warmup else "no warm-up"
    diverged = diverged_count(run)
    tail = f" (diverged: {diverged}/{len(run.diverged_at)})" if diverged else ""
    return f"{LAYOUTS[run.layout].label}, {warm}{tail}"


def _mark_divergence(ax: Axes, run: TrainRun) -> None:
    """A cross where each diverged seed stopped, at the top of the plot."""
    for step in run.diverged_at:
        if step is not None:
            ax.plot(
                [step], [0.98], marker="X", markersize=9, color=LAYOUTS[run.layout].color,
                transform=ax.get_xaxis_transform(), clip_on=False, linestyle="none",
            )  # fmt: skip


def _loss_limits(ax: Axes, training: TrainingResult) -> None:
    """From a little below the best loss to a little above the loss at step 0."""
    held = np.concatenate([run.held_out_loss.ravel() for run in training.runs])
    low = min(np.nanmin(held), training.unigram_loss) if np.isfinite(held).any() else 0.0
    start = np.nanmax([run.held_out_loss[:, 0] for run in training.runs])
    ax.set_ylim(low - 0.2, start + 0.6)


def _running_mean(values: np.ndarray, width: int = SMOOTH) -> np.ndarray:
    """The mean of the last `width` values at each step (fewer at the start)."""
    sums = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), width)
    return (sums[1:] - sums[np.arange(len(values)) + 1 - counts]) / counts


def _nanmean(values: np.ndarray, axis: int = 0) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


# Per-layer gradients -------------------------------------------------------------------------


def focus_runs(training: TrainingResult) -> list[TrainRun]:
    """The runs at the largest learning rate, with warm-up first: where the effect should be."""
    lr = max(run.lr for run in training.runs)
    return sorted(
        (run for run in training.runs if run.lr == lr),
        key=lambda r: (-r.warmup, list(LAYOUTS).index(r.layout)),
    )


def grads_figure(result: PlacementResult) -> Figure:
    """|dL/dW^{2,l}| per block at a few steps; one panel per warm-up, both placements."""
    training = training_of(result)
    runs = focus_runs(training)
    warmups = sorted({run.warmup for run in runs}, reverse=True)
    figure = new_figure(max(MIN_WIDTH, 5.6 * len(warmups)), 5.2)
    axes = figure.subplots(1, len(warmups), sharey=True, squeeze=False)[0]
    for ax, warmup in zip(axes, warmups, strict=True):
        plot_layer_grads([run for run in runs if run.warmup == warmup], training, ax)
    training_suptitle(
        figure,
        f"Gradient of the FFN output weight per block during training, lr {runs[0].lr:g}",
        result,
    )
    return figure


def grad_steps(training: TrainingResult, warmup: int) -> list[int]:
    """The steps the gradient profiles are drawn at: the start, the warm-up's end, the end."""
    steps = training.config.steps
    picks = [0, steps // 10, warmup, steps // 2, steps - GRAD_WINDOW]
    return sorted({min(max(p, 0), steps - 1) for p in picks if p < steps})


def plot_layer_grads(
    runs: list[TrainRun], training: TrainingResult, ax: Axes | None = None
) -> Axes:
    """Both placements' per-block |dL/dW^{2,l}| (mean over seeds and GRAD_WINDOW steps)."""
    ax = ax or new_figure().subplots()
    warmup = runs[0].warmup
    steps = grad_steps(training, warmup)
    shades = np.linspace(0.35, 1.0, len(steps))
    for run in runs:
        layout = LAYOUTS[run.layout]
        grads = run.layer_grad_norm["ffn_out"]  # (seeds, steps, L)
        for step, shade in zip(steps, shades, strict=True):
            window = grads[:, step : step + GRAD_WINDOW]
            profile = _nanmean(window.reshape(-1, window.shape[-1]))
            if not np.isfinite(profile).any():
                continue
            ax.plot(
                np.arange(len(profile)), profile, color=_shade(layout.color, shade),
                marker=layout.marker, markersize=4, linestyle=layout.linestyle,
                label=f"{layout.label}, step {step}",
            )  # fmt: skip
    ax.set_yscale("log")
    plain_ticks(ax)
    ax.set_xlabel("block l (0 = next to the embeddings)")
    allow_math(ax.set_ylabel(r"$\|\partial\,\mathrm{loss}/\partial W^{2,\ell}\|_F$"))
    warm = f"warm-up {warmup} steps" if warmup else "no warm-up"
    ax.set_title(f"{warm}: mean over seeds and steps s … s+{GRAD_WINDOW - 1}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="best")
    return ax


# The residual stream ------------------------------------------------------------------------


def stream_figure(result: PlacementResult) -> Figure:
    """The std of every norm's input through depth, coloured by step; a panel per layout
    (PANELS_PER_ROW to a row), the rows of each warm-up together."""
    training = training_of(result)
    runs = focus_runs(training)
    warmups = sorted({run.warmup for run in runs}, reverse=True)
    layouts = list(dict.fromkeys(run.layout for run in runs))
    columns = min(PANELS_PER_ROW, len(layouts))
    per_warmup = math.ceil(len(layouts) / columns)
    rows = per_warmup * len(warmups)
    figure = new_figure(max(MIN_WIDTH, 4.6 * columns), 4.2 * rows + 0.8)
    axes = figure.subplots(rows, columns, sharey=True, squeeze=False).ravel()
    steps = runs[0].stats_steps
    norm = Normalize(vmin=0, vmax=max(int(steps[-1]), 1))
    cells = [
        (w, layout)
        for w in warmups
        for layout in layouts + [""] * (per_warmup * columns - len(layouts))
    ]
    for ax, (warmup, layout) in zip(axes, cells, strict=True):
        if not layout:
            ax.set_axis_off()
            continue
        run = next(r for r in runs if r.warmup == warmup and r.layout == layout)
        plot_stream(run, ax, norm, divisor_of(result, run))
        if ax.get_subplotspec().colspan.start:  # the first column's label serves its row
            ax.set_ylabel("")
    figure.colorbar(
        ScalarMappable(norm=norm, cmap=colormaps["viridis"]), ax=axes, label="step", shrink=0.8
    )
    training_suptitle(
        figure,
        f"The {'/'.join(sorted({divisor_of(result, r) for r in runs}))} of every norm's input "
        f"through depth during training, lr {runs[0].lr:g}",
        result,
    )
    return figure


def divisor_of(result: PlacementResult, run: TrainRun) -> str:
    """What the run's norms divide by: rms under --norm rmsnorm, else std (DyT's module
    is watched as a LayerNorm: its input std)."""
    dyt = LAYOUTS[run.layout].norm == "dyt"
    return "std" if dyt else denominator_key(result.config.norm)


def stream_profile(run: TrainRun) -> tuple[np.ndarray, np.ndarray]:
    """x positions (block l's norms spread over [l, l + 1) in the order the stream meets
    them, ln_f at L) and (strides, norms) mean input std over the seeds, in that order."""
    block_norms = LAYOUTS[run.layout].block_norms()
    layers = run.input_denominator[block_norms[0]].shape[2]
    means = [_nanmean(run.input_denominator[key]) for key in block_norms]  # each (strides, L)
    columns = np.stack(means, axis=2).reshape(len(means[0]), len(block_norms) * layers)
    x = np.arange(len(block_norms) * layers) / len(block_norms)
    if FINAL in run.input_denominator:
        columns = np.concatenate([columns, _nanmean(run.input_denominator[FINAL])], axis=1)
        x = np.append(x, layers)
    return x, columns


def _shade(color: str, amount: float) -> tuple[float, float, float]:
    """`color` mixed with white: amount 1 is the colour itself, 0 white."""
    rgb = np.asarray(to_rgb(color))
    r, g, b = 1 - amount * (1 - rgb)
    return float(r), float(g), float(b)


def plot_stream(
    run: TrainRun, ax: Axes | None = None, norm: Normalize | None = None, divisor: str = "std"
) -> Axes:
    """One line per captured step: the divisor (std, or rms for an RMSNorm) at every norm's
    input, through depth."""
    ax = ax or new_figure().subplots()
    x, profile = stream_profile(run)
    norm = norm or Normalize(vmin=0, vmax=max(int(run.stats_steps[-1]), 1))
    for step, values in zip(run.stats_steps, profile, strict=True):
        if np.isfinite(values).any():
            ax.plot(x, values, color=colormaps["viridis"](norm(step)), lw=1.2, marker=".")
    ax.set_yscale("log")
    plain_ticks(ax)
    final = ", ln_f at L" if FINAL in run.input_denominator else ""
    ax.set_xlabel(f"block l (its norms in order over [l, l + 1){final})")
    ax.set_ylabel(f"median per-token {divisor} of the norm's input")
    warm = f"warm-up {run.warmup}" if run.warmup else "no warm-up"
    diverged = diverged_count(run)
    tail = f", diverged {diverged}/{len(run.diverged_at)}" if diverged else ""
    ax.set_title(f"{LAYOUTS[run.layout].label}, {warm}{tail}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    return ax


def stream_var_figure(result: PlacementResult) -> Figure:
    """The residual stream's variance by depth, first and last recorded step, a panel per
    warm-up, every layout trained (Peri-LN's claim, in training)."""
    title = "The residual stream's variance by depth during training"
    return per_warmup_figure(result, title, plot_stream_var_steps)


def per_warmup_figure(
    result: PlacementResult, title: str, plot: Callable[[list[TrainRun], Axes], Axes]
) -> Figure:
    """A panel per warm-up, drawn by `plot` from the runs of every layout at the largest
    learning rate (focus_runs), sharing the y axis; `title`, the lr and the set-up above."""
    runs = focus_runs(training_of(result))
    warmups = sorted({run.warmup for run in runs}, reverse=True)
    figure = new_figure(max(MIN_WIDTH, 5.6 * len(warmups)), 5.6)
    axes = figure.subplots(1, len(warmups), sharey=True, squeeze=False)[0]
    for ax, warmup in zip(axes, warmups, strict=True):
        plot([run for run in runs if run.warmup == warmup], ax)
    training_suptitle(figure, f"{title}, lr {runs[0].lr:g}", result)
    return figure


def plot_stream_var_steps(runs: list[TrainRun], ax: Axes | None = None) -> Axes:
    """Per layout: the stream's variance after each block (mean over seeds), at the first
    recorded step (thin) and the last (thick), or a note where it was not recorded."""
    ax = ax or new_figure().subplots()
    recorded = [run for run in runs if run.stream_var is not None]
    if not recorded:
        ax.text(0.5, 0.5, "not recorded (a placement/3 document)", ha="center",
                va="center", transform=ax.transAxes)  # fmt: skip
        ax.set_axis_off()
        return ax
    first, last = int(recorded[0].stats_steps[0]), int(recorded[0].stats_steps[-1])
    for run in recorded:
        assert run.stream_var is not None
        layout = LAYOUTS[run.layout]
        mean = _nanmean(run.stream_var)  # (strides, L + 1)
        depth = np.arange(mean.shape[1])
        style: dict[str, Any] = {"color": layout.color, "linestyle": layout.linestyle}
        ax.plot(depth, mean[0], lw=1, alpha=0.45, label="_first", **style)
        ax.plot(
            depth, mean[-1], lw=2, marker=layout.marker, markersize=4, label=run_label(run), **style
        )
    ax.set_yscale("log")
    plain_ticks(ax)
    ax.set_xlabel("l: blocks the residual stream has passed (0 = the embeddings)")
    ax.set_ylabel("variance over d (mean over tokens, seeds)")
    warm = f"warm-up {runs[0].warmup}" if runs[0].warmup else "no warm-up"
    ax.set_title(f"{warm}: thick at step {last}, thin at step {first}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncols=2,
              frameon=False)  # fmt: skip
    return ax
