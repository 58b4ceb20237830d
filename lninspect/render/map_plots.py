"""Figures of the norm's map (--map), the scale's spread and freezing the scale: Zhu et al.
(2025)'s Figure 2 for a language model, one grid of small panels per group of norms (one
role and placement; lninspect.streams), and lines by layer. Matplotlib `Figure`s built
directly (no pyplot); no torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lninspect.derived import layer_positions
from lninspect.mapfit import NormMap
from lninspect.render.figures import new_figure, say_nothing_to_show
from lninspect.render.format import short_names
from lninspect.results import NormDescription, NormStats, StatsResult
from lninspect.results.aggregate import AggregateResult, NormAggregate
from lninspect.results.freeze import VARIANTS
from lninspect.scale import ScaleSpread
from lninspect.streams import Group, groups_present, norms_of_group

# --map samples one text (stats, report) or a corpus (stats --file)
Mapped = StatsResult | AggregateResult
MappedNorm = NormStats | NormAggregate

N = TypeVar("N", bound=NormDescription)  # a norm of one text, or of a corpus

MAP_FITS = "map-fits-by-layer.png"
SCALE_SPREAD = "scale-spread-by-layer.png"
FREEZE = "freeze-by-layer.png"


def map_grid_name(group: Group) -> str:
    return f"map-{group.role.replace('+', '-')}-{group.placement}-{group.reads}.png"


MAX_POINTS = 4096  # drawn per panel: a sample larger than this is thinned for the figure
FIRST = "tab:red"  # the first token's points
LINE, TANH = "tab:gray", "tab:blue"


def has_map(result: Mapped) -> bool:
    return any(n.map is not None for n in result.norms)


def map_groups(result: Mapped) -> list[tuple[Group, list[MappedNorm]]]:
    """The groups with a sampled map, each with its norms in layer order."""
    found = [(g, norms_of_group(result, g)) for g in groups_present(result)]
    return [(g, [n for n in norms if n.map is not None]) for g, norms in found if norms]


def plot_map(norm: MappedNorm, ax: Axes | None = None, title: str | None = None) -> Axes:
    """One norm's sampled map: ŷ over x, the first token's points in red, the line βx and
    A·tanh(αx) drawn over it, α in the upper left corner."""
    ax = ax or new_figure(4, 3).add_subplot()
    sample = norm.map
    if sample is None or sample.x.size == 0:
        say_nothing_to_show(ax, "no sample")
        return ax
    first = sample.token == 0
    rest = np.flatnonzero(~first)[:MAX_POINTS]
    ax.scatter(sample.x[rest], sample.y[rest], s=2, c="0.45", alpha=0.35, linewidths=0)
    ax.scatter(sample.x[first], sample.y[first], s=5, c=FIRST, linewidths=0)
    low, high = float(sample.x.min()), float(sample.x.max())
    xs = np.linspace(low, high, 200)
    if math.isfinite(sample.alpha):
        ax.plot(xs, sample.slope * xs, color=LINE, lw=0.9, ls="--")
        ax.plot(xs, sample.amplitude * np.tanh(sample.alpha * xs), color=TANH, lw=1.2)
    ax.text(0.03, 0.97, _corner(sample), transform=ax.transAxes, va="top", fontsize="x-small")
    ax.set_title(title or norm.name, fontsize="small")
    ax.tick_params(labelsize="x-small")
    return ax


def _corner(sample: NormMap) -> str:
    return f"α={sample.alpha:.3g}\ntanh {sample.tanh_error:.2f} · line {sample.line_error:.2f}"


def plot_map_grid(group: Group, norms: list[MappedNorm], fig: Figure | None = None) -> Figure:
    """One small panel per norm of the group (per layer), in layer order; where a layer has
    several (q_norm and k_norm), each panel also names its module."""
    columns = min(6, len(norms))
    rows = math.ceil(len(norms) / columns)
    figure = fig or new_figure(max(8.0, 2.3 * columns + 0.5), 2.0 * rows + 1.6)
    axes = figure.subplots(rows, columns, squeeze=False)
    named = len({n.layer for n in norms}) < len(norms)
    for ax, norm in zip(axes.flat, norms, strict=False):
        leaf = f" · {norm.name.rsplit('.', 1)[-1]}" if named else ""
        plot_map(norm, ax, title=_layer(norm) + leaf)
    for ax in list(axes.flat)[len(norms) :]:
        ax.set_axis_off()
    figure.supxlabel(
        "x (the norm's input element)\nred: the first token of a sequence · blue: "
        "A·tanh(αx) · dashed: the line βx · errors relative RMS",
        fontsize="small",
    )
    figure.supylabel("ŷ = (x − c) / s", fontsize="small")
    return figure


def _layer(norm: MappedNorm) -> str:
    return f"layer {norm.layer}" if norm.layer is not None else short_names([norm.name])[0]


def _by_layer(
    where: dict[str, float], norms: Sequence[MappedNorm], value: Callable[[MappedNorm], float]
) -> tuple[list[float], list[float]]:
    """(x positions, values) of the norms: their layers, a final norm after the last."""
    return [where[n.name] for n in norms], [value(n) for n in norms]


def _plot_group(
    ax: Axes,
    where: dict[str, float],
    norms: Sequence[MappedNorm],
    value: Callable[[MappedNorm], float],
    label: str = "_group",
    **style: Any,
) -> list[float]:
    """One line per module name in the group (a q/k group: one for q_norm, one for k_norm,
    not a zigzag between them), the group labelled once; returns the values drawn."""
    drawn: list[float] = []
    for i, members in enumerate(_by_name(norms)):
        xs, ys = _by_layer(where, members, value)
        ax.plot(xs, ys, label=label if i == 0 else "_group", **style)
        drawn += ys
    return drawn


def _by_name(norms: Sequence[N]) -> list[list[N]]:
    """The norms of a group by module name (its last dotted part), in layer order."""
    lines: dict[str, list[N]] = {}
    for norm in norms:
        lines.setdefault(norm.name.rsplit(".", 1)[-1], []).append(norm)
    return list(lines.values())


def _legend_outside(ax: Axes) -> None:
    """The groups' legend right of the axes: never over a point."""
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def _layer_axis(ax: Axes, result: Mapped) -> None:
    """Layer numbers on the x axis; `final` where the norms after the blocks sit."""
    where = layer_positions(result)
    ticks = sorted(set(where.values()))
    step = max(1, math.ceil(len(ticks) / 16))
    outside = {where[n.name]: n.role for n in result.norms if n.layer is None}
    shown = [t for i, t in enumerate(ticks) if i % step == 0 or t in outside]
    ax.set_xticks(shown, [outside.get(t, str(int(t))) for t in shown])
    ax.set_xlabel("layer")


