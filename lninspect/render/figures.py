"""Shared matplotlib plumbing: Figure objects built directly (no pyplot), saved atomically."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

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
    """Render `figure` to PNG at `path` through a temporary file; return the path.

    A glyph the font lacks (an emoji in a token) is drawn as a box, without matplotlib's
    warning (which names a source file, on stderr, once per glyph).
    """
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        figure.savefig(buffer, format="png", dpi=DPI)
    write_atomic(path, buffer.getvalue())
    return path


def save_titled(folder: Path, subtitle: str, figures: list[tuple[Figure, str, str]]) -> list[Path]:
    """Title each (figure, title, file name) "title / subtitle" and save it into `folder`."""
    paths = []
    for figure, title, name in figures:
        figure.suptitle(f"{title}\n{subtitle}")
        paths.append(save_figure(figure, folder / name))
    return paths


def say_nothing_to_show(ax: Axes, why: str) -> None:
    """Write in the middle of `ax` why it is empty, instead of leaving blank axes."""
    ax.text(
        0.5,
        0.5,
        why,
        transform=ax.transAxes,
        ha="center",
        va="center",
        wrap=True,
        fontsize="large",
        color="0.35",
    )


def readable_log_ticks(ax: Axes, which: str, low: float, high: float) -> None:
    """Major ticks on a log axis that spans less than two decades: ~5 values of 2 significant
    digits, without matplotlib's minor labels (2×10⁻², 3×10⁻², ... collide in a short span)."""
    if not (0 < low < high) or high / low >= 100:
        return
    values = sorted({float(f"{v:.2g}") for v in np.geomspace(low, high, 5)})
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_ticks(values, [f"{v:.2g}" for v in values])
    axis.set_minor_formatter(NullFormatter())
    lo, hi = ax.get_xlim() if which == "x" else ax.get_ylim()
    span = (min(lo, values[0]), max(hi, values[-1]))
    (ax.set_xlim if which == "x" else ax.set_ylim)(*span)
