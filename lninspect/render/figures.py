"""Shared matplotlib plumbing: Figure objects built directly (no pyplot), saved atomically."""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lninspect.files import write_atomic

DPI = 110


def new_figure(width: float = 9.0, height: float = 5.0) -> Figure:
    """A Figure with an Agg canvas attached, sized in inches, laid out with constrained layout."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def figure_of(ax: Axes) -> Figure:
    """The Figure an Axes drew on (for saving and titling)."""
    figure = ax.get_figure(root=True)
    if not isinstance(figure, Figure):
        raise ValueError("the axes belong to no figure")
    return figure


def save_figure(figure: Figure, path: Path) -> Path:
    """Render `figure` to PNG at `path` through a temporary file; return the path."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    write_atomic(path, buffer.getvalue())
    return path
