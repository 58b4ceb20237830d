"""How numbers, names and tokens are written in tables, figures and the report (no torch)."""

from __future__ import annotations

import numpy as np
from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from lninspect.escape import visible
from lninspect.results import NormsResult, StatsResult


def fmt(value: float) -> str:
    """A number in 3 significant digits, compact; non-finite values as they are."""
    if not np.isfinite(value):
        return str(value)
    return f"{value:.3g}"


def short_names(names: list[str]) -> list[str]:
    """Drop the dotted prefix that all names share (`transformer.h.0.ln_1` -> `h.0.ln_1`);
    control characters made visible (a log's names may hold any)."""
    parts = [name.split(".") for name in names]
    common = 0
    while all(len(p) > common + 1 for p in parts) and len({p[common] for p in parts}) == 1:
        common += 1
    return [visible(".".join(p[common:])) for p in parts]


def token_label(result: StatsResult, sequence: int, token: int, width: int = 12) -> str:
    """`t12 ' fox'` (with `s1 ` in front when there are several sequences)."""
    pieces = result.input.tokens
    text = ""
    if sequence < len(pieces) and token < len(pieces[sequence]):
        piece = repr(pieces[sequence][token])
        text = " " + (piece if len(piece) <= width else piece[: width - 1] + "…")
    prefix = f"s{sequence} " if result.input.num_sequences > 1 else ""
    return f"{prefix}t{token}{text}"


def header(result: NormsResult | StatsResult) -> str:
    """One line saying what was inspected, on what, and where."""
    m = result.model
    line = f"{visible(m.name)} ({m.source}) · {m.cls} · {m.dtype} · {m.device}"
    if isinstance(result, StatsResult):
        i = result.input
        sequences = plural(i.num_sequences, "sequence") + ", " if i.num_sequences != 1 else ""
        line += f" · {sequences}{plural(i.num_tokens, 'token')}"
    return line + f" · {plural(len(result.norms), 'norm')}"


def plural(count: int, noun: str) -> str:
    """`1 norm`, `2 norms`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def subtitle(model: str, text: str, width: int = 90) -> str:
    """`model · "text…"`: what every figure names under its title, in about `width` chars."""
    model, text = visible(model), visible(" ".join(text.split()))
    if len(model) > width // 2:  # a long path: keep its end, which names the model
        model = "…" + model[-(width // 2 - 1) :]
    width = max(20, width - len(model))
    snippet = " ".join(text.split())
    if len(snippet) > width:
        snippet = snippet[: width - 1] + "…"
    return f"{model} · \u201c{snippet}\u201d" if snippet else model


def figure_subtitle(result: StatsResult) -> str:
    """The model and the (start of the) text, for under every title."""
    text = "".join(result.input.tokens[0]) if result.input.tokens else ""
    return subtitle(f"{result.model.name} ({result.model.source})", text)


def titled(table: Table, title: str, caption: str | None = None) -> Group:
    """`table` with its title above and its caption below, as text that wraps at the
    terminal's width rather than at the table's (a narrow table would fold its title)."""
    parts: list[Text | Table] = [Text(title, style="bold"), table]
    if caption:
        parts.append(Text(caption, style="dim"))
    return Group(*parts)


def new_table() -> Table:
    """The tables' shared look: a rule under the header, two spaces between columns, no edge."""
    return Table(box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False, show_edge=False)
