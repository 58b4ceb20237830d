"""Rich tables of one run's statistics and of the norms found (no torch, no transformers).

Each table fits 80 columns (the width of a pipe or a file) for the usual models; `wide=True`
adds the columns that do not (weights, types, ranges).
"""

from __future__ import annotations

import warnings

import numpy as np
from rich.console import Group

from lninspect.render.format import fmt, header, new_table, short_names, titled, token_label
from lninspect.results import NormDescription, NormsResult, NormStats, StatsResult
from lninspect.statistics import STATISTICS
from lninspect.summary import largest_abs, nan_median, nan_quantiles, per_token

TOKEN_WIDTH = 8  # characters of a token's text in the `at` column (12 with wide)


def stats_table(result: StatsResult, wide: bool = False) -> Group:
    """One row per normalization module: input mean and std, the largest |x| (the weight)."""
    table = new_table()
    table.add_column("module", overflow="fold")
    table.add_column("role", no_wrap=True)
    for column in ("mean", "std med", "std min…max", "max |x|"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("at", no_wrap=True, overflow="ellipsis")
    columns = [s for s in STATISTICS if s.column] if wide else []
    for statistic in columns:
        table.add_column(statistic.label or statistic.key, justify="right", no_wrap=True)
    if wide:
        table.add_column("weight", justify="right", no_wrap=True)
        table.add_column("w<0", justify="right", no_wrap=True)
    for name, norm in zip(short_names([n.name for n in result.norms]), result.norms, strict=True):
        cells = _stats_cells(result, norm, wide)
        for statistic in columns:
            values = per_token(norm, statistic.key)
            cells.append(fmt(nan_median(values)) if values is not None else "—")
        if wide:
            cells += _weight_cells(norm)[::2]
        table.add_row(name, norm.role, *cells)
    caption = (
        "std = sqrt(var + eps) of each token's input over the hidden axis (rms for RMSNorm), "
        "median and range over tokens; at = the token and dimension of max |x|"
        + ("; weight = the affine gain, mean ± std" if wide else "; --wide adds the weights")
        + "".join(f"; {s.label or s.key} = median {s.json}" for s in columns)
    )
    return titled(table, header(result), caption)


def _stats_cells(result: StatsResult, norm: NormStats, wide: bool) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = float(np.nanmean(norm.input.mean))
    low, median, high = nan_quantiles(norm.denominator, (0.0, 0.5, 1.0))
    peak = largest_abs(norm)
    where = peak.where or (0,)
    width = 12 if wide else TOKEN_WIDTH
    token = token_label(result, where[0], where[1] if len(where) > 1 else 0, width)
    return [
        fmt(mean),
        fmt(median),
        f"{fmt(low)}…{fmt(high)}",
        fmt(peak.value),
        f"{token} d{peak.dim}" if peak.where is not None else "—",
    ]


def _weight_cells(norm: NormDescription) -> list[str]:
    """mean ± std, min … max, negative count; dashes for a norm without weight."""
    w = norm.weight
    if w is None:
        return ["—", "—", "—"]
    return [f"{fmt(w.mean)} ± {fmt(w.std)}", f"{fmt(w.min)} … {fmt(w.max)}", str(w.negative)]


def norms_table(result: NormsResult | StatsResult, wide: bool = False) -> Group:
    """The modules found as a tree by block, with kind, layer, role, placement, eps and weight."""
    table = new_table()
    columns = ["module", "kind", "layer", "role", "placement", "eps", "weight"]
    if wide:
        columns[1:1] = ["type"]
        columns += ["weight min … max", "w<0"]
    for column in columns:
        right = column in ("layer", "eps", "w<0", "weight")
        table.add_column(
            column,
            justify="right" if right else "left",
            no_wrap=column != "module",
            overflow="fold" if column == "module" else "ellipsis",
        )
    block: str | None = None
    for name, norm in zip(short_names([n.name for n in result.norms]), result.norms, strict=True):
        parent, leaf = tree_split(name)
        if parent is not None and parent != block:
            table.add_row(parent)  # the block, as a heading for its norms
        block = parent
        weight = _weight_cells(norm)
        cells = [
            name if parent is None else f"  {leaf}",
            norm.kind,
            "—" if norm.layer is None else str(norm.layer),
            norm.role,
            norm.placement,
            f"{norm.eps:g}",
            weight[0],
        ]
        if wide:
            cells[1:1] = [norm.type]
            cells += weight[1:]
        table.add_row(*cells)
    caption = "weight: the affine gain, mean ± std" + (
        "" if wide else "; --wide adds the class, the range and the count of negative entries"
    )
    return titled(table, header(result), caption)


def tree_split(name: str) -> tuple[str | None, str]:
    """`h.3.attn.q_norm` -> (`h.3`, `attn.q_norm`): the block and the path inside it."""
    parts = name.split(".")
    index = next((i for i, p in enumerate(parts) if p.isdigit()), None)
    if index is None or index == len(parts) - 1:
        return None, name
    return ".".join(parts[: index + 1]), ".".join(parts[index + 1 :])
