"""The report of several models side by side (`lninspect report A B ...`), no torch.

One folder: the comparison's overlay figures, every model's figures (prefixed A-, B-, ...),
compare.json, each model's grads document (A-report.json, ...) and an index.html that puts
the models' summaries in columns and their figures in rows, side by side. Written into a
staging folder and moved into place file by file, index.html last (files.write_folder).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lninspect import __version__
from lninspect.files import dump_json
from lninspect.folders import write_folder
from lninspect.render.catalog import (
    BY_NAME,
    MODELS_REPORT,
    names_of,
    save_compare_figures,
    save_report_figures,
)
from lninspect.render.compare_tables import LABELS, how_compared, row_label
from lninspect.render.format import fmt
from lninspect.render.pages import png_uri, render_page
from lninspect.render.report import FORMER_REPORT_FILES, REPORT_FILES, findings
from lninspect.results import GradsResult
from lninspect.results.compare import CompareResult

COMPARE_JSON = "compare.json"
INDEX_HTML = "index.html"
MAX_DIFFERENCES = 15


def letter(index: int) -> str:
    return chr(65 + index)


def write_compare_report(
    results: Sequence[GradsResult], compared: CompareResult, folder: Path
) -> list[Path]:
    """Write every figure, the JSON documents and index.html into `folder`; return the paths."""

    def build(staging: Path) -> list[str]:
        overlays = save_compare_figures(compared, staging, MODELS_REPORT)
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
    return name in (COMPARE_JSON, INDEX_HTML, *names_of(MODELS_REPORT)) or own in (
        *REPORT_FILES,
        *FORMER_REPORT_FILES,
    )


def _model_files(result: GradsResult, index: int, staging: Path) -> list[Path]:
    """One model's figures (renamed A-stats-....png) and its A-report.json."""
    own = staging / f"model-{index}"
    own.mkdir()
    paths = []
    for path in save_report_figures(result, own):
        target = staging / f"{letter(index)}-{path.name}"
        os.replace(path, target)
        paths.append(target)
    doc = dump_json(result.to_json()) + "\n"
    (staging / f"{letter(index)}-report.json").write_text(doc, encoding="utf-8")
    return paths


def render_compare_html(
    results: Sequence[GradsResult],
    compared: CompareResult,
    overlays: list[Path],
    per_model: list[list[Path]],
) -> str:
    """A self-contained page (templates/compare_report.html): findings in columns, the
    largest differences, the overlays, then each figure side by side."""
    return render_page(
        "compare_report.html",
        names=" vs ".join(f"{letter(i)}: {m.spec}" for i, m in enumerate(compared.models)),
        how=how_compared(compared),
        models=[f"{letter(i)}: {m.spec}" for i, m in enumerate(compared.models)],
        findings=_findings_rows(results),
        notes=compared.notes,
        differences=_differences(compared),
        overlays=[_overlay(path, compared) for path in overlays],
        figures=[_side_by_side(column) for column in zip(*per_model, strict=True)],
        document=COMPARE_JSON,
        schema=compared.schema,
        version=__version__,
    )


def _findings_rows(results: Sequence[GradsResult]) -> list[tuple[str, list[str]]]:
    """(label, each model's value): the models' findings in columns."""
    by_label = zip(*[findings(r) for r in results], strict=True)  # ((label, value) per model)
    return [(cells[0][0], [value for _, value in cells]) for cells in by_label]


def _differences(compared: CompareResult) -> list[dict[str, str]]:
    return [
        {
            "norm": row_label(compared, compared.rows[d.row]),
            "statistic": LABELS.get(d.statistic, d.statistic),
            "model": letter(d.model),
            "reference": fmt(d.reference),
            "value": fmt(d.value),
            "ratio": fmt(d.ratio),
            "token": "" if d.token is None else f"t{d.token}",
        }
        for d in compared.differences[:MAX_DIFFERENCES]
    ]


def _overlay(path: Path, compared: CompareResult) -> dict[str, str]:
    return {"src": png_uri(path), "title": BY_NAME[path.name].title_of(compared)}


def _side_by_side(column: tuple[Path, ...]) -> dict[str, Any]:
    """One figure of every model (A-stats-....png, B-...), with the figure's heading."""
    name = column[0].name.split("-", 1)[1]
    entry = BY_NAME[name]
    cells = [{"letter": letter(i), "src": png_uri(p)} for i, p in enumerate(column)]
    return {"name": name, "heading": entry.heading, "caption": entry.caption, "cells": cells}
