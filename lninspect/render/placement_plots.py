"""Figures of `lninspect placement` results at initialization (matplotlib Figures; no torch).

Lines are means over the seeds, bands and error bars their 95% intervals. Each layout has
its declaration's colour and line style (lninspect.placement.layouts); the legend sits under
the panels, off the data. Several depths on one axis are told apart by marker and width; the
deepest is drawn first, widest and lightest, so that a shallower model's curve stays visible
where the two coincide (pre-LN's gradient at block l hardly depends on L). The training
figures are in placement_train_plots.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lninspect.placement.layouts import LAYOUTS
from lninspect.render.figures import allow_math, new_figure, plain_ticks, save_figure
from lninspect.render.placement_map_plots import MAP_PNG, has_maps, map_figure
from lninspect.render.placement_tables import describe
from lninspect.render.placement_train_plots import TRAIN_FIGURES, save_training_figures
from lninspect.results.placement import PlacementResult, PlacementRun

LAYERS_PNG = "placement-layers.png"
SWEEP_PNG = "placement-sweep.png"
DEPTH_MARKERS = ("o", "s", "^", "D", "v", "P", "X")  # one per depth, shallowest first


def figure_names(layers: list[int], train: bool = False, maps: bool = False) -> list[str]:
    """The PNG files `save_placement_figures` writes for these depths (or for --train,
    with --map)."""
    if train:
        return list(TRAIN_FIGURES) + ([MAP_PNG] if maps else [])
    return [LAYERS_PNG] + ([SWEEP_PNG] if len(set(layers)) > 1 else [])


def save_placement_figures(result: PlacementResult, folder: Path) -> list[Path]:
    """Draw the figures into `folder` (which must exist); return the paths written."""
    if result.training is not None:
        maps = [save_figure(map_figure(result), folder / MAP_PNG)] if has_maps(result) else []
        return save_training_figures(result, folder) + maps
    names = figure_names(result.config.layers)
    figures = [layers_figure(result)] + ([sweep_figure(result)] if len(names) > 1 else [])
    return [save_figure(figure, folder / name) for figure, name in zip(figures, names, strict=True)]


def layers_figure(result: PlacementResult) -> Figure:
    """Left: the FFN-output gradient per layer (log axis); right: the stream's variance."""
    figure = new_figure(13.0, 5.6)
    grads, stream = figure.subplots(1, 2)
    plot_layer_grads(result, grads)
    plot_stream_var(result, stream)
    figure.suptitle(
        "Gradient of the FFN output weight and the residual stream at initialization, "
        f"by norm layout\n{describe(result.config)}",
        fontsize=11,
    )
    _figure_legend(figure, grads)
    return figure


def plot_layer_grads(result: PlacementResult, ax: Axes | None = None) -> Axes:
    """|dloss/dW_ffn_out| per layer, one line per layout and depth, with its 95% band."""
    ax = ax or new_figure().subplots()
    for run in _deepest_first(result):
        y = run.grad_norm["ffn_out"]
        x = np.arange(run.layers)
        ax.plot(x, y.mean, label=_label(result, run), **_line(result, run))
        ax.fill_between(x, y.low, y.high, color=LAYOUTS[run.layout].color, alpha=0.15, lw=0)
    ax.set_yscale("log")
    ax.set_xlabel("layer l (block index, 0 = next to the embeddings)")
    allow_math(
        ax.set_ylabel(r"$\|\partial\,\mathrm{loss}/\partial W^{2,l}\|_F$ (nats per unit weight)")
    )
    allow_math(
        ax.set_title(r"FFN output weight $W^{2,l}$: mean and 95% interval over seeds", fontsize=10)
    )
    ax.grid(True, which="both", alpha=0.3)
    plain_ticks(ax)
    return ax


def _label(result: PlacementResult, run: PlacementRun) -> str:
    depths = {r.layers for r in result.runs}
    label = LAYOUTS[run.layout].label
    return label if len(depths) == 1 else f"{label}, L={run.layers}"


def _deepest_first(result: PlacementResult) -> list[PlacementRun]:
    """The runs in drawing order: deepest first (underneath), then in the layouts' order."""
    order = result.layouts()
    return sorted(result.runs, key=lambda run: (-run.layers, order.index(run.layout)))


def _line(result: PlacementResult, run: PlacementRun) -> dict[str, Any]:
    """The layout's colour and line style; deeper models wider, lighter markers, underneath."""
    depths = sorted({r.layers for r in result.runs})
    rank = depths.index(run.layers)
    layout = LAYOUTS[run.layout]
    several = len(depths) > 1
    return {
        "color": layout.color,
        "linestyle": layout.linestyle,
        "marker": DEPTH_MARKERS[rank % len(DEPTH_MARKERS)] if several else layout.marker,
        "markersize": 3 + 2 * (len(depths) - 1 - rank) if several else 4,
        "linewidth": 1.2 + 1.2 * rank / max(len(depths) - 1, 1) if several else 1.5,
        "alpha": 1.0 - 0.35 * rank / max(len(depths) - 1, 1) if several else 1.0,
        "zorder": 3 + len(depths) - rank,
    }


