"""Figures of statistics results: std and mean heatmaps, growth with depth (the spike
figures live in lninspect.render.spike_plots and are saved with these).

Matplotlib Figure objects built directly (no pyplot); no torch. Heatmaps show sequence 0;
per-layer curves use every token. Norms outside the blocks sit left (embed) or right
(final, other) of the layers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm, Normalize, SymLogNorm
from matplotlib.figure import Figure

from lninspect.render.figures import (
    figure_of,
    mark_standout_tokens,
    new_figure,
    save_titled,
    say_nothing_to_show,
)
from lninspect.render.format import figure_subtitle, short_names
from lninspect.render.spike_plots import SPIKE_FIGURES, save_spike_figures
from lninspect.results import NormStats, StatsResult
from lninspect.roles import ROLE_LABELS
from lninspect.summary import (
    Values,
    has_order,
    layer_positions,
    layer_quartiles,
    norms_of_role,
    residual_growth,
    roles_present,
    token_row,
)

STD_HEATMAP = "stats-std-heatmap.png"
MEAN_HEATMAP = "stats-mean-heatmap.png"
STD_PER_LAYER = "stats-std-per-layer.png"
STATS_FIGURES = (STD_HEATMAP, MEAN_HEATMAP, STD_PER_LAYER, *SPIKE_FIGURES)
ROLE_MARKERS = {
    "embed": "v",
    "attn": "o",
    "attn+mlp": "D",
    "mlp": "s",
    "qk": "P",
    "final": "^",
    "other": "X",
}
MAX_TOKEN_LABELS = 64  # more tokens than this: position ticks instead of the token texts
MAX_ROW_TICKS = 16


# Shared helpers -----------------------------------------------------------------------------


def set_layer_ticks(ax: Axes, result: StatsResult) -> None:
    """Layer numbers on the x axis, `emb` / `final` where norms outside the blocks sit."""
    where = layer_positions(result)
    ticks = sorted(set(where.values()))
    step = max(1, math.ceil(len(ticks) / 24))
    outside = {
        where[n.name]: ("emb" if n.role == "embed" else "final")
        for n in result.norms
        if n.layer is None
    }
    shown = [t for i, t in enumerate(ticks) if i % step == 0 or t in outside]
    ax.set_xticks(shown, [outside.get(t, str(int(t))) for t in shown])
    ax.set_xlabel("layer")


def plot_layer_bands(result: StatsResult, values: Values, ax: Axes | None = None) -> Axes:
    """Median per layer with an interquartile band, one series per role."""
    ax = ax or new_figure().add_subplot()
    cycle = [colormaps["tab10"](i) for i in range(10)]
    for i, role in enumerate(roles_present(result)):
        xs, qs = layer_quartiles(result, role, values)
        if not xs.size:
            continue
        style: dict[str, Any] = {
            "color": cycle[i % len(cycle)],
            "marker": ROLE_MARKERS.get(role, "o"),
        }
        label = f"{ROLE_LABELS.get(role, role)} ({role})"
        if xs.size > 1:
            ax.plot(xs, qs[:, 1], label=label, markersize=4, **style)
            ax.fill_between(xs, qs[:, 0], qs[:, 2], color=style["color"], alpha=0.2, linewidth=0)
        else:  # a single norm (final, embed): a point with its interquartile bar
            ax.errorbar(
                xs,
                qs[:, 1],
                yerr=[qs[:, 1] - qs[:, 0], qs[:, 2] - qs[:, 1]],
                linestyle="none",
                capsize=4,
                markersize=7,
                label=label,
                **style,
            )
    set_layer_ticks(ax, result)
    ax.grid(True, which="both", alpha=0.3)
    return ax


# Heatmaps -----------------------------------------------------------------------------------


def heatmap_panels(result: StatsResult) -> list[tuple[str, list[NormStats]]]:
    """(title, norms) per panel: attention, MLP, then every other norm; empty panels dropped."""
    inside = ("attn", "mlp")
    where = layer_positions(result)
    rest = sorted((n for n in result.norms if n.role not in inside), key=lambda n: where[n.name])
    panels = [(role, norms_of_role(result, role)) for role in inside] + [("final / other", rest)]
    return [(title, rows) for title, rows in panels if rows]


def _row_labels(result: StatsResult, title: str, rows: list[NormStats]) -> tuple[str, list[str]]:
    """The panel's y label and one label per row: layers for attn / mlp, names otherwise."""
    if title in ("attn", "mlp") and all(n.layer is not None for n in rows):
        leaf = rows[0].name.rsplit(".", 1)[-1]
        return f"{leaf} ({title})\nlayer", [str(n.layer) for n in rows]
    names = dict(
        zip(
            (n.name for n in result.norms), short_names([n.name for n in result.norms]), strict=True
        )
    )
    return title, [names[n.name] for n in rows]


