"""Figures of a watched training run (`lninspect run --plot`): Figure objects, no pyplot.

Rows and lines follow the model's order (embedding norms, then the blocks, the final norm
last); colours go from dark (first layers) to bright (last) wherever lines share an axes.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import BoundaryNorm, Colormap, LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lninspect.render.figures import figure_of, layer_colours, new_figure
from lninspect.render.format import short_names
from lninspect.results.watch import WatchLog
from lninspect.roles import ROLE_LABELS
from lninspect.statistics import INPUT_DENOMINATOR, SUMMARY
from lninspect.trends import (
    JUMP_FACTOR,
    Jump,
    NormSeries,
    losses,
    norm_series,
    record_axis,
    stacked,
)

MAX_ROW_LABELS = 40
LINE_ROLES = ("attn", "attn+mlp", "mlp", "qk")  # the block roles that get a panel of their own


def _no_data(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, what, ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_input_denominator_heatmap(log: WatchLog, ax: Axes | None = None) -> Axes:
    """Median input std (rms for RMSNorm) of every norm (rows, model order) at every recorded
    step (columns)."""
    ax = ax or new_figure(10, 6).add_subplot()
    series = norm_series(log)
    grid = stacked(series, INPUT_DENOMINATOR)
    positive = grid[np.isfinite(grid) & (grid > 0)]
    if not positive.size:
        _no_data(ax, "no finite input std (rms) in the log")
        return ax
    steps, xlabel = record_axis(log)
    edges = _edges(steps)
    image = ax.pcolormesh(
        edges,
        np.arange(len(series) + 1) - 0.5,
        np.where(grid > 0, grid, np.nan),
        norm=LogNorm(vmin=positive.min(), vmax=positive.max()),
        cmap="magma",
        shading="flat",
    )
    ax.set_ylim(len(series) - 0.5, -0.5)  # the first layers on top
    names = short_names([s.name for s in series])
    every = max(1, int(np.ceil(len(series) / MAX_ROW_LABELS)))
    ax.set_yticks(range(0, len(series), every), names[::every], fontsize="small")
    ax.set_xlabel(xlabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    title = SUMMARY[INPUT_DENOMINATOR].title  # std, or rms for an RMSNorm
    figure_of(ax).colorbar(image, ax=ax, label=f"{title} over the step's tokens (log)")
    return ax


def _edges(steps: np.ndarray) -> np.ndarray:
    """Cell edges around each recorded step (half-way to the neighbours)."""
    if steps.size == 1:
        return np.array([steps[0] - 0.5, steps[0] + 0.5])
    middle = (steps[1:] + steps[:-1]) / 2
    return np.concatenate(
        [[steps[0] - (middle[0] - steps[0])], middle, [steps[-1] + (steps[-1] - middle[-1])]]
    )


def _panels(series: list[NormSeries]) -> list[tuple[str, list[NormSeries]]]:
    """(title, norms): one panel per block role present, then the norms outside the blocks."""
    panels = [(role, [s for s in series if s.role == role]) for role in LINE_ROLES]
    rest = [s for s in series if s.role not in LINE_ROLES]
    named = [(f"{ROLE_LABELS.get(role, role)} ({role})", rows) for role, rows in panels]
    return [(t, rows) for t, rows in (*named, ("outside the blocks", rest)) if rows]


MAX_LEGEND_LAYERS = 8  # up to this many layers: a legend entry per line, no colour bar


def _layer_scale(series: list[NormSeries]) -> tuple[Colormap, BoundaryNorm | None]:
    """One colour per integer layer (a bin around each), not a continuous scale."""
    layers = sorted({s.layer for s in series if s.layer is not None})
    if not layers:
        return colormaps["viridis"], None
    return layer_colours("viridis", layers[0], layers[-1])


def plot_series_panels(
    log: WatchLog, key: str, ylabel: str, fig: Figure | None = None, dims: bool = False
) -> Figure:
    """One panel per role: a line per norm over the recorded steps, coloured by layer, log y.

    `dims`: write the dimension at the peak of the largest few lines of each panel.
    """
    figure = fig or new_figure(10, 7)
    series = norm_series(log)
    panels = _panels(series)
    if not panels:
        _no_data(figure.add_subplot(), "no norm in the log")
        return figure
    axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    (steps, xlabel), (cmap, scale) = record_axis(log), _layer_scale(series)
    layers = {s.layer for s in series if s.layer is not None}
    few = len(layers) <= MAX_LEGEND_LAYERS  # each line in the legend, no colour bar
    for ax, (title, rows) in zip(axes, panels, strict=True):
        styles = iter(("-", "--", ":", "-."))
        drawn = []
        for s in rows:
            values = s.values[key]
            keep = np.isfinite(values) & (values > 0)
            if not keep.any():
                continue
            colour = "black" if s.layer is None or scale is None else cmap(scale(s.layer))
            outside = colour == "black"
            ax.plot(
                steps[keep],
                values[keep],
                color=colour,
                linestyle=next(styles, "-") if outside else "-",
                label=short_names([s.name])[0] if outside or few else f"layer {s.layer}",
                marker="." if keep.sum() < 3 else None,
            )
            drawn.append(s)
        if not drawn:
            _no_data(ax, f"no finite {SUMMARY[key].label} at these norms")
        else:
            ax.set_yscale("log")
            if dims:
                _mark_dims(ax, drawn, steps)
            names = [s.name for s in drawn if s.layer is None]
            if len(names) == 1 and len(drawn) == 1:  # named in the title: no legend
                title = f"{title}: {short_names(names)[0]}"
            elif few or names:
                ax.legend(fontsize="small", loc="best", ncols=2 if len(drawn) > 4 else 1)
        ax.set_title(title, fontsize="medium", loc="left")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[-1].set_xlabel(xlabel)
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    if scale is not None and not few:
        bar = figure.colorbar(ScalarMappable(norm=scale, cmap=cmap), ax=list(axes), label="layer")
        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()
    return figure


ANNOTATED = 1


def _mark_dims(ax: Axes, rows: list[NormSeries], steps: np.ndarray) -> None:
    """Name the dimension at the peak of the ANNOTATED norms with the largest |x| in a panel."""
    peaks = sorted(rows, key=lambda s: -np.nanmax(s.values["absmax"]))[:ANNOTATED]
    low, high = float(steps.min()), float(steps.max())
    for s in peaks:
        i = int(np.nanargmax(s.values["absmax"]))
        right = high > low and (steps[i] - low) / (high - low) > 0.5  # text towards the middle
        ax.annotate(
            f"{short_names([s.name])[0]}: dim {s.absmax_dim[i]}",
            (steps[i], s.values["absmax"][i]),
            textcoords="offset points",
            xytext=(-10 if right else 10, -26),  # below the peak, inside the axes
            ha="right" if right else "left",
            fontsize="small",
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85},
            arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.8},
        )


def plot_loss(log: WatchLog, found: list[Jump], ax: Axes | None = None) -> Axes:
    """The recorded loss over steps, with the steps where a statistic jumped marked."""
    ax = ax or new_figure(10, 4.5).add_subplot()
    (steps, xlabel), loss = record_axis(log), losses(log)
    keep = np.isfinite(loss)
    if not keep.any():
        _no_data(ax, "no loss in the log (pass loss= to step())")
        return ax
    ax.plot(
        steps[keep],
        loss[keep],
        color="tab:blue",
        marker="." if keep.sum() < 30 else None,
        label="loss at the recorded steps",
    )
    counts = Counter(j.record for j in found)  # jumps per record
    marked = [int(steps[i]) for i in sorted(counts)]
    if marked:
        at = np.interp(marked, steps[keep], loss[keep])
        sizes = [20 + 12 * min(counts[i], 10) for i in sorted(counts)]
        ax.scatter(
            marked,
            at,
            s=sizes,
            color="tab:red",
            zorder=3,
            label=f"a norm statistic jumped (×{JUMP_FACTOR:g}; size: how many)",
        )
        for s in marked:
            ax.axvline(s, color="tab:red", alpha=0.15, linewidth=1)
    else:  # bottom left: the loss starts high on the left and falls, the legend is top right
        ax.text(
            0.01,
            0.03,
            f"no statistic jumped by ×{JUMP_FACTOR:g} (docs/training.md)",
            ha="left",
            va="bottom",
            transform=ax.transAxes,
            color="grey",
        )
    ax.set_xlabel(xlabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(
        f"loss ({'probe' if {r.mode for r in log.records} == {'probe'} else 'training step'})"
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="upper right" if not marked else "best")
    return ax
