"""Figures of gradient results (matplotlib Figure objects, no pyplot, no torch)."""

from __future__ import annotations

import itertools

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from lninspect.derived import group_norms, with_grads
from lninspect.render.figures import (
    figure_of,
    layer_colours,
    mark_standout_tokens,
    new_figure,
    nothing_to_draw,
    readable_log_ticks,
    say_nothing_to_show,
)
from lninspect.render.stats_plots import heatmap_height, label_panel, row_labels
from lninspect.results import GradsResult, NormStats
from lninspect.streams import canonical, heatmap_panels, token_row

LAYER_GROUPS = {
    "attn_in": "attention in",
    "attn_out": "attention out",
    "mlp_in": "MLP in",
    "mlp_out": "MLP out",
    "norm_weight": "norm weights",
    "norm_bias": "norm biases",
}
OUTSIDE_GROUPS = {
    "embed": "embeddings",
    "head": "output head",
    "norm_weight": "final norm weight",
    "norm_bias": "final norm bias",
    "other": "other",
}


OUTSIDE_MARKERS = ("s", "D", "^", "v", "P")


def plot_param_grads(result: GradsResult, ax: Axes | None = None) -> Axes:
    """Gradient norm per layer for each parameter group, log axis; the groups outside the
    blocks (embeddings, final norm, head) as points side by side at `outside`."""
    ax = ax or new_figure(11, 5).add_subplot()
    norms = group_norms(result)
    layers = sorted(layer for layer in norms if layer is not None)
    for group, label in LAYER_GROUPS.items():
        values = [norms[layer].get(group, np.nan) for layer in layers]
        if np.isfinite(values).any():
            ax.plot(layers, values, marker="o", label=label)
    outside = {g: v for g, v in norms.get(None, {}).items() if np.isfinite(v) and v > 0}
    every = max(1, int(np.ceil(len(layers) / 12)))  # at most about 12 layer labels
    where = (layers[-1] + every) if layers else 0  # a label's width away from the last layer
    offsets = np.linspace(-0.2, 0.2, len(outside)) if len(outside) > 1 else [0.0]
    for (group, value), marker, offset in zip(
        outside.items(), itertools.cycle(OUTSIDE_MARKERS), offsets, strict=False
    ):  # side by side: a final norm's weight and bias often have about the same norm
        ax.plot(
            [where + offset],
            [value],
            marker=marker,
            markersize=8,
            linestyle="none",
            color="0.35",
            markerfacecolor="white" if "bias" in group else "0.35",
            label=f"{OUTSIDE_GROUPS.get(group, group)} (outside the blocks)",
        )
    finite = [np.asarray(line.get_ydata(), dtype=float) for line in ax.lines]
    if not any(np.nanmax(y, initial=0) > 0 for y in finite):
        say_nothing_to_show(ax, "no finite, non-zero parameter gradient to show")
        return ax
    ax.set_yscale("log")
    ax.set_xlabel("layer")
    ax.set_ylabel("‖∂L/∂θ‖₂ of the group (log)")
    shown = layers[::every]
    ticks = shown + ([where] if outside else [])
    ax.set_xticks(ticks, [str(t) for t in shown] + (["outside"] if outside else []))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    return ax


MAX_LAYER_LABELS = 12  # per heatmap panel


