"""What a notebook shows for a result, a comparison and a watch log (`_repr_html_`): a
compact HTML table under a headline, with a small inline PNG figure. matplotlib's `Figure`
only, never pyplot, so that displaying a result leaves no pyplot state behind. No torch."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from html import escape

import numpy as np
from matplotlib.figure import Figure

from lninspect.render.format import fmt, header, short_names
from lninspect.results.compare import CompareResult
from lninspect.results.stats import StatsResult
from lninspect.results.watch import WatchLog
from lninspect.summary import nan_quantiles

MAX_ROWS = 30  # rows shown; the rest are counted under the table
FIGURE_SIZE = (4.2, 1.9)  # inches, at 100 dpi


def html_block(
    headline: str, columns: Sequence[str], rows: Sequence[Sequence[str]], figure: Figure
) -> str:
    """The headline, the first MAX_ROWS rows as a table, the figure inline (PNG, base64)."""
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>"
        for row in rows[:MAX_ROWS]
    )
    more = f"<p>… {len(rows) - MAX_ROWS} more rows</p>" if len(rows) > MAX_ROWS else ""
    return (
        f'<div class="lninspect"><p><b>{escape(headline)}</b></p>'
        f'<div style="display:flex;gap:1em;align-items:flex-start">'
        f"<div><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}</div>"
        f'<img alt="{escape(headline)}" src="data:image/png;base64,{png_base64(figure)}"/>'
        "</div></div>"
    )


def png_base64(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _line_figure(
    title: str, xlabel: str, ylabel: str, lines: Sequence[tuple[str, np.ndarray, np.ndarray]]
) -> Figure:
    figure = Figure(figsize=FIGURE_SIZE)
    ax = figure.add_subplot()
    for label, x, y in lines:
        ax.plot(x, y, marker="o", markersize=3, label=label)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.title.set_fontsize(9)
    if len(lines) > 1:
        ax.legend(fontsize=7)
    figure.tight_layout()
    return figure


def stats_html(result: StatsResult) -> str:
    """The stats table's columns (lninspect.render.stats_tables) and the median denominator
    of every norm, in model order."""
    from lninspect.render.stats_tables import _stats_cells, denominator_label

    label = denominator_label(result)
    columns = ["module", "role", "mean", f"{label} med", "max |x|", "at", "out mean", "out std"]
    names = short_names([n.name for n in result.norms])
    rows = [
        [name, norm.role, *_stats_cells(result, norm, wide=False)]
        for name, norm in zip(names, result.norms, strict=True)
    ]
    medians = np.array([nan_quantiles(n.denominator, (0.5,))[0] for n in result.norms])
    figure = _line_figure(
        f"median {label} of each norm's input",
        "norm (model order)",
        label,
        [("", np.arange(len(medians)), medians)],
    )
    return html_block(header(result), columns, rows, figure)


def compare_html(result: CompareResult) -> str:
    """The models (loss, tokens) and each one's median input std per matched row."""
    from lninspect.render.compare_tables import how_compared, row_label

    columns = ["row", *(f"{chr(65 + i)} std" for i in range(len(result.models)))]
    rows = [
        [row_label(result, row), *(fmt(v.medians.get("input_std", np.nan)) for v in row.models)]
        for row in result.rows
    ]
    models = " · ".join(
        f"{chr(65 + i)}: {m.spec} (loss {fmt(m.loss)})" for i, m in enumerate(result.models)
    )
    x = np.arange(len(result.rows))
    lines = [
        (
            chr(65 + i),
            x,
            np.array([row.models[i].medians.get("input_std", np.nan) for row in result.rows]),
        )
        for i in range(len(result.models))
    ]
    figure = _line_figure("median input std per matched norm", "matched norm", "std", lines)
    return html_block(f"{how_compared(result)} · {models}", columns, rows, figure)


def watch_html(log: WatchLog) -> str:
    """Per norm: median input std first → last recorded step; the loss over steps."""
    from lninspect.render.run_tables import run_header
    from lninspect.trends import first_last, losses, norm_series, record_axis

    series = norm_series(log)
    rows = [
        [name, *(fmt(v) for v in first_last(s.values["input_std"]))]
        for name, s in zip(short_names([s.name for s in series]), series, strict=True)
    ]
    steps, xlabel = record_axis(log)
    figure = _line_figure("loss", xlabel, "loss", [("", steps, losses(log))])
    return html_block(run_header(log), ["module", "std first", "std last"], rows, figure)
