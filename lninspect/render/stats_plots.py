"""Figures of statistics results: std and mean heatmaps, growth with depth, spikes, order.

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
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from lninspect.render.figures import figure_of, new_figure, save_figure, say_nothing_to_show
from lninspect.render.format import figure_subtitle, short_names, token_label
from lninspect.results import NormStats, Spike, StatsResult
from lninspect.roles import ROLE_LABELS
from lninspect.summary import (
    Values,
    has_order,
    largest_spike,
    layer_positions,
    layer_quartiles,
    norms_of_role,
    pooled_median,
    residual_growth,
    roles_present,
    token_row,
    token_spikes,
)

STD_HEATMAP = "stats-std-heatmap.png"
MEAN_HEATMAP = "stats-mean-heatmap.png"
STD_PER_LAYER = "stats-std-per-layer.png"
SPIKE_RANKS = "stats-spike-ranks.png"
WITHIN_TOKEN = "stats-within-token-spearman.png"
STATS_FIGURES = (STD_HEATMAP, MEAN_HEATMAP, STD_PER_LAYER, SPIKE_RANKS, WITHIN_TOKEN)
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
    count = 0
    for ax, (title, rows) in zip(axes, panels, strict=True):
        grid = _grid([_row(values, n) for n in rows])  # (modules, tokens)
        count = max(count, grid.shape[1])
        image = ax.imshow(grid, aspect="auto", interpolation="nearest", norm=scale, cmap=cmap)
        ylabel, labels = _row_labels(result, title, rows)
        step = max(1, math.ceil(len(rows) / MAX_ROW_TICKS))
        ax.set_yticks(range(0, len(rows), step), labels[::step], fontsize=8)
        ax.set_ylabel(ylabel)
    _token_ticks(axes[-1], result, count)
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
    scale = LogNorm(vmin=positive.min(), vmax=positive.max()) if positive.size else LogNorm()
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


# Spikes -------------------------------------------------------------------------------------


def plot_spike_ranks(result: StatsResult, ax: Axes | None = None) -> Axes:
    """Rank before vs after the norm of the spike dims at the token with the largest spike."""
    ax = ax or new_figure(10, 7.5).add_subplot()
    top = largest_spike(result)
    if top is None:
        raise ValueError("the result has no spikes")
    where = layer_positions(result)
    pairs = token_spikes(result, top[1].sequence, top[1].token)
    ranks = np.array([[s.rank_in, s.rank_out] for _, s in pairs], dtype=float)  # (spikes, 2)
    layers = np.array([where[n.name] for n, _ in pairs])
    scale = Normalize(vmin=min(where.values()), vmax=max(max(where.values()), 1))
    handles = []
    for role in roles_present(result):
        keep = np.array([n.role == role for n, _ in pairs])
        if keep.any():
            marker = ROLE_MARKERS.get(role, "o")
            ax.scatter(
                ranks[keep, 0],
                ranks[keep, 1],
                c=layers[keep],
                cmap="viridis",
                norm=scale,
                marker=marker,
                s=60,
                alpha=0.85,
                edgecolors="black",
                linewidths=0.5,
                zorder=3,
            )
            handles.append(
                Line2D(
                    [],
                    [],
                    marker=marker,
                    linestyle="none",
                    color="lightgrey",
                    markeredgecolor="black",
                    label=ROLE_LABELS.get(role, role),
                )
            )
    _rank_axes(ax, ranks)
    _count_stacked(ax, ranks)
    _annotate_largest(ax, *top)
    bar = ax.figure.colorbar(
        ax.collections[0],
        ax=ax,
        shrink=0.8,
        label="layer (after the last: norms outside the blocks)",
    )
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()
    handles.append(Line2D([], [], color="grey", linestyle="--", label="rank kept (y = x)"))
    ax.legend(
        handles=handles,
        fontsize="small",
        loc="lower right",
        title=f"{len(pairs)} spikes in {len({n.name for n, _ in pairs})} modules",
        title_fontsize="small",
    )
    return ax


def _count_stacked(ax: Axes, ranks: np.ndarray) -> None:
    """`×n` beside a point that n spikes share (same rank before and after)."""
    points, counts = np.unique(ranks, axis=0, return_counts=True)
    for (x, y), count in zip(points, counts, strict=True):
        if count > 1:
            ax.annotate(
                f"×{count}",
                (x, y),
                xytext=(7, -12),
                textcoords="offset points",
                fontsize="small",
                zorder=4,
            )


def _annotate_largest(ax: Axes, norm: NormStats, spike: Spike) -> None:
    ranks = f"rank {spike.rank_in} → {spike.rank_out}"
    ax.annotate(
        f"largest |z|: {norm.name}, dim {spike.dim}\n"
        f"x = {spike.value:.4g}, z = {spike.z:.3g}, {ranks}",
        (spike.rank_in, spike.rank_out),
        xytext=(40, 40),
        textcoords="offset points",
        fontsize="small",
        bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.9},
        arrowprops={"arrowstyle": "->", "color": "black"},
        zorder=5,
    )


def _rank_axes(ax: Axes, ranks: np.ndarray) -> None:
    """The identity line, square limits, log axes when ranks span a decade or more."""
    high = max(float(ranks.max()) * 1.25 + 0.5, 3.5)  # room for at least ranks 1 to 3
    logged = ranks.max() / max(ranks.min(), 1) >= 10
    low = 0.8 if logged else 0.5
    ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1, zorder=1)
    if logged:
        ax.set_xscale("log")
        ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):  # ranks are whole numbers
        if logged:
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        else:
            axis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_aspect("equal", adjustable="box")
    suffix = " (log)" if logged else ""
    ax.set_xlabel(f"rank of |x − centre| before the norm (1 = the token's largest){suffix}")
    ax.set_ylabel(f"rank of |y − bias| after the norm{suffix}")
    ax.grid(True, which="both", alpha=0.3)


def plot_within_token(result: StatsResult, fig: Figure | None = None) -> Figure:
    """Within-token Spearman of x vs y per layer (top) and top-k retention (bottom)."""
    figure = fig or new_figure(10, 7.5)
    top, bottom = figure.subplots(2, 1, sharex=True)
    plot_layer_bands(result, lambda n: _order_values(n, "within_token_spearman"), top)
    xs, qs = pooled_median(result, lambda n: _order_values(n, "within_token_spearman_z"))
    top.plot(
        xs,
        qs,
        color="black",
        linestyle="--",
        linewidth=1,
        label="x vs z, before the affine step (1 by construction)",
    )
    top.set_ylabel("Spearman ρ of x vs y\nover the hidden dims")
    top.set_xlabel("")
    top.set_ylim(top=1.05)
    top.set_title(
        "rank correlation of a token's activations before and after the norm", fontsize="medium"
    )
    plot_layer_bands(result, lambda n: _order_values(n, "topk_retention"), bottom)
    bottom.set_ylim(-0.03, 1.03)
    k = f"{result.top_k}" if result.top_k else "k"
    bottom.set_ylabel(f"top-{k} retention\n(share of the {k} largest kept)")
    bottom.set_title(
        f"share of the token's {k} largest |x − centre| dims still among its {k} "
        "largest |y − bias|",
        fontsize="medium",
    )
    figure.legend(
        handles=top.get_legend_handles_labels()[0],
        loc="outside lower center",
        ncols=3,
        fontsize="small",
        title="line: median over tokens; band: 25–75%",
        title_fontsize="small",
    )
    return figure


def _order_values(norm: NormStats, key: str) -> np.ndarray | None:
    return getattr(norm.order, key) if norm.order is not None else None


# Saving -------------------------------------------------------------------------------------


def save_stats_figures(result: StatsResult, folder: Path) -> list[Path]:
    """Write the statistics figures into `folder`; the spike figures only when captured."""
    sub = figure_subtitle(result)
    std = plot_std_heatmap(result)
    std.suptitle(f"Input std of every norm, per token\n{sub}")
    mean = plot_mean_heatmap(result)
    mean.suptitle(f"Input mean of every norm, per token\n{sub}")
    growth = figure_of(plot_std_per_layer(result, new_figure(10, 5.5).add_subplot()))
    growth.suptitle(f"Residual-stream growth with depth: input std per layer\n{sub}")
    figures = [(std, STD_HEATMAP), (mean, MEAN_HEATMAP), (growth, STD_PER_LAYER)]
    spike = largest_spike(result)
    if spike is not None:
        ranks = figure_of(plot_spike_ranks(result))
        token = token_label(result, spike[1].sequence, spike[1].token)
        ranks.suptitle(f"Spike dimensions before and after each norm, token {token}\n{sub}")
        figures.append((ranks, SPIKE_RANKS))
    if has_order(result):
        order = plot_within_token(result)
        order.suptitle(f"Does the norm keep the order of a token's activations?\n{sub}")
        figures.append((order, WITHIN_TOKEN))
    return [save_figure(fig, folder / name) for fig, name in figures]