def _map(norm: MappedNorm) -> NormMap:
    assert norm.map is not None
    return norm.map


def _spread(norm: MappedNorm) -> ScaleSpread:
    assert norm.scale is not None
    return norm.scale


def plot_map_fits(result: Mapped, fig: Figure | None = None) -> Figure:
    """α (log) and the two relative errors by layer, a line per group."""
    figure = fig or new_figure(9, 6)
    alpha_ax, error_ax = figure.subplots(2, 1, sharex=True)
    where = layer_positions(result)
    for i, (group, norms) in enumerate(map_groups(result)):
        style = {"color": f"C{i}", "marker": "o"}
        _plot_group(alpha_ax, where, norms, lambda n: _map(n).alpha, group.label, **style)
        _plot_group(error_ax, where, norms, lambda n: _map(n).tanh_error, **style)
        line = {"color": f"C{i}", "marker": "x", "linestyle": "--"}
        _plot_group(error_ax, where, norms, lambda n: _map(n).line_error, **line)
    alpha_ax.set_yscale("log")
    alpha_ax.set_ylabel("α of A·tanh(αx)")
    _legend_outside(alpha_ax)
    error_ax.set_ylabel("relative RMS error\n(o tanh, x line)")
    _layer_axis(error_ax, result)
    return figure


def plot_scale_spread(result: Mapped, fig: Figure | None = None) -> Figure:
    """cv and cv_rest of s, and s(first) / median s(rest), by layer, a line per group."""
    figure = fig or new_figure(9, 6)
    cv_ax, ratio_ax = figure.subplots(2, 1, sharex=True)
    where = layer_positions(result)
    ratios = []
    for i, group in enumerate(groups_present(result)):
        norms = norms_of_group(result, group)
        style = {"color": f"C{i}", "marker": "o"}
        _plot_group(cv_ax, where, norms, lambda n: _spread(n).cv, group.label, **style)
        rest = {"color": f"C{i}", "marker": "x", "linestyle": "--"}
        _plot_group(cv_ax, where, norms, lambda n: _spread(n).cv_rest, **rest)
        ys = _plot_group(ratio_ax, where, norms, lambda n: _spread(n).first_ratio, **style)
        ratios += [y for y in ys if math.isfinite(y) and y > 0]
    cv_ax.set_ylabel("cv of s over tokens\n(o every token, x without the first)")
    _legend_outside(cv_ax)
    ratio_ax.axhline(1.0, color="0.6", lw=0.8)
    if ratios and max(ratios) / min(ratios) > 10:
        ratio_ax.set_yscale("log")
    ratio_ax.set_ylabel("s(first token) / median s(rest)")
    _layer_axis(ratio_ax, result)
    return figure


def plot_freeze(result: StatsResult, fig: Figure | None = None) -> Figure:
    """The loss change of freezing each norm alone, by layer, both variants side by side."""
    figure = fig or new_figure(12, 5)
    axes = figure.subplots(1, 2, sharey=True)
    where = layer_positions(result)
    for ax, variant in zip(axes, VARIANTS, strict=True):
        for i, group in enumerate(groups_present(result)):
            norms = [n for n in norms_of_group(result, group) if n.freeze is not None]
            for j, line in enumerate(_by_name(norms)):
                changes = [getattr(n.freeze, variant) for n in line]
                xs, colour = [where[n.name] for n in line], f"C{i}"
                ax.errorbar(xs, [c.mean for c in changes], yerr=[c.sd for c in changes],
                            fmt="o-", color=colour, capsize=3,
                            label=group.label if j == 0 else "_group")  # fmt: skip
                ax.plot(xs, [c.change for c in changes], "x", color=colour)
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.set_title(VARIANT_TITLES[variant], fontsize="medium")
        _layer_axis(ax, result)
    axes[0].set_ylabel("Δ next-token loss (frozen − as is)")
    _legend_outside(axes[-1])
    return figure


VARIANT_TITLES = {
    "median": "one constant: the median s",
    "classes": "two: the first token's s, the rest's",
}
