"""Figures of spikes: rank before vs after by stage, order kept per norm, the depth trajectory
and the massive activations by role (Matplotlib Figures, no pyplot, no torch); the figures of
single dimensions are in lninspect.render.dimension_plots, every figure's entry in
lninspect.render.catalog.

Every figure says so inside itself when the result has no spike, instead of an empty axis.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

from lninspect.derived import (
    KIND_NAMES,
    order_totals,
)
from lninspect.render.figures import new_figure
from lninspect.render.format import short_names
from lninspect.render.spike_tables import spike_rule
from lninspect.results import NormStats, StatsResult
from lninspect.roles import STREAM_LABELS
from lninspect.streams import groups_present, leaf_of, norms_of_group, residual_norms

ROLE_MARKERS = "os^vDP"
STAGE_COLOURS = {
    None: "#8c8c8c",  # rank kept
    "centre": "#1f77b4",
    "weight": "#d62728",
    "bias": "#2ca02c",
}
STAGE_LABELS = {
    None: "rank kept",
    "centre": "changed by centring",
    "weight": "changed by the weight",
    "bias": "changed by the bias",
}
MAX_NORM_TICKS = 26


def no_spike(ax: Axes, result: StatsResult, what: str = "") -> None:
    """Say in the axes that there is no spike, with the rules that found none (or `what`
    there is not, when the result has spikes)."""
    some = any(n.spikes for n in result.norms)
    ax.text(
        0.5,
        0.5,
        what if some and what else f"no spike in any norm\n{spike_rule(result)}",
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize="large",
        color="#57606a",
        bbox={"boxstyle": "round", "facecolor": "#f6f8fa", "edgecolor": "#d0d7de"},
    )


NICE = [m * 10**e for e in range(-3, 9) for m in (1, 2, 5)]
MANTISSAS = ((1, 2, 5), (1, 3), (1,))  # ever sparser ticks on a log axis


def sparse_log_ticks(low: float, high: float, most: int = 8) -> list[float]:
    """Round values (1, 2, 5, 10, ... or 1, 3, 10, ... or powers of ten, every other power
    past that) between `low` and `high`, at most `most`: labels that never touch ("200300")."""
    for mantissas in MANTISSAS:
        ticks = [m * 10.0**e for e in range(-4, 10) for m in mantissas]
        ticks = [t for t in ticks if low <= t <= high]
        if len(ticks) <= most:
            return ticks
    step = -(-len(ticks) // most)
    return ticks[::step]


def only_message(figure: Figure, result: StatsResult) -> Figure:
    """The figure with its panels replaced by one centred "no spike" message."""
    for ax in list(figure.axes):
        ax.remove()
    ax = figure.add_subplot()
    ax.set_axis_off()
    no_spike(ax, result)
    return figure


def log_ticks(ax: Axes, axes: str = "xy", most: int = 8) -> None:
    """Plain numbers (1, 2, 5, 10, ...) on log axes instead of powers of ten, few enough
    that their labels stay apart."""
    for name in axes:
        axis = ax.xaxis if name == "x" else ax.yaxis
        low, high = ax.get_xlim() if name == "x" else ax.get_ylim()
        ticks = sparse_log_ticks(low, high, most)
        if len(ticks) < 3:  # a narrow range: round values of a linear locator
            ticks = [t for t in MaxNLocator(5).tick_values(low, high) if low <= t <= high > 0]
        axis.set_ticks(ticks)
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())


# Ranks --------------------------------------------------------------------------------------


def plot_spike_ranks(result: StatsResult, fig: Figure | None = None) -> Figure:
    """Every listed spike: rank by |x| vs rank by |y| (left), |x| vs |y| (right), log axes,
    coloured by the stage that changed its rank."""
    figure = fig or new_figure(13, 6)
    grid = figure.add_gridspec(1, 3, width_ratios=(1, 0.22, 1))
    left, right = figure.add_subplot(grid[0]), figure.add_subplot(grid[2])
    table = figure.add_subplot(grid[1])  # figure.axes: left, right, table
    spikes = [s for n in result.norms for s in n.spikes or []]
    if not spikes:
        return only_message(figure, result)
    counted: list[tuple[float, float, int, str | None]] = []  # (in, out, spikes, stage)
    for stage, colour in STAGE_COLOURS.items():
        mine = [s for s in spikes if s.changed_by == stage]
        if not mine:
            continue
        ranks = np.array([[s.rank_in, s.rank_out] for s in mine], dtype=float)
        points, counts = np.unique(ranks, axis=0, return_counts=True)
        style: dict[str, Any] = {
            "color": colour,
            "edgecolors": "black",
            "linewidths": 0.4,
            "zorder": 3,
        }
        left.scatter(points[:, 0], points[:, 1], s=_area(counts), **style)
        counted += [(x, y, int(n), stage) for (x, y), n in zip(points, counts, strict=True)]
        sizes = np.array([[abs(s.value), abs(s.out_value)] for s in mine])
        right.scatter(sizes[:, 0], sizes[:, 1], s=16, alpha=0.8, **style)
    _rank_panel(left, spikes)
    _size_panel(right)
    log_ticks(right, most=7)
    _count_table(table, counted)
    handles = [
        Patch(color=c, label=f"{STAGE_LABELS[k]} ({sum(s.changed_by == k for s in spikes)})")
        for k, c in STAGE_COLOURS.items()
    ]
    figure.legend(handles=handles, loc="outside lower center", ncols=4, fontsize="small")
    return figure


def _area(counts: np.ndarray) -> np.ndarray:
    """Marker area (points²) of a point that stands for `counts` spikes."""
    return 18 + 14 * np.sqrt(counts)


MAX_COUNT_ROWS = 12


def _count_table(ax: Axes, counted: list[tuple[float, float, int, str | None]]) -> None:
    """Beside the rank panel, a table of the points that stand for the most spikes (rank in ->
    rank out, how many, coloured by stage): labels on the points would overlap in a column
    of ranks 1, 2, 3 (a real model's hundreds of spikes share a few points)."""
    ax.set_axis_off()
    shown = sorted((p for p in counted if p[2] > 1), key=lambda p: -p[2])[:MAX_COUNT_ROWS]
    if not shown:
        return
    ax.text(0, 1, "most spikes at\none point\n(rank in → out)", va="top", fontsize=8,
            transform=ax.transAxes, fontweight="bold")  # fmt: skip
    for i, (x, y, n, stage) in enumerate(shown):
        ax.text(0, 0.86 - 0.055 * i, f"{x:>4g} → {y:<4g} ×{n}", va="top", fontsize=8,
                family="monospace", color=STAGE_COLOURS[stage], transform=ax.transAxes)  # fmt: skip
    if len(counted) > len(shown):
        ax.text(0, 0.86 - 0.055 * len(shown), f"({len(counted)} points in all)", va="top",
                fontsize=7, color="0.35", transform=ax.transAxes)  # fmt: skip


def _rank_panel(ax: Axes, spikes: list) -> None:
    high = max(max(max(s.rank_in, s.rank_out) for s in spikes) * 1.6 + 1, 4.0)
    ax.plot([0.8, high], [0.8, high], color="grey", linestyle="--", linewidth=1, zorder=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(0.8, high)
    ax.set_ylim(0.8, high)
    ax.set_aspect("equal", adjustable="box")
    ticks = sparse_log_ticks(1, high, most=7)  # ranks are whole numbers
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_ticks(ticks, [f"{t:g}" for t in ticks])
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("rank by |x| before the norm (1 = the token's largest; log)")
    ax.set_ylabel("rank by |y| after the norm (log)")
    ax.set_title("rank of each spike (dashed: kept; area: spikes at the point)", fontsize="medium")
    ax.grid(True, which="both", alpha=0.3)


def _size_panel(ax: Axes) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("|x| before the norm (log)")
    ax.set_ylabel("|y| after the norm (log)")
    ax.set_title("magnitude of each spike: the norm shrinks it", fontsize="medium")
    ax.grid(True, which="both", alpha=0.3)


# Order kept per norm ------------------------------------------------------------------------


def norm_axis(ax: Axes, names: list[str]) -> None:
    """Norms in model order on the x axis, labelled with their short names."""
    step = max(1, int(np.ceil(len(names) / MAX_NORM_TICKS)))
    shown = list(range(0, len(names), step))
    ax.set_xticks(shown, [names[i] for i in shown], rotation=90, fontsize=7)
    ax.set_xlim(-0.7, len(names) - 0.3)


def plot_spike_order(result: StatsResult, fig: Figure | None = None) -> Figure:
    """Per norm: the share of spikes whose rank is kept and of pairs kept (top), and how many
    spikes each stage re-ranked (bottom)."""
    figure = fig or new_figure(11, 7.5)
    top, bottom = figure.subplots(2, 1, sharex=True)
    norms = [n for n in result.norms if n.order is not None]
    names = short_names([n.name for n in norms])
    if not any(n.order.spikes for n in norms if n.order is not None):
        return only_message(figure, result)
    xs = np.arange(len(norms))
    by_kind = any(n.order is not None and n.order.massive is not None for n in norms)
    for kind, style, colour in (("massive", "o-", "#d62728"), ("outlier", "s-", "black")):
        if by_kind:  # documents before the kinds: every spike on one line
            kept = np.array([_kept(n, kind) for n in norms])
            top.plot(xs, kept, style, color=colour, label=f"{KIND_NAMES[kind]}: rank kept")
    if not by_kind:
        kept = np.array([n.order.rank_kept if n.order else np.nan for n in norms])
        top.plot(xs, kept, "o-", color="black", label="rank kept (share of spikes)")
    pairs = np.array([_kept(n, "outlier", pairs=True) if by_kind else _pairs(n) for n in norms])
    top.plot(xs, pairs, "s--", color="#9467bd", label="same-token pairs kept (share)")
    silent = [i for i, n in enumerate(norms) if n.order is not None and n.order.spikes == 0]
    top.scatter(silent, [0.02] * len(silent), marker="x", color="grey", label="no spike here")
    top.set_ylim(-0.03, 1.05)
    top.set_ylabel("share kept")
    top.grid(True, alpha=0.3)
    base = np.zeros(len(norms))
    for stage, colour in STAGE_COLOURS.items():
        counts = np.array([_stage_count(n, stage) for n in norms], dtype=float)
        bottom.bar(xs, counts, bottom=base, color=colour, label=STAGE_LABELS[stage])
        base += counts
    bottom.set_ylabel("ranked spikes")
    bottom.grid(True, axis="y", alpha=0.3)
    handles = top.get_legend_handles_labels()[0] + bottom.get_legend_handles_labels()[0]
    figure.legend(handles=handles, loc="outside lower center", ncols=4, fontsize="small")
    norm_axis(bottom, names)
    top.set_title(_order_title(norms, by_kind), fontsize="medium")
    return figure


def _kept(norm: NormStats, kind: str, pairs: bool = False) -> float:
    """A norm's share of `kind` spikes whose rank (or same-token pair order) is kept."""
    order = getattr(norm.order, kind, None) if norm.order is not None else None
    if order is None:
        return math.nan
    if pairs:
        return order.pairs_kept if order.pairs else math.nan
    return order.rank_kept if order.ranked else math.nan


def _pairs(norm: NormStats) -> float:
    return norm.order.pairs_kept if norm.order is not None else math.nan


def _order_title(norms: list[NormStats], by_kind: bool) -> str:
    """What the panel shows, each kind apart as the summary gives them."""
    parts = []
    for kind in ("massive", "outlier") if by_kind else ("all",):
        t = order_totals(norms, kind)
        name = KIND_NAMES.get(kind, "spikes")
        if not t.spikes:
            parts.append(f"no {name.removesuffix('s')}")
            continue
        share = f"rank kept for {t.rank_kept:.0%}" if t.ranked else "none ranked"
        pairs = f", pairs kept {t.pair_share:.0%}" if t.pairs else ""
        parts.append(f"{name}: {t.spikes} in {t.spiking} of {t.norms} norms, {share}{pairs}")
    return "; ".join(parts)


def _stage_count(norm: NormStats, stage: str | None) -> int:
    order = norm.order
    if order is None:
        return 0
    if stage is None:
        return round(order.rank_kept * order.ranked) if order.ranked else 0
    return int(getattr(order.changed_by, stage))


# Depth trajectory ---------------------------------------------------------------------------


def plot_trajectory(result: StatsResult, ax: Axes | None = None) -> Axes:
    """Each top dimension's max |x| (solid) and max |y| (dashed) at every norm, log scale."""
    ax = ax or new_figure(11, 6).add_subplot()
    path = result.trajectory
    if path is None or not path.dims:
        ax.set_axis_off()
        no_spike(ax, result, "no trajectory in this result")
        return ax
    xs = np.arange(len(path.norms))
    colours = [colormaps["tab10"](i) for i in range(10)]
    for i, dim in enumerate(path.dims):
        colour = colours[i % 10]
        ax.plot(xs, path.max_abs_in[i], "o-", color=colour, markersize=4, label=f"dim {dim}")
        ax.plot(xs, path.max_abs_out[i], "--", color=colour, linewidth=1)
    ax.set_yscale("log")
    ax.set_ylabel("max over tokens of |x| (solid) and |y| (dashed), log")
    norm_axis(ax, short_names(path.norms))
    ax.grid(True, which="both", alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    handles += [
        Line2D([], [], color="black", label="before the norm (x)"),
        Line2D([], [], color="black", linestyle="--", label="after the norm (y)"),
    ]
    ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    if not any(n.spikes for n in result.norms):
        ax.text(
            0.99,
            0.03,
            f"no spike in any norm ({spike_rule(result)}):\nthe dimensions of largest |x|",
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize="small",
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.9},
        )
    return ax


# Massive activations per role -----------------------------------------------------------------


def plot_massive_roles(result: StatsResult, ax: Axes | None = None) -> Axes:
    """Each massive activation's rank after the norm (rank 1: still the token's largest), by
    layer, one marker per role, coloured by the stage that moved it."""
    ax = ax or new_figure(11, 5).add_subplot()
    markers: list[tuple[str, str]] = []  # (marker, role label) for the legend
    d = result.model.hidden_size or 1
    for group in groups_present(result):
        norms = norms_of_group(result, group)
        spikes = [(n, s) for n in norms for s in n.spikes or [] if s.massive]
        if not spikes:
            continue
        marker = ROLE_MARKERS[len(markers) % len(ROLE_MARKERS)]
        leaves = [leaf_of(n) for n, _ in spikes]
        leaf = max(dict.fromkeys(leaves), key=leaves.count)  # the one holding the most
        markers.append((marker, f"{group.label} ({leaf})"))
        xs = [n.layer if n.layer is not None else -1 for n, _ in spikes]
        ax.scatter(
            xs,
            [s.rank_out for _, s in spikes],
            marker=marker,
            c=[STAGE_COLOURS[s.changed_by] for _, s in spikes],
            edgecolors="black",
            linewidths=0.4,
            s=40,
        )
        d = max(d, max(s.rank_out for _, s in spikes))
    if not markers:
        ax.set_axis_off()
        no_spike(ax, result, "no massive activation in any norm")
        return ax
    ax.set_yscale("log")
    ax.set_ylim(d * 1.5, 0.7)  # rank 1 at the top
    ticks = [t for t in NICE if 1 <= t <= d * 1.5]
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("layer (final norm at -1)")
    ax.set_ylabel("rank by |y| after the norm (1 = largest; log)")
    ax.grid(True, which="both", alpha=0.3)
    handles: list = [
        Line2D([], [], marker=m, linestyle="", color="white", markeredgecolor="black", label=t)
        for m, t in markers
    ]
    handles += [Patch(color=STAGE_COLOURS[k], label=STAGE_LABELS[k]) for k in STAGE_COLOURS]
    ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    return ax


def residual_scope(result: StatsResult) -> str:
    """` (37 of 109 norms; the others read a sub-layer's output or a projection)` where a
    view that follows the residual stream leaves norms out; "" where none is left out."""
    inside = len(residual_norms(result))
    if inside == len(result.norms):
        return ""
    others = sorted({STREAM_LABELS[n.reads] for n in result.norms if n.reads != "residual"})
    return f" ({inside} of {len(result.norms)} norms; the others read {' or '.join(others)})"
