"""Figures of a comparison (`lninspect compare --plot`): Figure objects, no pyplot.

`compare-layers.png` overlays the models' per-layer summaries (input std, gradient scale,
largest |x|, ...: lninspect.statistics SUMMARIES); `compare-tokens.png` (only when every
model saw the same tokens) overlays the per-token input std of the norm where the models
differ most, token by token.
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from lninspect.render.compare_tables import row_label
from lninspect.render.figures import new_figure, readable_log_ticks
from lninspect.results.compare import TOKEN_DENOMINATOR, CompareResult, MatchedRow
from lninspect.roles import group_label, group_order
from lninspect.statistics import SUMMARIES


def model_colour(index: int) -> str:
    """Model A blue, B orange, ...: matplotlib's default colour cycle."""
    return f"C{index % 10}"


OUTSIDE_GAP = 0.15  # relative depth between the blocks and a norm outside them


def _x(result: CompareResult, row: MatchedRow) -> float:
    """The first model's layer (names matched) or relative depth; outside norms at the ends,
    one step apart from the blocks so that their markers never sit on a block's."""
    if result.matching != "names":
        if row.role in ("embed", "final"):
            return -OUTSIDE_GAP if row.role == "embed" else 1.0 + OUTSIDE_GAP
        return row.depth
    layers = [r.models[0].layer for r in result.rows if r.models[0].layer is not None]
    layer = row.models[0].layer
    if layer is not None:
        return float(layer)
    return -1.0 if row.role == "embed" else max(layers, default=-1) + 1.0


def _depth_ticks(ax: Axes, result: CompareResult, most: int = 24) -> None:
    """Whole layers (names matched) or quarters of the depth, and "emb" / "final" where the
    norms outside the blocks sit: never 0.25 ... 1.75 between integer layers."""
    names = result.matching == "names"
    outside = {
        _x(result, r): "emb" if r.role == "embed" else "final" if r.role == "final" else "other"
        for r in result.rows
        if (r.models[0].layer is None if names else r.role in ("embed", "final"))
    }
    if names:
        layers = sorted({_x(result, r) for r in result.rows} - set(outside))
        step = max(1, -(-len(layers) // most))
        inside = {x: f"{x:g}" for x in layers[::step]}
    else:
        inside = {x: f"{x:g}" for x in (0.0, 0.25, 0.5, 0.75, 1.0)}
    ticks = {**inside, **outside}
    ax.set_xticks(sorted(ticks), [ticks[x] for x in sorted(ticks)])
    ax.xaxis.set_minor_locator(NullLocator())


MARKERS = "os^DvP<>Xph*"


def _groups(result: CompareResult) -> dict[tuple[str, str, str], str]:
    """(reads, role, placement) of the rows, in block order, each with its marker: one line
    per group and model, so that norms of different kinds never alternate on one line."""
    found = {(r.reads, r.role, r.placement) for r in result.rows}
    ordered = sorted(found, key=lambda g: (*group_order(g[1], g[2]), g[0]))
    return {g: MARKERS[i % len(MARKERS)] for i, g in enumerate(ordered)}


def plot_compare_layers(result: CompareResult, fig: Figure | None = None) -> Figure:
    """A panel per summary over depth (input std, gradient scale, largest |x|, ...:
    lninspect.statistics SUMMARIES), a colour per model; log y unless it can be <= 0."""
    figure = fig or new_figure(10, 2.4 + 2.0 * len(SUMMARIES))
    axes = figure.subplots(len(SUMMARIES), 1, sharex=True, squeeze=False)[:, 0]
    groups = _groups(result)
    for ax, summary in zip(axes, SUMMARIES, strict=True):
        for m in range(len(result.models)):
            for group, marker in groups.items():
                rows = [r for r in result.rows if (r.reads, r.role, r.placement) == group]
                xs = np.array([_x(result, r) for r in rows])
                ys = np.array([r.models[m].value(summary.key) for r in rows], dtype=float)
                keep = np.isfinite(ys) & (summary.signed or ys > 0)
                ax.plot(
                    xs[keep],
                    ys[keep],
                    color=model_colour(m),
                    marker=marker,
                    markersize=4,
                    linestyle="-" if keep.sum() > 1 else "none",
                    alpha=0.85,
                )
        if not any(len(line.get_xdata()) for line in ax.lines):
            ax.text(0.5, 0.5, "no finite values", ha="center", transform=ax.transAxes)
        elif not summary.signed:
            ax.set_yscale("log")
            shown = np.concatenate([np.asarray(line.get_ydata(), float) for line in ax.lines])
            readable_log_ticks(ax, "y", float(shown.min()), float(shown.max()))  # no 2.7×10⁻²
        ax.set_ylabel(summary.title)
        ax.grid(True, which="both", alpha=0.3)
    _depth_ticks(axes[-1], result)
    axes[-1].set_xlabel(
        "layer of model A" if result.matching == "names" else "relative depth: layer / (layers − 1)"
    )
    handles = [
        Line2D([], [], color=model_colour(m), label=f"{chr(65 + m)}: {model.spec}")
        for m, model in enumerate(result.models)
    ] + [
        Line2D([], [], color="grey", marker=marker, linestyle="none", label=group_label(*group))
        for group, marker in groups.items()
    ]
    figure.legend(handles=handles, loc="outside right center", fontsize="small")
    return figure


def token_row_index(result: CompareResult) -> int | None:
    """The row whose per-token input denominator (std; rms for RMSNorm) differs most between
    the models (tokens mode)."""
    found = [d for d in result.differences if d.statistic == TOKEN_DENOMINATOR]
    if found:
        return found[0].row
    return len(result.rows) - 1 if result.rows and result.mode == "tokens" else None


def plot_compare_tokens(result: CompareResult, fig: Figure | None = None) -> Figure:
    """Per-token input std of one matched norm, every model over the same tokens, and the
    ratio of each to model A."""
    figure = fig or new_figure(11, 6.5)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    index = token_row_index(result)
    row = result.rows[index] if index is not None else None
    if row is None or row.models[0].tokens is None:
        top.text(
            0.5,
            0.5,
            "the models saw different tokens: no token-by-token comparison",
            ha="center",
            transform=top.transAxes,
        )
        return figure
    reference = np.asarray(row.models[0].tokens, dtype=float)
    for m, values in enumerate(row.models):
        tokens = np.asarray(values.tokens, dtype=float)
        top.plot(tokens, color=model_colour(m), label=f"{chr(65 + m)}: {result.models[m].spec}")
        if m:
            bottom.plot(tokens / reference, color=model_colour(m))
    top.set_yscale("log")
    top.set_ylabel("input std (log)")
    top.set_title(
        f"{row_label(result, row)} ({group_label(row.reads, row.role, row.placement)})",
        loc="left",
        fontsize="medium",
    )
    top.legend(fontsize="small", loc="upper right")
    bottom.axhline(1, color=model_colour(0), linewidth=1)
    bottom.set_yscale("log")
    bottom.set_ylabel("ratio to A (log)")
    bottom.set_xlabel("token position")
    _token_ticks(bottom, result.tokens)
    for ax in (top, bottom):
        ax.grid(True, which="both", alpha=0.3)
    return figure


def _token_ticks(ax: Axes, tokens: list[str], most: int = 40) -> None:
    if len(tokens) <= most:
        ax.set_xticks(
            range(len(tokens)), [repr(t)[1:-1] for t in tokens], rotation=90, fontsize="x-small"
        )