def plot_stream_var(result: PlacementResult, ax: Axes | None = None) -> Axes:
    """The residual stream's variance after each block, per layout, with Lemma 2's band."""
    ax = ax or new_figure().subplots()
    deepest = max(run.layers for run in result.runs)
    blocks = np.arange(deepest + 1)
    ax.fill_between(
        blocks, 1 + blocks / 2, 1 + 1.5 * blocks, color="0.88",
        label="Lemma 2 (Xavier init), pre-LN: 1 + l/2 … 1 + 3l/2",
    )  # fmt: skip
    for run in _deepest_first(result):
        if run.stream_var is None:
            continue
        v = run.stream_var
        x = np.arange(len(v.mean))
        ax.plot(x, v.mean, label="_stream", **_line(result, run))
        ax.fill_between(x, v.low, v.high, color=LAYOUTS[run.layout].color, alpha=0.15, lw=0)
    ax.set_yscale("log")
    plain_ticks(ax)
    ax.set_xlabel("l: blocks the residual stream has passed (0 = the embeddings)")
    ax.set_ylabel("variance of the residual stream over d (mean over tokens)")
    ax.set_title("Hidden-state variance by depth (95% bands)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")  # the band only: the lines share the figure's
    return ax


def sweep_figure(result: PlacementResult) -> Figure:
    """Left: the last block's FFN-output gradient against L; right: over the baseline's."""
    figure = new_figure(13.0, 5.6)
    grads, ratios = figure.subplots(1, 2)
    rows, base = result.sweep, result.config.baseline
    depths = np.array([row.layers for row in rows], dtype=float)
    for name in result.layouts():
        layout = LAYOUTS[name]
        style = {"color": layout.color, "linestyle": layout.linestyle, "marker": layout.marker}
        _errorbar(grads, depths, [row.last[name] for row in rows], label=layout.label, **style)
        if name != base:
            _errorbar(ratios, depths, [row.ratio[name] for row in rows], label="_", **style)
            expected = [row.expected[name].at()[0] for row in rows]
            ratios.plot(depths, expected, color=layout.color, alpha=0.4, linestyle=":", lw=1)
    base0 = rows[0].last[base].at()[0]
    grads.plot(
        depths, base0 * np.sqrt(depths[0] / depths), color="0.5", linestyle=":",
        label=f"∝ 1/sqrt(L) from {LAYOUTS[base].label} at L={rows[0].layers}",
    )  # fmt: skip
    ratios.plot([], [], color="0.5", linestyle=":", label="sqrt(L/L0) × ratio at L0 (Theorem 1)")
    allow_math(
        grads.set_ylabel(r"$\|\partial\,\mathrm{loss}/\partial W^{2,L}\|_F$ (nats per unit weight)")
    )
    grads.set_title("Last block's FFN output weight (95% intervals)", fontsize=10)
    ratios.set_ylabel(f"gradient / {LAYOUTS[base].label}'s (ratio, per seed)")
    ratios.set_title(f"Ratio to {LAYOUTS[base].label} (post/pre: Theorem 1's L^0.5)", fontsize=10)
    ratios.legend(fontsize=8, loc="upper left")
    for ax in (grads, ratios):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(depths, [str(int(n)) for n in depths])
        ax.set_xlabel("depth L (blocks)")
        ax.grid(True, which="both", alpha=0.3)
        plain_ticks(ax)
    figure.suptitle(
        "Gradient of the last FFN output weight at initialization against depth\n"
        f"{describe(result.config)}",
        fontsize=11,
    )
    _figure_legend(figure, grads)
    return figure


def _errorbar(ax: Axes, x: np.ndarray, values: list, **style: Any) -> None:
    """Means with 95% error bars (none where an interval is unknown)."""
    mean = np.array([v.at()[0] for v in values])
    low = np.array([v.at()[1] for v in values])
    high = np.array([v.at()[2] for v in values])
    bars = np.nan_to_num(np.stack([mean - low, high - mean]))
    ax.errorbar(x, mean, yerr=bars, capsize=3, **style)


def _figure_legend(figure: Figure, ax: Axes) -> None:
    """The layouts' legend under the panels, off the data, in as many columns as fit."""
    handles, labels = ax.get_legend_handles_labels()
    columns = min(len(labels), 4)
    figure.legend(
        handles, labels, loc="outside lower center", ncols=columns, fontsize=8, frameon=False
    )
