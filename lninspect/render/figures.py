"""Shared matplotlib plumbing: Figure objects built directly (no pyplot), saved atomically."""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lninspect.files import write_atomic

DPI = 110


def new_figure(width: float = 9.0, height: float = 5.0) -> Figure:
    """A Figure with an Agg canvas attached, sized in inches, laid out with constrained layout."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def subtitle(model: str, text: str, width: int = 90) -> str:
    """`model · "text…"`: what every figure names under its title, in about `width` chars."""
    if len(model) > width // 2:  # a long path: keep its end, which names the model
        model = "…" + model[-(width // 2 - 1) :]
    width = max(20, width - len(model))
    snippet = " ".join(text.split())
    if len(snippet) > width:
        snippet = snippet[: width - 1] + "…"
    return f"{model} · \u201c{snippet}\u201d" if snippet else model


def save_figure(figure: Figure, path: Path) -> Path:
    """Render `figure` to PNG at `path` through a temporary file; return the path."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    write_atomic(path, buffer.getvalue())
    return path
