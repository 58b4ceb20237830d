"""Rich tables of a corpus run (AggregateResult): per module, and per position by role."""

from __future__ import annotations

import numpy as np
from rich import box
from rich.table import Table

from lninspect.render.format import fmt, short_names
from lninspect.results.aggregate import SPIKE_KEY, AggregateResult, NormAggregate
from lninspect.summary import position_ranges, role_means, roles_present


def corpus_header(result: AggregateResult) -> str:
    """One line: the model, where it ran, and how much text went through it."""
    m, c = result.model, result.corpus
    files = f"{len(c.files)} file{'s' if len(c.files) != 1 else ''}"
    ranks = f" on {c.world_size} processes" if c.world_size > 1 else ""
    return (
        f"{m.name} ({m.source}) · {m.cls} · {m.dtype} on {m.device}{ranks} · {files}, "
        f"{c.documents} documents, {c.sequences} sequences of ≤ {c.seq_len}, "
        f"{c.tokens:,} tokens · {len(result.norms)} norms"
    )


def aggregate_table(result: AggregateResult) -> Table:
    """One row per module: the denominator's spread over the corpus and at the first token."""
    spikes = result.spike_z is not None
    table = Table(
        title=corpus_header(result),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        caption_justify="left",
        caption=(
            "std = sqrt(var + eps) of each token's input (rms for RMSNorm); "
            "p50 / p99 over every token of the corpus; pos 0 / pos 1+: its mean at "
            "the first position / at the others; max |x| over the corpus"
        ),
    )
    for column in (
        "module",
        "role",
        "mean",
        "std p50 / p99",
        "pos 0",
        "pos 1+",
        "0 / 1+",
        "max |x|",
        "non-finite",
    ) + (("spikes/token",) if spikes else ()):
        table.add_column(
            column, justify="left" if column in ("module", "role") else "right", no_wrap=True
        )
    for name, norm in zip(short_names([n.name for n in result.norms]), result.norms, strict=True):
        table.add_row(name, norm.role, *_cells(norm, spikes))
    return table


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


def position_table(result: AggregateResult) -> Table:
    """Mean std (rms) per position range and role: the first-token effect at a glance."""
    roles = roles_present(result)
    table = Table(
        title="mean std per token position",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        caption_justify="left",
        caption=("over every sequence of the corpus and the modules of each role"),
    )
    table.add_column("positions", justify="right", no_wrap=True)
    for role in roles:
        table.add_column(role, justify="right", no_wrap=True)
    for start, stop in position_ranges(result.corpus.seq_len):
        means = role_means(result, start, stop)
        if not means:
            continue
        label = str(start) if stop == start + 1 else f"{start}–{stop - 1}"
        table.add_row(label, *(fmt(means.get(role, float("nan"))) for role in roles))
    return table
