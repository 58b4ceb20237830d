"""Figures of `lninspect placement` results (matplotlib Figure objects; no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lninspect.render.figures import new_figure, save_figure
from lninspect.render.placement_tables import POST_LEMMA2, describe
from lninspect.results.placement import PlacementResult, growth_exponent

LAYERS_PNG = "placement-layers.png"
SWEEP_PNG = "placement-sweep.png"
STYLE: dict[str, dict[str, Any]] = {
    "pre": {"linestyle": "-", "marker": "o"},
    "post": {"linestyle": "--", "marker": "s"},
}


def figure_names(layers: list[int]) -> list[str]:
    """The PNG files `save_placement_figures` writes for these depths."""
    return [LAYERS_PNG] + ([SWEEP_PNG] if len(set(layers)) > 1 else [])


def save_placement_figures(result: PlacementResult, folder: Path) -> list[Path]:
    """Draw the figures into `folder` (which must exist); return the paths written."""
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
    """|dloss/dW_ffn_out| per layer, one line per placement and depth, ± the seeds' spread."""
    ax = ax or new_figure().subplots()
    colors = _colors(result)
    for run in result.runs:
        color = colors[run.placement, run.layers]
        x, y, spread = np.arange(run.layers), run.grad_norm["ffn_out"], run.grad_norm_std["ffn_out"]
        ax.plot(
            x, y, color=color, label=f"{run.placement}-LN, L={run.layers}", **STYLE[run.placement]
        )
        ax.fill_between(
            x, np.maximum(y - spread, y * 0.05), y + spread, color=color, alpha=0.15, linewidth=0
        )
    ax.set_yscale("log")
    ax.set_xlabel("layer l (block index, 0 = next to the embeddings)")
    ax.set_ylabel(r"$\|\partial\,\mathrm{loss}/\partial W^{2,l}\|_F$ (nats per unit weight)")
    ax.set_title(r"FFN output weight $W^{2,l}$: mean ± spread over seeds", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax)
    return ax


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
    for run in result.runs:
        if run.placement == "pre":  # ln_1 of each block, then ln_f after the last block
            y = np.concatenate([run.input_ms["ln_1"], run.input_ms["ln_f"]])
            label = f"pre-LN ln_1 (ln_f at l=L), L={run.layers}"
        else:
            y = run.input_ms["ln_2"]
            label = f"post-LN ln_2, L={run.layers}"
        ax.plot(
            np.arange(len(y)),
            y,
            color=colors[run.placement, run.layers],
            label=label,
            **STYLE[run.placement],
        )
    values = np.concatenate([np.concatenate(list(run.input_ms.values())) for run in result.runs])
    if np.nanmax(values) > 30 * np.nanmin(values):  # e.g. GPT-2's init: a tiny pre-LN stream
        ax.set_yscale("log")
    ax.set_xlabel("layer l (blocks the residual stream has passed)")
    ax.set_ylabel(r"$E\|x\|^2/d$ at the norm's input (mean square)")
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
    rows = result.sweep()
    depths = np.array([row.layers for row in rows], dtype=float)
    pre, post = np.array([r.pre for r in rows]), np.array([r.post for r in rows])
    grads.plot(depths, post, color="tab:red", label="post-LN", **STYLE["post"])
    grads.plot(depths, pre, color="tab:blue", label="pre-LN", **STYLE["pre"])
    grads.plot(
        depths,
        pre[0] * np.sqrt(depths[0] / depths),
        color="tab:blue",
        alpha=0.5,
        linestyle=":",
        label="∝ 1/sqrt(L) (Theorem 1, pre-LN)",
    )
    grads.set_ylabel(r"$\|\partial\,\mathrm{loss}/\partial W^{2,L}\|_F$ (nats per unit weight)")
    grads.set_title("Last block's FFN output weight", fontsize=10)
    ratios.plot(depths, [r.ratio for r in rows], color="k", label="measured post/pre", marker="o")
    ratios.plot(
        depths,
        [r.expected for r in rows],
        color="k",
        alpha=0.5,
        linestyle=":",
        label=f"sqrt(L/{rows[0].layers}) × ratio at L={rows[0].layers} (Theorem 1)",
    )
    ratios.set_ylabel("post-LN / pre-LN gradient (ratio)")
    ratios.set_title(
        f"Ratio grows as $L^{{{growth_exponent(rows):.2f}}}$ (Theorem 1: $L^{{0.5}}$)", fontsize=10
    )
    for ax in (grads, ratios):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(depths, [str(int(n)) for n in depths])
        ax.set_xlabel("depth L (blocks)")
        ax.grid(True, which="both", alpha=0.3)
        _legend(ax)
    figure.suptitle(
        "Gradient of the last FFN output weight at initialization against depth\n"
        f"{describe(result.config)}",
        fontsize=11,
    )
    return figure


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
