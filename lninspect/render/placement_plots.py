"""Figures of `lninspect placement` results at initialization (matplotlib Figures; no torch).

Lines are means over the seeds, bands and error bars their 95% intervals. Several depths on
one axis are told apart by colour shade and marker; the deepest is drawn first and widest,
so that a shallower model's curve stays visible where the two coincide (pre-LN's gradient at
block l hardly depends on L). The training figures are in placement_train_plots.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from lninspect.render.figures import allow_math, new_figure, save_figure
from lninspect.render.placement_tables import POST_LEMMA2, ci, describe
from lninspect.results.placement import PlacementResult, PlacementRun

LAYERS_PNG = "placement-layers.png"
SWEEP_PNG = "placement-sweep.png"
STYLE: dict[str, dict[str, Any]] = {
    "pre": {"linestyle": "-", "marker": "o"},
    "post": {"linestyle": "--", "marker": "s"},
}
DEPTH_MARKERS = ("o", "s", "^", "D", "v", "P", "X")  # one per depth, shallowest first


def figure_names(layers: list[int], train: bool = False) -> list[str]:
    """The PNG files `save_placement_figures` writes for these depths (or for --train)."""
    if train:
        from lninspect.render.placement_train_plots import TRAIN_FIGURES

        return list(TRAIN_FIGURES)
    return [LAYERS_PNG] + ([SWEEP_PNG] if len(set(layers)) > 1 else [])


def save_placement_figures(result: PlacementResult, folder: Path) -> list[Path]:
    """Draw the figures into `folder` (which must exist); return the paths written."""
    if result.training is not None:
        from lninspect.render.placement_train_plots import save_training_figures

        return save_training_figures(result, folder)
    names = figure_names(result.config.layers)
    figures = [layers_figure(result)] + ([sweep_figure(result)] if len(names) > 1 else [])
    return [save_figure(figure, folder / name) for figure, name in zip(figures, names, strict=True)]


def layers_figure(result: PlacementResult) -> Figure:
    """Left: the FFN-output gradient per layer (log axis); right: E|x|^2/d at the norms."""
    figure = new_figure(12.0, 5.0)
    grads, inputs = figure.subplots(1, 2)
    plot_layer_grads(result, grads)
    plot_norm_inputs(result, inputs)
    figure.suptitle(
        "Gradient of the FFN output weight per layer at initialization: "
        f"pre-LN vs post-LN\n{describe(result.config)}",
        fontsize=11,
    )
    return figure


def plot_layer_grads(result: PlacementResult, ax: Axes | None = None) -> Axes:
    """|dloss/dW_ffn_out| per layer, one line per placement and depth, with its 95% band."""
    ax = ax or new_figure().subplots()
    for run in _deepest_first(result):
        y = run.grad_norm["ffn_out"]
        x = np.arange(run.layers)
        ax.plot(x, y.mean, label=f"{run.placement}-LN, L={run.layers}", **_line(result, run))
        ax.fill_between(x, y.low, y.high, color=_color(result, run), alpha=0.2, linewidth=0)
    ax.set_yscale("log")
    ax.set_xlabel("layer l (block index, 0 = next to the embeddings)")
    allow_math(
        ax.set_ylabel(r"$\|\partial\,\mathrm{loss}/\partial W^{2,l}\|_F$ (nats per unit weight)")
    )
    allow_math(
        ax.set_title(r"FFN output weight $W^{2,l}$: mean and 95% interval over seeds", fontsize=10)
    )
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax)
    plain_ticks(ax)
    return ax


def _deepest_first(result: PlacementResult) -> list[PlacementRun]:
    """The runs in drawing order: deepest first (underneath), post-LN before pre-LN."""
    return sorted(result.runs, key=lambda run: (-run.layers, run.placement != "post"))


def _line(result: PlacementResult, run: PlacementRun) -> dict[str, Any]:
    """Colour, marker and width of a run's line: deeper models wider, lighter, underneath."""
    depths = sorted({r.layers for r in result.runs})
    rank = depths.index(run.layers)
    return {
        "color": _color(result, run),
        "linestyle": STYLE[run.placement]["linestyle"],
        "marker": DEPTH_MARKERS[rank % len(DEPTH_MARKERS)],
        "markersize": 4 + 2 * (len(depths) - 1 - rank) if len(depths) > 1 else 5,
        "linewidth": 1.2 + 1.2 * rank / max(len(depths) - 1, 1) if len(depths) > 1 else 1.5,
        "zorder": 3 + len(depths) - rank,
    }


def _color(result: PlacementResult, run: PlacementRun) -> tuple[float, ...]:
    return _colors(result)[run.placement, run.layers]


