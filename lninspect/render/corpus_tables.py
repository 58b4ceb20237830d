"""Rich tables of a corpus run (AggregateResult): per module, and per position by role."""

from __future__ import annotations

import numpy as np
from rich.console import Group

from lninspect.derived import position_ranges, role_means, roles_present
from lninspect.render.format import fmt, header, new_table, table_names, titled
from lninspect.results.aggregate import SPIKE_KEY, AggregateResult, NormAggregate


def aggregate_table(result: AggregateResult, wide: bool = False) -> Group:
    """One row per module: the denominator's spread over the corpus and at the first token.

    The non-finite column appears when some module met NaN or Inf (or with `wide`).
    """
    spikes = result.spike_z is not None
    nonfinite = wide or any(n.positions["mean"].nonfinite for n in result.norms)
    table = new_table()
    columns = ["module", "role"] + (["mean"] if wide else [])
    columns += ["std p50 / p99", "pos 0", "pos 1+", "0 / 1+", "max |x|"]
    columns += (["non-finite"] if nonfinite else []) + (["spikes/token"] if spikes else [])
    for column in columns:
        left = column in ("module", "role")
        table.add_column(
            column,
            justify="left" if left else "right",
            no_wrap=column != "module" or not wide,
            overflow="fold" if column == "module" else "ellipsis",
        )
    names = table_names([n.name for n in result.norms], wide)
    for name, norm in zip(names, result.norms, strict=True):
        cells = _cells(norm, spikes)
        if not wide:
            cells.pop(0)
        if not nonfinite:
            cells.pop(6 if wide else 5)
        table.add_row(name, norm.role, *cells)
    caption = (
        "std = sqrt(var + eps) of each token's input (rms for RMSNorm); p50 / p99 over every "
        "token of the corpus; pos 0 / pos 1+: its mean at the first position / at the "
        "others; max |x| over the corpus" + ("" if wide else "; --wide adds the mean")
    )
    return titled(table, header(result), caption)


def _cells(norm: NormAggregate, spikes: bool) -> list[str]:
    hist = norm.denominator_hist
    first, rest = norm.denominator.pooled(0, 1)[1], norm.denominator.pooled(1)[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = first / rest
    absmax = norm.positions["absmax"].max
    top = float(np.nanmax(absmax)) if np.isfinite(absmax).any() else float("nan")
    cells = [
        fmt(norm.positions["mean"].pooled()[1]),
        f"{fmt(hist.quantile(0.5))} / {fmt(hist.quantile(0.99))}",
        fmt(first),
        fmt(rest),
        fmt(ratio),
        fmt(top),
        str(norm.positions["mean"].nonfinite),
    ]
    if spikes:
        cells.append(fmt(norm.positions[SPIKE_KEY].pooled()[1]))
    return cells


def position_table(result: AggregateResult) -> Group:
    """Mean std (rms) per position range and role: the first-token effect at a glance."""
    roles = roles_present(result)
    table = new_table()
    table.add_column("positions", justify="right", no_wrap=True)
    for role in roles:
        table.add_column(role, justify="right", no_wrap=True)
    for start, stop in position_ranges(result.corpus.seq_len):
        means = role_means(result, start, stop)
        if not means:
            continue
        label = str(start) if stop == start + 1 else f"{start}–{stop - 1}"
        table.add_row(label, *(fmt(means.get(role, float("nan"))) for role in roles))
    caption = "over every sequence of the corpus and the modules of each role"
    return titled(table, "mean std per token position", caption)