def _token_ticks(ax: Axes, result: StatsResult, count: int) -> None:
    """Token texts under the last panel when they fit, else positions."""
    pieces = result.input.tokens[0] if result.input.tokens else []
    if count <= MAX_TOKEN_LABELS and len(pieces) >= count:
        labels = [p.strip().replace("\n", "\\n") or "·" for p in pieces[:count]]
        ax.set_xticks(range(count), labels, rotation=90, fontsize=7)
        ax.set_xlabel("token (sequence 0)")
    else:
        ax.set_xlabel("token position (sequence 0)")


def draw_heatmap(
    result: StatsResult, figure: Figure, values: Values, scale: Normalize, cmap: str, label: str
) -> Figure:
    """Modules x tokens of sequence 0, one panel per role, one shared colour bar."""
    panels = heatmap_panels(result)
    heights = [max(len(rows), 1.5) for _, rows in panels]
    axes = figure.subplots(
        len(panels), 1, sharex=True, gridspec_kw={"height_ratios": heights}, squeeze=False
    )[:, 0]
    count, shown, grids = 0, False, []
    for ax, (title, rows) in zip(axes, panels, strict=True):
        grid = _grid([_row(values, n) for n in rows])  # (modules, tokens)
        grids.append(grid)
        count = max(count, grid.shape[1])
        image = ax.imshow(grid, aspect="auto", interpolation="nearest", norm=scale, cmap=cmap)
        shown = shown or bool(np.isfinite(grid).any())
        if not np.isfinite(grid).any():
            say_nothing_to_show(ax, "nothing finite to show: every token's value is NaN or Inf")
        ylabel, labels = _row_labels(result, title, rows)
        step = max(1, math.ceil(len(rows) / MAX_ROW_TICKS))
        ax.set_yticks(range(0, len(rows), step), labels[::step], fontsize=8)
        ax.set_ylabel(ylabel)
    _token_ticks(axes[-1], result, count)
    pieces = result.input.tokens[0] if result.input.tokens else []
    caption = mark_standout_tokens(axes[0], _grid([r for g in grids for r in g]), pieces)
    if caption:
        axes[-1].set_xlabel(f"{axes[-1].get_xlabel()}\n{caption}")
    if not shown:  # no colour bar for a scale that nothing uses
        return figure
    bar = figure.colorbar(image, ax=list(axes), label=label, pad=0.01)
    if isinstance(scale, SymLogNorm):
        bar.set_ticks(symlog_ticks(scale))
    return figure


def _row(values: Values, norm: NormStats) -> np.ndarray:
    """A norm's values for sequence 0, one per token (NaN where it has none)."""
    array = values(norm)
    return token_row(array) if array is not None else np.full(norm.input.mean.shape[-1], np.nan)


def symlog_ticks(scale: SymLogNorm) -> list[float]:
    """0 and ± every power of ten from the linear threshold to the limit."""
    low = math.ceil(math.log10(scale.linthresh))
    high = math.floor(math.log10(scale.vmax if scale.vmax is not None else scale.linthresh))
    powers = [10.0**k for k in range(low, high + 1)]
    return [-p for p in reversed(powers)] + [0.0] + powers


def heatmap_height(result: StatsResult) -> float:
    """Inches for a heatmap of every norm: about 0.22 per row, between 5 and 14."""
    return min(max(2.5 + 0.22 * len(result.norms), 5.0), 14.0)