def plot_norm_inputs(result: PlacementResult, ax: Axes | None = None) -> Axes:
    """E|x|^2/d at pre-LN's ln_1 (and ln_f) and post-LN's ln_2, with Lemma 2's values."""
    ax = ax or new_figure().subplots()
    colors = _colors(result)
    deepest = max(run.layers for run in result.runs)
    blocks = np.arange(deepest + 1)
    ax.fill_between(
        blocks,
        1 + blocks / 2,
        1 + 1.5 * blocks,
        color="0.85",
        label="Lemma 2 (Xavier init), pre-LN: 1 + l/2 … 1 + 3l/2",
    )
    ax.axhline(
        POST_LEMMA2,
        color="0.4",
        linewidth=1,
        linestyle=":",
        label="Lemma 2 (Xavier init), post-LN: 1.5",
    )
    for run in _deepest_first(result):
        if run.placement == "pre":  # ln_1 of each block, then ln_f after the last block
            keys: tuple[str, ...] = ("ln_1", "ln_f")
            label = f"pre-LN ln_1 (ln_f at l=L), L={run.layers}"
        else:
            keys, label = ("ln_2",), f"post-LN ln_2, L={run.layers}"
        mean, low, high = (
            np.concatenate([getattr(run.input_ms[key], part) for key in keys])
            for part in ("mean", "low", "high")
        )
        x = np.arange(len(mean))
        ax.plot(x, mean, label=label, **_line(result, run))
        ax.fill_between(x, low, high, color=colors[run.placement, run.layers], alpha=0.2, lw=0)
    values = np.concatenate(
        [np.concatenate([v.mean for v in run.input_ms.values()]) for run in result.runs]
    )
    if np.nanmax(values) > 30 * np.nanmin(values):  # e.g. GPT-2's init: a tiny pre-LN stream
        ax.set_yscale("log")
        plain_ticks(ax)
    ax.set_xlabel("layer l (blocks the residual stream has passed)")
    allow_math(ax.set_ylabel(r"$E\|x\|^2/d$ at the norm's input (mean square)"))
    ax.set_title(
        "Why: the residual stream grows in pre-LN, is renormalised in post-LN", fontsize=10
    )
    ax.grid(True, alpha=0.3)
    _legend(ax)
    return ax


def sweep_figure(result: PlacementResult) -> Figure:
    """Left: the last block's FFN-output gradient against L; right: post/pre against L."""
    figure = new_figure(12.0, 5.0)
    grads, ratios = figure.subplots(1, 2)
    rows = result.sweep
    depths = np.array([row.layers for row in rows], dtype=float)
    for name, color in (("post", "tab:red"), ("pre", "tab:blue")):
        values = [getattr(row, name) for row in rows]
        _errorbar(grads, depths, values, color=color, label=f"{name}-LN", **STYLE[name])
    pre0 = rows[0].pre.at()[0]
    grads.plot(
        depths,
        pre0 * np.sqrt(depths[0] / depths),
        color="tab:blue",
        alpha=0.5,
        linestyle=":",
        label="∝ 1/sqrt(L) (Theorem 1's bound, pre-LN)",
    )
    allow_math(
        grads.set_ylabel(r"$\|\partial\,\mathrm{loss}/\partial W^{2,L}\|_F$ (nats per unit weight)")
    )
    grads.set_title("Last block's FFN output weight (95% intervals)", fontsize=10)
    _errorbar(
        ratios, depths, [r.ratio for r in rows], color="k", label="measured post/pre", marker="o"
    )
    ratios.plot(
        depths,
        [r.expected.at()[0] for r in rows],
        color="k",
        alpha=0.5,
        linestyle=":",
        label=f"sqrt(L/{rows[0].layers}) × ratio at L={rows[0].layers} (Theorem 1's bounds)",
    )
    ratios.set_ylabel("post-LN / pre-LN gradient (ratio)")
    exponent = result.growth_exponent
    law = "" if exponent is None else f" as $L^{{{ci(exponent)}}}$"
    allow_math(ratios.set_title(f"Ratio grows{law} (Theorem 1's bounds: $L^{{0.5}}$)", fontsize=10))
    for ax in (grads, ratios):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(depths, [str(int(n)) for n in depths])
        ax.set_xlabel("depth L (blocks)")
        ax.grid(True, which="both", alpha=0.3)
        _legend(ax)
        plain_ticks(ax)
    figure.suptitle(
        "Gradient of the last FFN output weight at initialization against depth\n"
        f"{describe(result.config)}",
        fontsize=11,
    )
    return figure


def plain_ticks(ax: Axes) -> None:
    """Log-axis labels as plain numbers (0.07, not 7×10^-2); minor ones where there is room:
    all within a decade, 2 and 5 within 2.5 decades, none beyond (read when drawn)."""
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))

    def minor(value: float, _: int) -> str:
        low, high = ax.get_ylim()
        decades = np.log10(high / low)
        wanted = {2, 3, 4, 5, 6, 7, 8, 9} if decades < 1 else {2, 5} if decades < 2.5 else set()
        mantissa = round(value / 10 ** np.floor(np.log10(value)))
        return f"{value:g}" if mantissa in wanted else ""

    ax.yaxis.set_minor_formatter(FuncFormatter(minor))


def _errorbar(ax: Axes, x: np.ndarray, values: list, **style: Any) -> None:
    """Means with 95% error bars (none where an interval is unknown)."""
    mean = np.array([v.at()[0] for v in values])
    low = np.array([v.at()[1] for v in values])
    high = np.array([v.at()[2] for v in values])
    bars = np.nan_to_num(np.stack([mean - low, high - mean]))
    ax.errorbar(x, mean, yerr=bars, capsize=3, **style)


def _legend(ax: Axes) -> None:
    """A legend in two smaller columns when it is long, so that it hides less of the data."""
    entries = len(ax.get_legend_handles_labels()[1])
    ax.legend(fontsize=8 if entries <= 4 else 7, ncol=1 if entries <= 4 else 2)


def _colors(result: PlacementResult) -> dict[tuple[str, int], tuple[float, ...]]:
    """Blue for pre-LN, red for post-LN, darker for deeper models: (placement, L) -> RGBA."""
    depths = sorted({run.layers for run in result.runs})
    shade = {
        n: 0.45 + 0.45 * i / max(len(depths) - 1, 1) if len(depths) > 1 else 0.75
        for i, n in enumerate(depths)
    }
    maps = {"pre": colormaps["Blues"], "post": colormaps["Reds"]}
    return {
        (run.placement, run.layers): maps[run.placement](shade[run.layers]) for run in result.runs
    }
