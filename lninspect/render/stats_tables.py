"""Rich tables of one run's statistics and of the norms found (no torch, no transformers)."""

from __future__ import annotations

import warnings

import numpy as np
from rich import box
from rich.table import Table

from lninspect.render.format import fmt, header, short_names, token_label
from lninspect.results import NormDescription, NormsResult, NormStats, StatsResult
from lninspect.summary import nan_quantiles


def stats_table(result: StatsResult) -> Table:
    """One row per normalization module: input mean and std, the largest |x|, the weight."""
    table = Table(
        title=header(result),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        caption=(
            "std = sqrt(var + eps) of each token's input over the hidden axis (rms for RMSNorm); "
            "weight = the module's affine gain"
        ),
        caption_justify="left",
    )
    table.add_column("module", no_wrap=True)
    table.add_column("role", no_wrap=True)
    table.add_column("mean", justify="right", no_wrap=True)
    table.add_column("std min / median / max", justify="right", no_wrap=True)
    table.add_column("max |x|", justify="right", no_wrap=True)
    table.add_column("at token, dim", overflow="fold")
    table.add_column("weight", justify="right")
    table.add_column("w<0", justify="right")
    for name, norm in zip(short_names([n.name for n in result.norms]), result.norms, strict=True):
        table.add_row(name, norm.role, *_stats_cells(result, norm))
    return table


def _stats_cells(result: StatsResult, norm: NormStats) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = float(np.nanmean(norm.input.mean))
    std = " / ".join(fmt(v) for v in nan_quantiles(norm.denominator, (0.0, 0.5, 1.0)))
    absmax = np.where(np.isfinite(norm.input.absmax), norm.input.absmax, -np.inf)
    where = np.unravel_index(int(np.argmax(absmax)), absmax.shape)
    token = token_label(result, int(where[0]), int(where[1]) if len(where) > 1 else 0)
    return [
        fmt(mean),
        std,
        fmt(float(norm.input.absmax[where])),
        f"{token}, d{int(norm.input.absmax_dim[where])}",
        *_weight_cells(norm)[::2],
    ]


def _weight_cells(norm: NormDescription) -> list[str]:
    """mean ± std, min … max, negative count; dashes for a norm without weight."""
    w = norm.weight
    if w is None:
        return ["—", "—", "—"]
    return [f"{fmt(w.mean)} ± {fmt(w.std)}", f"{fmt(w.min)} … {fmt(w.max)}", str(w.negative)]


def norms_table(result: NormsResult | StatsResult) -> Table:
    """The modules found as a tree by block, with kind, layer, role, placement, eps and weight."""
    table = Table(title=header(result), title_justify="left", box=box.SIMPLE_HEAD)
    for column in (
        "module",
        "type",
        "kind",
        "layer",
        "role",
        "placement",
        "eps",
        "weight mean ± std",
        "weight min … max",
        "w<0",
    ):
        table.add_column(column, justify="right" if column in ("layer", "eps", "w<0") else "left")
    block: str | None = None
    for name, norm in zip(short_names([n.name for n in result.norms]), result.norms, strict=True):
        parent, leaf = tree_split(name)
        if parent is not None and parent != block:
            table.add_row(parent)  # the block, as a heading for its norms
        block = parent
        table.add_row(
            name if parent is None else f"  {leaf}",
            norm.type,
            norm.kind,
            "—" if norm.layer is None else str(norm.layer),
            norm.role,
            norm.placement,
            f"{norm.eps:g}",
            *_weight_cells(norm),
        )
    return table


def tree_split(name: str) -> tuple[str | None, str]:
    """`h.3.attn.q_norm` -> (`h.3`, `attn.q_norm`): the block and the path inside it."""
    parts = name.split(".")
    index = next((i for i, p in enumerate(parts) if p.isdigit()), None)
    if index is None or index == len(parts) - 1:
        return None, name
    return ".".join(parts[: index + 1]), ".".join(parts[index + 1 :])