def _grid(rows: list[np.ndarray]) -> np.ndarray:
    """Stack rows of possibly different lengths, padding with NaN (blank cells)."""
    width = max(len(r) for r in rows)
    return np.stack([np.pad(r, (0, width - len(r)), constant_values=np.nan) for r in rows])


def plot_std_heatmap(result: StatsResult, fig: Figure | None = None) -> Figure:
    """The norm's denominator (std, rms for RMSNorm) per module and token, log colour scale."""
    values = np.concatenate([token_row(n.denominator) for n in result.norms])
    positive = values[np.isfinite(values) & (values > 0)]
    # nothing positive and finite: any valid range (every panel says there is nothing to show)
    low, high = (positive.min(), positive.max()) if positive.size else (1.0, 10.0)
    scale = LogNorm(vmin=low, vmax=high)
    return draw_heatmap(
        result,
        fig or new_figure(11, heatmap_height(result)),
        lambda n: n.denominator,
        scale,
        "viridis",
        "input std of the token (rms for RMSNorm; log)",
    )


def mean_scale(values: np.ndarray) -> Normalize:
    """A diverging scale symmetric about 0: linear, or symmetric-log when |mean| spans decades."""
    size = np.abs(values[np.isfinite(values)])
    top = float(size.max()) if size.size else 1.0
    top = top if top > 0 else 1.0
    typical = float(np.median(size)) if size.size else top
    if typical > 0 and top / typical > 100:
        return SymLogNorm(linthresh=typical, vmin=-top, vmax=top, base=10)
    return Normalize(vmin=-top, vmax=top)


def plot_mean_heatmap(result: StatsResult, fig: Figure | None = None) -> Figure:
    """The mean of the norm's input per module and token, on a diverging scale centred at 0."""
    values = np.concatenate([token_row(n.input.mean) for n in result.norms])
    scale = mean_scale(values)
    kind = "symmetric log" if isinstance(scale, SymLogNorm) else "linear"
    return draw_heatmap(
        result,
        fig or new_figure(11, heatmap_height(result)),
        lambda n: n.input.mean,
        scale,
        "RdBu_r",
        f"input mean of the token over the hidden dims ({kind}, 0 = white)",
    )


# Growth with depth --------------------------------------------------------------------------


def plot_std_per_layer(result: StatsResult, ax: Axes | None = None) -> Axes:
    """Median input std per layer with its interquartile band: the residual stream's growth."""
    ax = plot_layer_bands(result, lambda n: n.denominator, ax)
    if not ax.lines:  # every statistic NaN or Inf
        say_nothing_to_show(ax, "no finite input std to show: every token's is NaN or Inf")
        return ax
    ax.set_yscale("log")
    ax.set_ylabel("input std over the hidden dims (rms for RMSNorm; log)")
    # below the axes, not on them: the curves start anywhere (low at layer 0, high after it)
    ax.legend(
        fontsize="small",
        title="line: median over tokens; band: 25–75%",
        title_fontsize="small",
        loc="upper center",
        bbox_to_anchor=(0.5, -0.14),
        ncols=4,
        frameon=False,
    )
    growth = residual_growth(result)
    if growth is not None:
        first, low, last, high = growth
        ax.text(
            0.99,
            0.03,
            f"median std ×{high / low:.3g} from {first.name} ({low:.3g})\n"
            f"to {last.name} ({high:.3g})",
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize="small",
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.9},
        )
    return ax


# Saving -------------------------------------------------------------------------------------


def save_stats_figures(result: StatsResult, folder: Path) -> list[Path]:
    """Write the statistics figures into `folder`; the spike figures only when captured."""
    growth = figure_of(plot_std_per_layer(result, new_figure(10, 5.5).add_subplot()))
    figures = [
        (plot_std_heatmap(result), "Input std of every norm, per token", STD_HEATMAP),
        (plot_mean_heatmap(result), "Input mean of every norm, per token", MEAN_HEATMAP),
        (growth, "Residual-stream growth with depth: input std per layer", STD_PER_LAYER),
    ]
    paths = save_titled(folder, figure_subtitle(result), figures)
    return paths + (save_spike_figures(result, folder) if has_order(result) else [])