def plot_grad_heatmap(result: GradsResult, fig: Figure | None = None) -> Figure:
    """|dL/dx| through the norm per token: the panels of the statistics heatmaps (one per
    group and module name, layers x tokens; the norms outside the blocks last)."""
    panels = heatmap_panels(result)
    figure = fig or new_figure(11, heatmap_height(result))
    if not panels:
        return nothing_to_draw(figure, "no norm to show")
    heights = [max(len(p.norms), 1.5) for p in panels]
    axes = figure.subplots(
        len(panels), 1, sharex=True, gridspec_kw={"height_ratios": heights}, squeeze=False
    )[:, 0]
    values = [_through(n) for p in panels for n in p.norms]
    positive = np.concatenate(values)
    positive = positive[np.isfinite(positive) & (positive > 0)]
    scale = LogNorm(vmin=positive.min(), vmax=positive.max()) if positive.size else None
    for ax, panel in zip(axes, panels, strict=True):
        grid = np.stack([_through(n) for n in panel.norms])  # (norms, tokens), sequence 0
        grid = np.where(grid > 0, grid, np.nan)  # the last token gets no gradient from the loss
        image = ax.imshow(grid, aspect="auto", interpolation="nearest", norm=scale, cmap="viridis")
        label_panel(ax, panel)
        every = max(1, int(np.ceil(len(panel.norms) / MAX_LAYER_LABELS)))  # no overlaps
        labels = row_labels(result, panel)
        ax.set_yticks(range(0, len(labels), every), labels[::every])
    if not positive.size:
        say_nothing_to_show(axes[0], "no finite, non-zero gradient through the norms")
    grid = np.stack([np.where(v > 0, v, np.nan) for v in values])  # every panel's rows
    pieces = result.input.tokens[0] if result.input.tokens else []
    caption = mark_standout_tokens(axes[0], grid, pieces)
    label = "token position (sequence 0; blank: zero gradient)"
    axes[-1].set_xlabel(f"{label}\n{caption}" if caption else label)
    figure.colorbar(image, ax=list(axes), label="‖∂L/∂x‖ through the norm (log)")
    return figure


def _through(norm: NormStats) -> np.ndarray:
    """|dL/dx| through the norm per token of sequence 0, heads reduced by their median (NaN
    without gradients)."""
    tokens = canonical(norm, norm.input.mean).shape[1]
    if norm.grad is None:
        return np.full(tokens, np.nan)
    return token_row(norm, norm.grad.input_norm)


def plot_scale_vs_std(result: GradsResult, ax: Axes | None = None) -> Axes:
    """Per-token gradient scale of each norm against its input std, coloured by layer."""
    ax = ax or new_figure(8, 6).add_subplot()
    pairs = with_grads(result)
    top = max((n.layer for n, _ in pairs if n.layer is not None), default=-1)
    layers = [n.layer if n.layer is not None else top + 1 for n, _ in pairs]
    # one colour per layer (a 2-layer model has 3 colours, not a continuous 0.25 ... 1.75)
    cmap, colours = layer_colours("plasma", 0, top + 1)
    points = []
    for (norm, grad), layer in zip(pairs, layers, strict=True):
        scale, std = grad.scale.ravel(), norm.denominator.ravel()
        keep = np.isfinite(scale) & (scale > 0) & np.isfinite(std) & (std > 0)
        if keep.any():
            points.append(
                ax.scatter(
                    std[keep],
                    scale[keep],
                    s=10,
                    alpha=0.6,
                    c=np.full(keep.sum(), layer),
                    cmap=cmap,
                    norm=colours,
                    linewidths=0,
                    zorder=2,
                )
            )
    if not points:
        say_nothing_to_show(ax, "no finite gradient scale to show: every token's is NaN, Inf or 0")
        return ax
    stds = np.concatenate([np.asarray(p.get_offsets())[:, 0] for p in points])
    scales = np.concatenate([np.asarray(p.get_offsets())[:, 1] for p in points])
    xs = np.geomspace(stds.min(), stds.max(), 50)
    ax.plot(
        xs,
        1 / xs,
        color="black",
        linestyle="--",
        linewidth=1,
        zorder=1,
        label="1 / std: a norm with unit weight",
    )
    ax.legend(fontsize="small")
    ax.set_xscale("log")
    ax.set_yscale("log")
    readable_log_ticks(ax, "x", float(stds.min()), float(stds.max()))
    readable_log_ticks(ax, "y", float(scales.min()), float(scales.max()))
    ax.set_xlabel("input std of the token at the norm (log)")
    ax.set_ylabel("‖∂L/∂x‖ / ‖∂L/∂y‖ through the norm (log)")
    ax.grid(True, which="both", alpha=0.3)
    bar = figure_of(ax).colorbar(points[0], ax=ax, label="layer")
    shown = sorted(set(layers))
    step = max(1, len(shown) // 12)
    ticks = [t for i, t in enumerate(shown) if i % step == 0 or t == top + 1]
    bar.set_ticks(ticks, labels=["final" if t == top + 1 else str(t) for t in ticks])
    return ax
