"""Figures of statistics results: std and mean heatmaps, growth with depth (the spike
figures live in lninspect.render.spike_plots and are saved with these).

Matplotlib Figure objects built directly (no pyplot); no torch. Heatmaps show sequence 0;
per-layer curves use every token. Norms outside the blocks sit left (embed) or right
(final, other) of the layers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm, Normalize, SymLogNorm
from matplotlib.figure import Figure

from lninspect.derived import Values, layer_positions, layer_quartiles, residual_growth
from lninspect.render.figures import (
    mark_standout_tokens,
    new_figure,
    say_nothing_to_show,
)
from lninspect.render.format import short_names
from lninspect.results import NormStats, StatsResult
from lninspect.statistics import denominator_key
from lninspect.streams import Panel, canonical, depth_series, heatmap_panels, token_row

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


def plot_layer_bands(
    result: StatsResult,
    series: list[tuple[str, str, list[NormStats]]],
    values: Values,
    ax: Axes | None = None,
    linestyle: str = "-",
) -> Axes:
    """Median per layer with an interquartile band, one line per (label, role, norms)."""
    ax = ax or new_figure().add_subplot()
    cycle = [colormaps["tab10"](i) for i in range(10)]
    for i, (label, role, norms) in enumerate(series):
        xs, qs = layer_quartiles(result, norms, values)
        if not xs.size:
            continue
        style: dict[str, Any] = {
            "color": cycle[i % len(cycle)],
            "marker": ROLE_MARKERS.get(role, "o"),
        }
        if xs.size > 1:
            ax.plot(xs, qs[:, 1], label=label, markersize=4, linestyle=linestyle, **style)
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


def _lines(result: StatsResult, reads: str) -> list[tuple[str, str, list[NormStats]]]:
    """The depth series of the norms that read `reads`, labelled for a legend."""
    return [
        (f"{group.label} ({leaf})", group.role, norms)
        for group, leaf, norms in depth_series(result, reads)
    ]


# Heatmaps -----------------------------------------------------------------------------------


def row_labels(result: StatsResult, panel: Panel) -> list[str]:
    """One label per row of a panel: layers inside the blocks, names outside."""
    if panel.layered:
        return [str(n.layer) for n in panel.norms]
    names = dict(
        zip(
            (n.name for n in result.norms), short_names([n.name for n in result.norms]), strict=True
        )
    )
    return [names[n.name] for n in panel.norms]


def label_panel(ax: Axes, panel: Panel) -> None:
    """The panel's norms as a title over it (a y label would run into its neighbours')."""
    ax.set_title(panel.title, loc="left", fontsize=9, pad=3)
    ax.set_ylabel("layer" if panel.layered else "")


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
    heights = [max(len(p.norms), 1.5) for p in panels]
    axes = figure.subplots(
        len(panels), 1, sharex=True, gridspec_kw={"height_ratios": heights}, squeeze=False
    )[:, 0]
    count, shown, grids = 0, False, []
    for ax, panel in zip(axes, panels, strict=True):
        rows = panel.norms
        grid = _grid([_row(values, n) for n in rows])  # (modules, tokens)
        grids.append(grid)
        count = max(count, grid.shape[1])
        image = ax.imshow(grid, aspect="auto", interpolation="nearest", norm=scale, cmap=cmap)
        shown = shown or bool(np.isfinite(grid).any())
        if not np.isfinite(grid).any():
            say_nothing_to_show(ax, "nothing finite to show: every token's value is NaN or Inf")
        labels = row_labels(result, panel)
        label_panel(ax, panel)
        step = max(1, math.ceil(len(rows) / MAX_ROW_TICKS))
        ax.set_yticks(range(0, len(rows), step), labels[::step], fontsize=8)
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
    tokens = canonical(norm, norm.input.mean).shape[1]
    return token_row(norm, array) if array is not None else np.full(tokens, np.nan)


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
    values = np.concatenate([token_row(n, n.denominator) for n in result.norms])
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
    values = np.concatenate([token_row(n, n.input.mean) for n in result.norms])
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
    """The residual stream's growth with depth: the median input std (rms) of the norms that
    read the stream, per layer, with its interquartile band over tokens."""
    ax = plot_layer_bands(result, _lines(result, "residual"), lambda n: n.denominator, ax)
    if not ax.lines:
        say_nothing_to_show(ax, _no_residual_line(result))
        return ax
    ax.set_yscale("log")
    ax.set_ylabel(f"input {_denominator(result, 'residual')}\nof the residual stream (log)")
    _side_legend(ax, "line: median over tokens; band: 25–75%")
    growth = residual_growth(result)
    if growth is not None:
        first, low, last, high = growth
        ax.text(
            0.01,
            0.97,
            f"×{high / low:.3g} from layer {first.layer} ({low:.3g}) to {last.layer} ({high:.3g})",
            transform=ax.transAxes,
            ha="left",
            va="top",
            fontsize="small",
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.9},
        )
    return ax


def plot_sublayer_scaling(result: StatsResult, ax: Axes | None = None) -> Axes:
    """What the norms on a sub-layer's output (Gemma 2 / 3, OLMo 2) do to what is added to
    the stream: their input std (rms) per layer, solid, and their output std, dashed."""
    lines = _lines(result, "sublayer")
    ax = plot_layer_bands(result, lines, lambda n: n.denominator, ax)
    outputs = [(f"{label}: output std", role, norms) for label, role, norms in lines]
    plot_layer_bands(result, outputs, lambda n: n.output.std, ax, linestyle="--")
    if ax.lines:
        ax.set_yscale("log")
        ax.set_ylabel("sub-layer output:\ninput (solid), output std (dashed; log)")
        _side_legend(ax, "norms on a sub-layer's output")
    return ax


def plot_projection_scale(result: StatsResult, ax: Axes | None = None) -> Axes:
    """The query / key norms' input std (rms) per layer, pooled over tokens and heads."""
    ax = plot_layer_bands(result, _lines(result, "projection"), lambda n: n.denominator, ax)
    if ax.lines:
        ax.set_yscale("log")
        ax.set_ylabel(f"input {_denominator(result, 'projection')}\nper head (log)")
        _side_legend(ax, "tokens and heads pooled")
    return ax


def _denominator(result: StatsResult, reads: str) -> str:
    kinds = {denominator_key(n.kind) for n in result.norms if n.reads == reads}
    return kinds.pop() if len(kinds) == 1 else "std (rms for RMSNorm)"


def _no_residual_line(result: StatsResult) -> str:
    if not any(n.reads == "residual" for n in result.norms):
        return "no norm reads the residual stream: nothing to show its growth"
    return "no finite input std to show: every token's is NaN or Inf"


def _side_legend(ax: Axes, title: str) -> None:
    """The legend right of the axes, off the data."""
    ax.legend(
        fontsize="small",
        title=title,
        title_fontsize="small",
        loc="center left",
        bbox_to_anchor=(1.01, 0.5),
        frameon=False,
    )


def plot_depth(result: StatsResult, fig: Figure | None = None) -> Figure:
    """The by-depth figure: the residual stream, then, where the model has them, the norms on
    sub-layer outputs and the query / key norms, each in a panel of its own."""
    panels = [plot_std_per_layer]
    if any(n.reads == "sublayer" for n in result.norms):
        panels.append(plot_sublayer_scaling)
    if any(n.reads == "projection" for n in result.norms):
        panels.append(plot_projection_scale)
    figure = fig or new_figure(12, 2.0 + 3.0 * len(panels))
    axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, draw in zip(axes, panels, strict=True):
        draw(result, ax)
    for ax in axes[:-1]:
        ax.set_xlabel("")
    return figure
