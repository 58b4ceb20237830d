"""Figures of gradient results (matplotlib Figure objects, no pyplot, no torch)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from lninspect.render.figures import figure_of, new_figure, save_figure
from lninspect.render.format import figure_subtitle
from lninspect.results import GradsResult, NormStats
from lninspect.summary import group_norms, norms_of_role, with_grads

FIGURES = ("grads-params.png", "grads-heatmap.png", "grads-scale-vs-std.png")
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


def plot_param_grads(result: GradsResult, ax: Axes | None = None) -> Axes:
    """Gradient norm per layer for each parameter group, log axis."""
    ax = ax or new_figure(11, 5).add_subplot()
    norms = group_norms(result)
    layers = sorted(layer for layer in norms if layer is not None)
    for group, label in LAYER_GROUPS.items():
        values = [norms[layer].get(group, np.nan) for layer in layers]
        if np.isfinite(values).any():
            ax.plot(layers, values, marker="o", label=label)
    outside = {g: v for g, v in norms.get(None, {}).items() if np.isfinite(v)}
    styles = itertools.cycle((":", "--", "-.", (0, (1, 4)), (0, (5, 1, 1, 1, 1, 1))))
    for (group, value), style in zip(outside.items(), styles, strict=False):  # every group
        ax.axhline(
            value,
            color="grey",
            linestyle=style,
            label=f"{OUTSIDE_GROUPS.get(group, group)} (outside the blocks)",
        )
    if any(
        np.nanmax(np.asarray(line.get_ydata(), dtype=float), initial=0) > 0 for line in ax.lines
    ):
        ax.set_yscale("log")  # not when every gradient is NaN or 0: nothing to put on a log axis
    ax.set_xlabel("layer")
    ax.set_ylabel("‖∂L/∂θ‖₂ of the group (log)")
    ax.set_xticks(layers)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    return ax


def plot_grad_heatmap(result: GradsResult, fig: Figure | None = None) -> Figure:
    """|dL/dx| through the norm per token: one panel per role (layers x tokens)."""
    figure = fig or new_figure(11, 7)
    panels = [(role, norms_of_role(result, role)) for role in ("attn", "mlp", "final")]
    panels = [(role, rows) for role, rows in panels if rows]
    heights = [max(len(rows), 1.5) for _, rows in panels]
    axes = figure.subplots(
        len(panels), 1, sharex=True, gridspec_kw={"height_ratios": heights}, squeeze=False
    )[:, 0]
    values = [_through(n) for _, rows in panels for n in rows]
    positive = np.concatenate(values)
    positive = positive[np.isfinite(positive) & (positive > 0)]
    scale = LogNorm(vmin=positive.min(), vmax=positive.max()) if positive.size else None
    for ax, (role, rows) in zip(axes, panels, strict=True):
        grid = np.stack([_through(n) for n in rows])  # (layers, tokens), sequence 0
        grid = np.where(grid > 0, grid, np.nan)  # the last token gets no gradient from the loss
        image = ax.imshow(grid, aspect="auto", interpolation="nearest", norm=scale, cmap="viridis")
        ax.set_ylabel(f"{rows[0].name.rsplit('.', 1)[-1]} ({role})\nlayer")
        ax.set_yticks(
            range(len(rows)), [str(n.layer) if n.layer is not None else "—" for n in rows]
        )
    axes[-1].set_xlabel("token position (sequence 0; blank: zero gradient)")
    figure.colorbar(image, ax=list(axes), label="‖∂L/∂x‖ through the norm (log)")
    return figure


def _through(norm: NormStats) -> np.ndarray:
    """|dL/dx| through the norm per token of sequence 0 (NaN without gradients)."""
    if norm.grad is None:
        return np.full(norm.input.mean.shape[-1], np.nan)
    return norm.grad.input_norm[0]


def plot_scale_vs_std(result: GradsResult, ax: Axes | None = None) -> Axes:
    """Per-token gradient scale of each norm against its input std, coloured by layer."""
    ax = ax or new_figure(8, 6).add_subplot()
    pairs = with_grads(result)
    layered = [n for n, _ in pairs]
    top = max((n.layer for n in layered if n.layer is not None), default=0)
    layers = [n.layer if n.layer is not None else top + 1 for n in layered]
    for (norm, grad), layer in zip(pairs, layers, strict=True):
        scale, std = grad.scale.ravel(), norm.denominator.ravel()
        keep = np.isfinite(scale) & (scale > 0) & np.isfinite(std)
        ax.scatter(
            std[keep],
            scale[keep],
            s=10,
            alpha=0.6,
            c=np.full(keep.sum(), layer),
            cmap="plasma",
            vmin=min(layers),
            vmax=max(layers),
            linewidths=0,
            zorder=2,
        )
    stds = np.concatenate([n.denominator.ravel() for n in layered])
    stds = stds[np.isfinite(stds) & (stds > 0)]
    if stds.size:
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
    ax.set_xlabel("input std of the token at the norm (log)")
    ax.set_ylabel("‖∂L/∂x‖ / ‖∂L/∂y‖ through the norm (log)")
    ax.grid(True, which="both", alpha=0.3)
    mappable = ax.collections[0] if ax.collections else None
    if mappable is not None:
        ax.figure.colorbar(mappable, ax=ax, label=f"layer ({top + 1}: norms outside the blocks)")
    return ax


def save_grads_figures(result: GradsResult, folder: Path) -> list[Path]:
    """Write the three gradient figures into `folder`; return their paths."""
    sub = figure_subtitle(result)
    params = figure_of(plot_param_grads(result))
    params.suptitle(f"Parameter gradient norms per layer\n{sub}")
    heatmap = plot_grad_heatmap(result)
    heatmap.suptitle(f"Gradient through each LayerNorm, per token\n{sub}")
    scatter = figure_of(plot_scale_vs_std(result))
    scatter.suptitle("The backward pass divides by σ: gradient scale vs input std\n" + sub)
    return [
        save_figure(fig, folder / name)
        for fig, name in zip((params, heatmap, scatter), FIGURES, strict=True)
    ]
