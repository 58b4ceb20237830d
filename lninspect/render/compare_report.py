"""The report of several models side by side (`lninspect report A B ...`), no torch.

One folder: the comparison's overlay figures, every model's figures (prefixed A-, B-, ...),
compare.json, each model's grads document (A-report.json, ...) and an index.html that puts
the models' summaries in columns and their figures in rows, side by side. Written into a
staging folder and moved into place file by file, index.html last (files.write_folder).
"""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Sequence
from pathlib import Path

from lninspect import __version__
from lninspect.files import dump_json
from lninspect.folders import write_folder
from lninspect.render.compare_plots import COMPARE_FIGURES, save_compare_figures
from lninspect.render.compare_tables import LABELS, how_compared, row_label
from lninspect.render.format import fmt
from lninspect.render.grad_plots import save_grads_figures
from lninspect.render.report import (
    CAPTIONS,
    CSS,
    FORMER_REPORT_FILES,
    REPORT_FILES,
    summary,
)
from lninspect.render.stats_plots import save_stats_figures
from lninspect.results import GradsResult
from lninspect.results.compare import CompareResult

COMPARE_JSON = "compare.json"
INDEX_HTML = "index.html"
MAX_DIFFERENCES = 15
SIDE_BY_SIDE_CSS = """
.models { display: grid; gap: 0.6rem; }
.models figure { margin: 0; } .models img { width: 100%; }
table.grid { border-collapse: collapse; } table.grid th, table.grid td {
  text-align: left; vertical-align: top; padding: 0.3rem 0.8rem 0.3rem 0;
  border-bottom: 1px solid #eaeef2; }
table.grid td.num { text-align: right; font-variant-numeric: tabular-nums; }
"""


def letter(index: int) -> str:
    return chr(65 + index)


def write_compare_report(
    results: Sequence[GradsResult], compared: CompareResult, folder: Path
) -> list[Path]:
    """Write every figure, the JSON documents and index.html into `folder`; return the paths."""

    def build(staging: Path) -> list[str]:
        overlays = save_compare_figures(compared, staging)
        per_model = [_model_files(r, i, staging) for i, r in enumerate(results)]
        (staging / COMPARE_JSON).write_text(dump_json(compared.to_json()) + "\n", encoding="utf-8")
        page = render_compare_html(results, compared, overlays, per_model)
        (staging / INDEX_HTML).write_text(page, encoding="utf-8")
        names = [p.name for p in overlays] + [p.name for files in per_model for p in files]
        names += [f"{letter(i)}-report.json" for i in range(len(results))]
        return names + [COMPARE_JSON, INDEX_HTML]  # index.html moves last

    return write_folder(folder, build, is_compare_file)


def is_compare_file(name: str) -> bool:
    """Whether a file name is one a side-by-side report writes (A-..., compare-..., ...)."""
    own = name.split("-", 1)[1] if re.match(r"[A-Z]-", name) else None
    return name in (COMPARE_JSON, INDEX_HTML, *COMPARE_FIGURES) or own in (
        *REPORT_FILES,
        *FORMER_REPORT_FILES,
    )


def _model_files(result: GradsResult, index: int, staging: Path) -> list[Path]:
    """One model's figures (renamed A-stats-....png) and its A-report.json."""
    own = staging / f"model-{index}"
    own.mkdir()
    paths = []
    for path in save_stats_figures(result, own) + save_grads_figures(result, own):
        target = staging / f"{letter(index)}-{path.name}"
        os.replace(path, target)
        paths.append(target)
    doc = dump_json(result.to_json()) + "\n"
    (staging / f"{letter(index)}-report.json").write_text(doc, encoding="utf-8")
    return paths


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _summary_grid(results: Sequence[GradsResult], compared: CompareResult) -> str:
    e = html.escape
    head = "".join(f"<th>{letter(i)}: {e(m.spec)}</th>" for i, m in enumerate(compared.models))
    by_label = zip(*[summary(r) for r in results], strict=True)  # ((label, value) per model)
    body = "".join(
        f"<tr><th>{e(cells[0][0])}</th>" + "".join(f"<td>{e(v)}</td>" for _, v in cells) + "</tr>"
        for cells in by_label
    )
    return f'<table class="grid"><tr><th></th>{head}</tr>{body}</table>'


def _differences(compared: CompareResult) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(row_label(compared, compared.rows[d.row]))}</td>"
        f"<td>{e(LABELS.get(d.statistic, d.statistic))}</td><td>{letter(d.model)}</td>"
        f'<td class="num">{fmt(d.reference)}</td><td class="num">{fmt(d.value)}</td>'
        f'<td class="num">×{fmt(d.ratio)}</td>'
        f"<td>{'' if d.token is None else e(f't{d.token}')}</td></tr>"
        for d in compared.differences[:MAX_DIFFERENCES]
    )
    head = "".join(f"<th>{c}</th>" for c in ("norm", "stat", "vs", "A", "value", "×", "token"))
    return f'<table class="grid"><tr>{head}</tr>{rows}</table>'


def render_compare_html(
    results: Sequence[GradsResult],
    compared: CompareResult,
    overlays: list[Path],
    per_model: list[list[Path]],
) -> str:
    """A self-contained page: summaries in columns, overlays, then each figure side by side."""
    e = html.escape
    count = len(results)
    notes = "".join(f"<li>{e(n)}</li>" for n in compared.notes)
    overlay_html = "".join(f"<figure>{_image(p, p.stem)}</figure>" for p in overlays)
    figures = []
    for column in zip(*per_model, strict=True):
        base = column[0].name.split("-", 1)[1]
        title, caption = CAPTIONS.get(base, (base, ""))
        cells = "".join(
            f"<figure>{_image(p, f'{letter(i)}: {title}')}"
            f"<figcaption>{letter(i)}</figcaption></figure>"
            for i, p in enumerate(column)
        )
        figures.append(
            f'<h3 id="{e(base)}">{e(title)}</h3><p class="sub">{e(caption)}</p>'
            f'<div class="models" style="grid-template-columns: repeat({count}, 1fr)">'
            f"{cells}</div>"
        )
    names = " vs ".join(f"{letter(i)}: {m.spec}" for i, m in enumerate(compared.models))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lninspect report · {e(names)}</title>
<style>{CSS}{SIDE_BY_SIDE_CSS}</style>
</head>
<body>
<h1>lninspect report: {count} models side by side</h1>
<p class="sub">{e(names)} · {e(how_compared(compared))}</p>
<h2>Summary</h2>
{_summary_grid(results, compared)}
{f'<ul class="notes">{notes}</ul>' if notes else ""}
<h2>Largest differences from A</h2>
{_differences(compared)}
<h2>Overlays</h2>
{overlay_html}
<h2>Each model</h2>
{"".join(figures)}
<footer>Every number is in <code>{COMPARE_JSON}</code> (schema <code>{e(compared.schema)}</code>)
and in each model's <code>A-report.json</code>, ... Written by lninspect {e(__version__)}.</footer>
</body>
</html>
"""
