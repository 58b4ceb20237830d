"""Rich tables of a comparison (`lninspect compare`), made to fit 80 columns."""

from __future__ import annotations

from rich import box
from rich.console import Group
from rich.table import Table

from lninspect.render.format import MiddlePath, fmt, new_table, short_names, titled
from lninspect.results.compare import TOKEN_DENOMINATOR, CompareResult, MatchedRow
from lninspect.statistics import SUMMARIES

LABELS = {s.key: s.label for s in SUMMARIES} | {TOKEN_DENOMINATOR: "std/rms@tok"}
MAX_ROWS = 15


def how_compared(result: CompareResult) -> str:
    """One line: token by token or per layer, and how norms were matched."""
    how = "token by token (same tokens)" if result.mode == "tokens" else "per layer"
    return f"compared {how}; norms matched by {result.matching}"


def models_table(result: CompareResult) -> Table:
    """One row per model: its spec, class, layers, tokens and loss on the text."""
    table = Table(title=how_compared(result), title_justify="left", box=box.SIMPLE_HEAD)
    for column, right in (
        ("#", True),
        ("model", False),
        ("class", False),
        ("layers", True),
        ("tokens", True),
        ("loss", True),
    ):
        path = column == "model"  # the one column that gives way, shortened in the middle
        table.add_column(column, justify="right" if right else "left", no_wrap=not path)
    for i, m in enumerate(result.models):
        layers = "—" if m.num_layers is None else str(m.num_layers)
        cells = (m.cls, layers, str(m.num_tokens), fmt(m.loss))
        table.add_row(chr(65 + i), MiddlePath(m.spec), *cells)
    return table


def row_label(result: CompareResult, row: MatchedRow) -> str:
    """The first model's (short) module name, or role@depth when matched by depth."""
    if result.matching == "names":
        names = short_names([r.models[0].name for r in result.rows])
        return names[result.rows.index(row)]
    return f"{row.role}@{row.depth:.2f}"


def differences_title(result: CompareResult) -> str:
    """`largest differences from A (15 shown of 50 kept; every one in --json)`."""
    kept, shown = len(result.differences), min(len(result.differences), MAX_ROWS)
    if not kept:
        return "no differences from A"
    if shown == kept:
        return f"largest differences from A ({kept} kept)"
    return f"largest differences from A ({shown} shown of {kept} kept; every one in --json)"


def differences_table(result: CompareResult) -> Group:
    """The largest differences from model A: statistic, norm, model, A's value, its value."""
    caption = (
        "std/rms, scale: medians over tokens (std/rms: the input's std, its rms for RMSNorm; "
        "scale: |dL/dx| / |dL/dy|); max|x|: the largest over tokens"
        + ("; std/rms@tok: the token where it differs most" if result.mode == "tokens" else "")
    )
    table = new_table()
    for column, right in (
        ("norm", False),
        ("stat", False),
        ("vs", False),
        ("A", True),
        ("value", True),
        ("×", True),
        ("token", False),
    ):
        table.add_column(column, justify="right" if right else "left", no_wrap=True)
    for d in result.differences[:MAX_ROWS]:
        token = ""
        if d.token is not None:
            piece = result.tokens[d.token] if d.token < len(result.tokens) else ""
            token = f"t{d.token} {piece[:8]!r}" if piece else f"t{d.token}"
        table.add_row(
            row_label(result, result.rows[d.row]),
            LABELS.get(d.statistic, d.statistic),
            chr(65 + d.model),
            fmt(d.reference),
            fmt(d.value),
            fmt(d.ratio),
            token,
        )
    if not result.differences:
        table.add_row("—", "none", "", "", "", "", "")
    return titled(table, differences_title(result), caption)
