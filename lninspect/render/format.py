"""How numbers, names and tokens are written in tables, figures and the report (no torch)."""

from __future__ import annotations

import numpy as np

from lninspect.results import NormsResult, StatsResult


def fmt(value: float) -> str:
    """A number in 3 significant digits, compact; non-finite values as they are."""
    if not np.isfinite(value):
        return str(value)
    return f"{value:.3g}"


def short_names(names: list[str]) -> list[str]:
    """Drop the dotted prefix that all names share (`transformer.h.0.ln_1` -> `h.0.ln_1`)."""
    parts = [name.split(".") for name in names]
    common = 0
    while all(len(p) > common + 1 for p in parts) and len({p[common] for p in parts}) == 1:
        common += 1
    return [".".join(p[common:]) for p in parts]


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
    line = f"{m.name} ({m.source}) · {m.cls} · {m.dtype} on {m.device}"
    if isinstance(result, StatsResult):
        i = result.input
        line += f" · {i.num_sequences} sequence{'s' if i.num_sequences != 1 else ''}, "
        line += f"{i.num_tokens} tokens"
    return line + f" · {len(result.norms)} norms"


def subtitle(model: str, text: str, width: int = 90) -> str:
    """`model · "text…"`: what every figure names under its title, in about `width` chars."""
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
