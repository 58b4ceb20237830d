"""Figures of the dimensions that stand out: the outlier dimensions through depth, the
across-token compression of the top spike's dimension and the spike census heatmap
(Matplotlib Figures, no pyplot, no torch). Each says so inside itself when there is no spike.
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from lninspect.derived import compression_by_norm, largest_spike, top_dimension
from lninspect.dimensions import census_rows, dimension_scores, outlier_dimensions, spikes_by_dim
from lninspect.render.figures import legend_below, new_figure
from lninspect.render.format import short_names
from lninspect.render.spike_plots import (
    log_ticks,
    no_spike,
    norm_axis,
    only_message,
    sparse_log_ticks,
)
from lninspect.results import StatsResult

# Outlier dimensions --------------------------------------------------------------------------


def plot_outlier_dimensions(result: StatsResult, fig: Figure | None = None) -> Figure:
    """Per norm, how far the outlier dimensions' mean |x_j| (left) and |y_j| (right) stand
    above the other dimensions: (mean_j - mean over j) / sd over j, with the rule's k."""
    fig = fig or new_figure(12, 5)
    measured = [n for n in result.norms if n.dimensions is not None and n.reads == "residual"]
    if not measured:
        only_message(fig, result)
        return fig
    axes = fig.subplots(1, 2, sharey=True)
    k = measured[0].dimensions.k if measured[0].dimensions else 3.0
    sides = {side: [j for j, _, _ in outlier_dimensions(result, side)] for side in ("in", "out")}
    colour = {j: f"C{i}" for i, j in enumerate(dict.fromkeys(sides["in"] + sides["out"]))}
    for ax, side, what in zip(axes, sides, ("input |x_j|", "output |y_j|"), strict=True):
        xs = np.arange(len(measured))
        scores = dimension_scores(measured, side)  # (norms, d)
        for j in sides[side]:  # a dimension has the same colour in both panels
            ax.plot(xs, scores[:, j], "o-", markersize=3, label=f"dim {j}", color=colour[j])
        ax.axhline(k, color="black", linestyle="--", linewidth=1, label=f"k = {k:g}")
        ax.set_title(f"{what}: the dimensions that are outliers at most norms", fontsize=10)
        norm_axis(ax, short_names([n.name for n in measured]))
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("mean over tokens, as z over dims")
    legend_below(fig, axes)  # inside, it would cover the curves of the first norms
    return fig


# Across-token compression -------------------------------------------------------------------


def plot_compression(result: StatsResult, ax: Axes | None = None) -> Axes:
    """The top dimension's max / median over tokens of |x| and |y| at each norm that
    measured it: how much per-token division flattens it across tokens."""
    ax = ax or new_figure(11, 6).add_subplot()
    dim = top_dimension(result) if largest_spike(result) is not None else None
    rows = compression_by_norm(result, dim) if dim is not None else []
    if not rows:
        ax.set_axis_off()
        no_spike(ax, result, f"dim {dim} was not measured across tokens")
        return ax
    names = short_names([n.name for n, _, _ in rows])
    xs = np.arange(len(rows))
    ax.plot(xs, [r[1] for r in rows], "o-", color="#1f77b4", label="before the norm: |x|")
    ax.plot(xs, [r[2] for r in rows], "s--", color="#d62728", label="after the norm: |y|")
    ax.axhline(1, color="grey", linewidth=1)
    ax.set_yscale("log")
    log_ticks(ax, "y")
    ax.set_ylabel(f"dim {dim}: max over tokens / median over tokens (log)")
    norm_axis(ax, names)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))  # off the curves
    ax.grid(True, which="both", alpha=0.3)
    return ax


def compression_title(result: StatsResult) -> str:
    """What the compression figure shows, read from its numbers: the dimension only when it
    is a spike's, and "compresses" / "expands" where max/median of |y| is below / above |x|'s."""
    dim = top_dimension(result) if largest_spike(result) is not None else None
    if dim is None:
        return "Across-token compression: no spike to follow"
    rows = compression_by_norm(result, dim)
    if not rows:
        return f"Across-token compression: dim {dim} was not measured across tokens"
    less = sum(after < before for _, before, after in rows)
    more = sum(after > before for _, before, after in rows)
    head = f"Across tokens, per-token division of the largest spike's dim {dim} (residual stream)"
    if less == len(rows):
        return f"{head}: compresses it at all {len(rows)} norms"
    if more == len(rows):
        return f"{head}: expands it at all {len(rows)} norms"
    return f"{head}: compresses it at {less} of {len(rows)} norms, expands it at {more}"


# Census heatmap -----------------------------------------------------------------------------


def plot_census(result: StatsResult, ax: Axes | None = None) -> Axes:
    """Spikes per dimension (rows: the dims that spike most) and norm (columns), log colours."""
    ax = ax or new_figure(11, 6).add_subplot()
    rows = census_rows(result, limit=12)
    norms = [n for n in result.norms if n.census is not None and n.reads == "residual"]
    if not rows or not norms:
        ax.set_axis_off()
        no_spike(ax, result, "no census in this result")
        return ax
    grid = np.full((len(rows), len(norms)), np.nan)
    for j, norm in enumerate(norms):
        counts = spikes_by_dim(norm)
        for i, row in enumerate(rows):
            grid[i, j] = counts.get(row.dim, np.nan)
    most = max(float(np.nanmax(grid)), 2)
    scale = LogNorm(vmin=1, vmax=most)
    image = ax.imshow(grid, aspect="auto", interpolation="nearest", cmap="magma_r", norm=scale)
    ax.set_yticks(range(len(rows)), [f"dim {r.dim}" for r in rows], fontsize=8)
    norm_axis(ax, short_names([n.name for n in norms]))
    ax.set_xlim(-0.5, len(norms) - 0.5)
    if grid.size <= 400:  # small enough to print the counts
        for (i, j), value in np.ndenumerate(grid):
            if np.isfinite(value):
                dark = scale(value) > 0.55
                ax.text(
                    j,
                    i,
                    f"{value:.0f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if dark else "black",
                )
    bar = ax.figure.colorbar(image, ax=ax, label="spikes (log; blank: none)", pad=0.01)
    bar.set_ticks(sparse_log_ticks(1, most), labels=None)
    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    bar.ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("dimension")
    return ax
