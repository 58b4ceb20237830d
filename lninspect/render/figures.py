"""Shared matplotlib plumbing: Figure objects built directly (no pyplot), saved atomically."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, Colormap, LinearSegmentedColormap
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.ticker import FuncFormatter, LogFormatter, NullFormatter, ScalarFormatter

from lninspect.files import write_atomic

DPI = 110
MATH = "lninspect-math"  # the gid of a text lninspect wrote as mathtext ($W^{2,l}$)


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
    write_atomic(path, png_bytes(figure))
    return path


def png_bytes(figure: Figure, **savefig: object) -> bytes:
    """`figure` as PNG, its texts drawn as written (`plain_text`)."""
    plain_text(figure)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        figure.savefig(buffer, format="png", **{"dpi": DPI, **savefig})  # type: ignore[arg-type]
    return buffer.getvalue()


def allow_math(text: Text) -> Text:
    """Mark `text`, a label lninspect wrote with `$...$`, to be drawn as mathtext."""
    text.set_gid(MATH)
    return text


def plain_text(figure: Figure) -> None:
    """Draw every text of `figure` as written, never as mathtext: a `$` in a token, a model,
    file or norm name is a dollar sign (`$\\x$` made matplotlib raise). Only the texts marked
    by `allow_math` and the numbers of numeric axes (10⁻² on a log axis) stay mathtext."""
    numeric = set()
    for ax in figure.findobj(Axes):
        for axis in (ax.xaxis, ax.yaxis):
            numeric |= _numeric_labels(axis)
    for text in figure.findobj(Text):
        if text.get_gid() != MATH and id(text) not in numeric:
            text.set_parse_math(False)


def _numeric_labels(axis: Axis) -> set[int]:
    """The ids of `axis`'s labels that matplotlib's number formatters write. Every tick that
    drawing will use is made now: a tick made later would take mathtext from rcParams."""
    found = {id(axis.offsetText)}
    for ticks, formatter in (
        (axis.get_major_ticks(len(axis.get_majorticklocs())), axis.get_major_formatter()),
        (axis.get_minor_ticks(len(axis.get_minorticklocs())), axis.get_minor_formatter()),
    ):
        if isinstance(formatter, (ScalarFormatter, LogFormatter)):
            found |= {id(label) for tick in ticks for label in (tick.label1, tick.label2)}
    return found


def save_titled(folder: Path, subtitle: str, figures: list[tuple[Figure, str, str]]) -> list[Path]:
    """Title each (figure, title, file name) "title / subtitle" and save it into `folder`."""
    paths = []
    for figure, title, name in figures:
        figure.suptitle(f"{title}\n{subtitle}")
        paths.append(save_figure(figure, folder / name))
    return paths


def plain_ticks(ax: Axes) -> None:
    """Log-axis labels as plain numbers (0.07, not 7×10^-2); minor ones where there is room:
    all within a decade, 2 and 5 within 2.5 decades, none beyond (read when drawn)."""
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))

    def minor(value: float, _: int) -> str:
        low, high = ax.get_ylim()
        decades = np.log10(high / low)
        wanted = {2, 3, 4, 5, 6, 7, 8, 9} if decades < 1 else {2, 5} if decades < 2.5 else set()
        mantissa = round(value / 10 ** np.floor(np.log10(value)))
        return f"{value:g}" if mantissa in wanted else ""

    ax.yaxis.set_minor_formatter(FuncFormatter(minor))


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


def nothing_to_draw(figure: Figure, why: str) -> Figure:
    """`figure` as one empty panel that says why (a figure of no rows: matplotlib refuses a
    grid of 0 panels)."""
    ax = figure.add_subplot()
    ax.set_axis_off()
    say_nothing_to_show(ax, why)
    return figure


def legend_below(figure: Figure, axes: Sequence[Axes], columns: int = 6) -> None:
    """One legend for `axes` (an entry per label), below everything the figure draws: a legend
    anchored under an axes at a fixed offset covers tick labels longer than the offset."""
    entries: dict[str, Artist] = {}
    for ax in axes:
        handles, labels = ax.get_legend_handles_labels()
        for handle, label in zip(handles, labels, strict=True):
            entries.setdefault(label, handle)
    if entries:
        figure.legend(
            list(entries.values()),
            list(entries),
            loc="outside lower center",
            ncols=min(columns, len(entries)),
            fontsize="small",
        )


def layer_colours(cmap: str, first: int, last: int) -> tuple[Colormap, BoundaryNorm]:
    """One colour of `cmap` per whole number from `first` to `last` (layers), not a continuous
    scale: 3 colours for 2 layers and the final norm. Past the map's 256 colours it is
    interpolated to one colour each (a BoundaryNorm needs as many colours as bins)."""
    bounds = np.arange(first - 0.5, last + 1.5)
    base = colormaps[cmap]
    if len(bounds) - 1 > base.N:
        ramp = base(np.linspace(0, 1, base.N))
        base = LinearSegmentedColormap.from_list(cmap, ramp, N=len(bounds) - 1)
    return base, BoundaryNorm(bounds, base.N)


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


STANDOUT_SHARE = 0.25  # a token marked above a heatmap holds the largest value of this many rows


def standout_tokens(grid: np.ndarray, most: int = 3) -> list[tuple[int, int]]:
    """(token, rows) of the tokens that hold the largest |value| of at least a quarter of the
    rows (modules) of `grid` (rows x tokens, NaN blank), most rows first, at most `most`.
    A row whose largest value is its median (constant) has no such token."""
    size = np.where(np.isfinite(grid), np.abs(grid), np.nan)
    finite = np.isfinite(size).any(axis=1)
    if not finite.any():
        return []
    size = size[finite]
    top = np.nanargmax(size, axis=1)
    top = top[np.nanmax(size, axis=1) > np.nanmedian(size, axis=1)]
    tokens, rows = np.unique(top, return_counts=True)
    found = [(int(t), int(n)) for t, n in zip(tokens, rows, strict=True)]
    found = [(t, n) for t, n in found if n >= STANDOUT_SHARE * len(top)]
    return sorted(found, key=lambda p: (-p[1], p[0]))[:most]


def mark_standout_tokens(ax: Axes, grid: np.ndarray, pieces: list[str]) -> str:
    """Name above `ax` (the top heatmap panel) the tokens that hold the largest value of most
    rows: a column one token wide is a pixel or two in a long text, easy to miss. The data is
    drawn as it is; returns a caption for the x label ("" when no token stands out)."""
    found = standout_tokens(grid)
    if not found:
        return ""
    top = ax.secondary_xaxis("top")
    positions = [t for t, _ in found]
    top.set_xticks(positions, ["▼"] * len(positions), fontsize=9, color="#b00020")
    top.tick_params(length=0, pad=0)
    rows = int(np.isfinite(grid).any(axis=1).sum())
    named = ", ".join(
        f"t{t} {pieces[t][:12]!r} ({n} of {rows})" if t < len(pieces) else f"t{t} ({n} of {rows})"
        for t, n in found
    )
    return f"▼ above: the token with the largest |value| of many norms: {named}"
