"""Rich tables of one run's statistics and of the norms found (no torch, no transformers).

Each table fits 80 columns (the width of a pipe or a file) for the usual models; `wide=True`
adds the columns that do not (weights, types, ranges).
"""

from __future__ import annotations

import warnings

import numpy as np
from rich.console import Group

from lninspect.derived import largest_abs, nan_median, nan_quantiles, per_token
from lninspect.render.fit import Column, FitTable
from lninspect.render.format import fmt, header, new_table, place_label, table_names, titled
from lninspect.results import NormDescription, NormsResult, NormStats, StatsResult
from lninspect.statistics import STATISTICS, denominator_key

TOKEN_WIDTH = 8  # characters of a token's text in the `at` column (12 with wide)


def stats_table(result: StatsResult, wide: bool = False) -> FitTable:
    """One row per normalization module: what goes in (mean, std or rms, the largest |x|) and
    what comes out (mean and std of y); `wide` adds the range over tokens and the weight.
    Where 80 columns cannot hold them all, `out mean`, `role`, `mean` and `at` go, in that
    order."""
    denominator = denominator_label(result)
    declared = [s for s in STATISTICS if s.column] if wide else []
    headers = ["module", "role", "mean", f"{denominator} med"]
    headers += [f"{denominator} min…max"] if wide else []
    headers += ["max |x|", "at", "out mean", "out std"]
    headers += [s.label or s.key for s in declared] + (SPREAD_HEADERS if wide else [])
    headers += ["weight", "w<0"] if wide else []
    rows = []
    names = table_names([n.name for n in result.norms], wide)
    for name, norm in zip(names, result.norms, strict=True):
        cells = [name, norm.role, *stats_cells(result, norm, wide)]
        for statistic in declared:
            values = per_token(norm, statistic.key)
            cells.append(fmt(nan_median(values)) if values is not None else "—")
        cells += spread_cells(norm) if wide else []
        rows.append(cells + (_weight_cells(norm)[::2] if wide else []))
    columns = [
        Column(h, [r[i] for r in rows], left=h in ("module", "role", "at"), drop=DROPS.get(h))
        for i, h in enumerate(headers)
    ]
    caption = (
        f"{denominator} = {DENOMINATORS[denominator]} of each token's input over the hidden "
        "axis, median over tokens; at = the token and dimension of max |x|; out = the "
        "output y, medians over tokens of its mean and std"
        + ("; weight = the affine gain, mean ± std" if wide else "")
        + "".join(f"; {s.label or s.key} = median {s.json}" for s in declared)
        + (SPREAD_CAPTION if wide else "")
    )
    return FitTable(header(result), columns, caption, wide, more="the weights")


SPREAD_HEADERS = ["s cv", "cv rest", "s₀/s"]
SPREAD_CAPTION = (
    "; s cv = std / mean of s over tokens (cv rest: without each sequence's first token);"
    " s₀/s = first token's s / median s of the rest"
)


def spread_cells(norm: NormStats) -> list[str]:
    """The scale's spread (lninspect.scale) as SPREAD_HEADERS' cells."""
    spread = norm.scale
    if spread is None:
        return ["—"] * len(SPREAD_HEADERS)
    return [fmt(spread.cv), fmt(spread.cv_rest), fmt(spread.first_ratio)]


DROPS = {"out mean": 1, "role": 2, "mean": 3, "at": 4}  # left out first where 80 columns are few


DENOMINATORS = {
    "std": "sqrt(var + eps)",
    "rms": "sqrt(mean x² + eps)",
    "std/rms": "sqrt(var + eps) for LayerNorm, sqrt(mean x² + eps) for RMSNorm,",
}


def denominator_label(result: StatsResult) -> str:
    """What the norms divide by: `rms` (all RMSNorm), `std` (all LayerNorm) or `std/rms`."""
    kinds = {denominator_key(n.kind) for n in result.norms}
    return kinds.pop() if len(kinds) == 1 else "std/rms"


def stats_cells(result: StatsResult, norm: NormStats, wide: bool) -> list[str]:
    """A norm's cells of the stats table after its name and role (also the notebook's)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = float(np.nanmean(norm.input.mean))
    low, median, high = nan_quantiles(norm.denominator, (0.0, 0.5, 1.0))
    peak = largest_abs(norm)
    width = 12 if wide else TOKEN_WIDTH
    spread = [f"{fmt(low)}…{fmt(high)}"] if wide else []
    out_mean, out_std = (nan_quantiles(v, (0.5,))[0] for v in (norm.output.mean, norm.output.std))
    return [
        fmt(mean),
        fmt(median),
        *spread,
        fmt(peak.value),
        place_label(result, peak.at, peak.dim, width) if peak.at is not None else "—",
        fmt(out_mean),
        fmt(out_std),
    ]


def _weight_cells(norm: NormDescription) -> list[str]:
    """mean ± std, min … max, negative count; dashes for a norm without weight."""
    w = norm.weight
    if w is None:
        return ["—", "—", "—"]
    return [f"{fmt(w.mean)} ± {fmt(w.std)}", f"{fmt(w.min)} … {fmt(w.max)}", str(w.negative)]


def norms_table(result: NormsResult | StatsResult, wide: bool = False) -> Group:
    """The modules found, one row each (short names, full with `wide`): kind, layer, role,
    placement, eps and weight."""
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
            no_wrap=column != "module" or not wide,
            overflow="fold" if column == "module" else "ellipsis",
        )
    for name, norm in zip(
        table_names([n.name for n in result.norms], wide), result.norms, strict=True
    ):
        weight = _weight_cells(norm)
        cells = [
            name,
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
