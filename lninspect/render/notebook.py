"""What a notebook shows for a result, a comparison and a watch log (`_repr_html_`): a
compact HTML table under a headline, with a small inline PNG figure. matplotlib's `Figure`
only, never pyplot, so that displaying a result leaves no pyplot state behind. No torch.

Importing this module registers the views (lninspect.display): the results do not import it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from lninspect.derived import nan_quantiles, spike_share, with_grads
from lninspect.display import register_html
from lninspect.render.compare_tables import how_compared, row_label
from lninspect.render.figures import png_bytes
from lninspect.render.format import fmt, header, short_names
from lninspect.render.grad_tables import median_cell
from lninspect.render.pages import macros, png_data
from lninspect.render.run_tables import run_header
from lninspect.render.spike_tables import spikes_table
from lninspect.render.stats_tables import denominator_label, stats_cells
from lninspect.results.compare import CompareResult
from lninspect.results.one_text import StatsResult
from lninspect.results.watch import WatchLog
from lninspect.statistics import INPUT_DENOMINATOR
from lninspect.trends import first_last, losses, norm_series, record_axis

MAX_ROWS = 30  # rows shown; the rest are counted under the table
FIGURE_SIZE = (4.2, 1.9)  # inches, at 100 dpi


Section = tuple[str, Sequence[str], Sequence[Sequence[str]]]  # headline, columns, rows


def html_block(
    headline: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    figure: Figure,
    sections: Sequence[Section] = (),
) -> str:
    """The headline, the first MAX_ROWS rows as a table, the figure inline (PNG, base64), then
    further tables under them (templates/notebook.html)."""
    return str(
        macros("notebook.html").block(
            headline,
            columns,
            rows[:MAX_ROWS],
            _more(rows),
            png_base64(figure),
            [(title, cells, table[:MAX_ROWS], _more(table)) for title, cells, table in sections],
        )
    )


def _more(rows: Sequence[object]) -> int:
    """How many rows are left out of a table of MAX_ROWS rows."""
    return max(len(rows) - MAX_ROWS, 0)


def png_base64(figure: Figure) -> str:
    return png_data(png_bytes(figure, dpi=100, bbox_inches="tight"))


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
    label = denominator_label(result)
    columns = ["module", "role", "mean", f"{label} med", "max |x|", "at", "out mean", "out std"]
    names = short_names([n.name for n in result.norms])
    rows = [
        [name, norm.role, *stats_cells(result, norm, wide=False)]
        for name, norm in zip(names, result.norms, strict=True)
    ]
    medians = np.array([nan_quantiles(n.denominator, (0.5,))[0] for n in result.norms])
    figure = _line_figure(
        f"median {label} of each norm's input",
        "norm (model order)",
        label,
        [("", np.arange(len(medians)), medians)],
    )
    sections = _grads_section(result) + _spikes_section(result)
    return html_block(header(result), columns, rows, figure, sections)


def _grads_section(result: StatsResult) -> list[Section]:
    """The gradients through each norm (a capture with grads=True), as `lninspect grads`."""
    pairs = with_grads(result)
    if not pairs:
        return []
    names = short_names([n.name for n, _ in pairs])
    rows = [
        [name, norm.role, *(median_cell(v) for v in (g.output_norm, g.input_norm, g.residual_norm))]
        + [fmt(nan_quantiles(g.scale, (0.5,))[0])]
        for name, (norm, g) in zip(names, pairs, strict=True)
    ]
    columns = ["module", "role", "|dL/dy|", "|dL/dx|", "residual", "scale"]
    headline = "gradients, medians over tokens: at the output, through the norm, residual"
    return [(headline, columns, rows)]


def _spikes_section(result: StatsResult) -> list[Section]:
    """The largest spikes (a capture with spikes=...), as the spikes table of `--spikes`."""
    if all(n.spikes is None for n in result.norms):
        return []
    table = spikes_table(result, limit=MAX_ROWS)
    columns = [str(c.header) for c in table.columns]
    rows = [list(r) for r in zip(*([str(x) for x in c.cells] for c in table.columns), strict=True)]
    share = spike_share(result)
    headline = str(table.title) + (
        f" · {share:.1%} of (token, norm) pairs have one" if np.isfinite(share) else ""
    )
    return [(headline, columns, rows)]


def compare_html(result: CompareResult) -> str:
    """The models (loss, tokens) and each one's median input std per matched row."""
    columns = ["row", *(f"{chr(65 + i)} std" for i in range(len(result.models)))]
    rows = [
        [
            row_label(result, row),
            *(fmt(v.medians.get(INPUT_DENOMINATOR, np.nan)) for v in row.models),
        ]
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
            np.array([row.models[i].medians.get(INPUT_DENOMINATOR, np.nan) for row in result.rows]),
        )
        for i in range(len(result.models))
    ]
    figure = _line_figure("median input std per matched norm", "matched norm", "std", lines)
    return html_block(f"{how_compared(result)} · {models}", columns, rows, figure)


def watch_html(log: WatchLog) -> str:
    """Per norm: median input std first → last recorded step; the loss over steps."""
    series = norm_series(log)
    rows = [
        [name, *(fmt(v) for v in first_last(s.values[INPUT_DENOMINATOR]))]
        for name, s in zip(short_names([s.name for s in series]), series, strict=True)
    ]
    steps, xlabel = record_axis(log)
    figure = _line_figure("loss", xlabel, "loss", [("", steps, losses(log))])
    return html_block(run_header(log), ["module", "std first", "std last"], rows, figure)


register_html(StatsResult, stats_html)  # GradsResult too
register_html(CompareResult, compare_html)
register_html(WatchLog, watch_html)
