"""The report folder: every figure, the JSON and a self-contained index.html (no torch).

Everything is written into a staging folder first and then moved into place file by file,
index.html last, so that an interrupted run leaves no half-written file (files.write_folder).
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from pathlib import Path

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.table import Table

from lninspect import __version__
from lninspect.derived import (
    largest_grad_scale,
    largest_spike,
    layer_span,
    pooled_order,
    residual_growth,
    role_orders,
    spike_share,
)
from lninspect.dimensions import census_rows, outlier_dimensions
from lninspect.escape import visible
from lninspect.files import dump_json
from lninspect.folders import check_report_folder as check_folder
from lninspect.folders import claim_folder, write_folder
from lninspect.render.catalog import (
    BY_NAME,
    REPORT,
    names_of,
    save_report_figures,
)
from lninspect.render.format import (
    MiddlePath,
    Phrases,
    fmt,
    header,
    model_name,
    token_label,
    words_of,
)
from lninspect.render.interactive import INTERACTIVE_HTML, interactive_html
from lninspect.render.map_plots import has_map
from lninspect.render.map_tables import freeze_finding, map_finding, scale_finding
from lninspect.render.pages import png_uri, render_page
from lninspect.render.spike_tables import loss_change, not_massive, peak_note, spike_rule
from lninspect.results import GradsResult
from lninspect.statistics import denominator_key
from lninspect.streams import group_of

REPORT_JSON = "report.json"
INDEX_HTML = "index.html"
REPORT_FILES = (*names_of(REPORT), REPORT_JSON, INTERACTIVE_HTML, INDEX_HTML)
FORMER_REPORT_FILES = ("stats-within-token-spearman.png",)  # written by earlier versions


# Checks and writing -------------------------------------------------------------------------


def check_report_folder(folder: Path, force: bool) -> None:
    """Refuse, before any work, a folder the report cannot be written into (files.py)."""
    check_folder(folder, REPORT_FILES, force)


def claimed_folder(folder: Path, force: bool) -> AbstractContextManager[Path]:
    """The report folder, checked and held by this run (files.claim_folder)."""
    return claim_folder(folder, REPORT_FILES, force)


def write_report(result: GradsResult, folder: Path) -> list[Path]:
    """Write the figures, report.json and index.html into `folder`; return their paths.

    Files of lninspect's own report names that this run did not write (a spike figure of an
    older report) are removed, so that the folder shows one run.
    """

    def build(staging: Path) -> list[str]:
        images = save_report_figures(result, staging)
        (staging / REPORT_JSON).write_text(dump_json(result.to_json()) + "\n", encoding="utf-8")
        page = interactive_html(result)
        (staging / INTERACTIVE_HTML).write_text(page, encoding="utf-8")
        (staging / INDEX_HTML).write_text(render_html(result, images), encoding="utf-8")
        # index.html moves last
        return [p.name for p in images] + [REPORT_JSON, INTERACTIVE_HTML, INDEX_HTML]

    return write_folder(folder, build, lambda name: name in (*REPORT_FILES, *FORMER_REPORT_FILES))


# Findings -----------------------------------------------------------------------------------


def findings(result: GradsResult) -> list[tuple[str, str]]:
    """(label, plain text) rows: what the report shows first."""
    m, i = result.model, result.input
    text = "".join(i.tokens[0]) if i.tokens else ""
    sequences = f"{i.num_sequences} sequence{'s' if i.num_sequences != 1 else ''}"
    return [
        (
            "model",
            f"{model_name(m)} · {m.dtype} on {m.device}"
            + (f" · {m.num_layers} layers" if m.num_layers else "")
            + (f", width {m.hidden_size}" if m.hidden_size else ""),
        ),
        ("text", f"{i.num_tokens} tokens, {sequences}: \u201c{_snippet(text, 120)}\u201d"),
        ("loss", f"{fmt(result.loss)} ({result.loss_kind})"),
        ("residual-stream growth", _growth(result)),
        ("largest spike", _spike(result)),
        ("massive activations kept by the norms", _massive_order(result)),
        ("z-rule outliers kept by the norms", _order(result, "outlier")),
        ("massive dimension", _census(result, "massive")),
        ("dimension with the most z-rule outliers", _census(result, "outlier")),
        ("outlier dimensions (mean |x_j| > k sd)", _outlier_dims(result)),
        *([("massive activations ablated", _ablation(result))] if result.ablation else []),
        ("largest gradient scale", _grad_scale(result)),
        ("first-token scale", scale_finding(result)),
        *([("the norm's map", map_finding(result))] if has_map(result) else []),
        *([("freezing s", freeze_finding(result))] if result.freeze else []),
    ]


def _snippet(text: str, width: int) -> str:
    """The text on one line, cut to `width` characters."""
    line = visible(" ".join(text.split()))
    return line if len(line) <= width else line[: width - 1] + "…"


def _growth(result: GradsResult) -> str:
    growth = residual_growth(result)
    if growth is None:
        inside = [n for n in result.norms if n.layer is not None and n.reads == "residual"]
        if result.norms and not inside:  # OLMo 2: post norms on the sub-layers' outputs only
            return "no norm inside the blocks reads the residual stream"
        return "—"
    first, low, last, high = growth
    return (
        f"median input {denominator_key(first.kind)} {fmt(low)} at {first.name} → "
        f"{fmt(high)} at {last.name} (×{fmt(high / low)}), {group_of(first).label}"
    )


def _spike(result: GradsResult) -> str:
    found = largest_spike(result)
    if found is None:
        captured = result.spike_z is not None
        return f"none ({spike_rule(result)})" if captured else "spikes were not captured"
    norm, s = found
    token = token_label(result, s.sequence, s.token, width=20)
    where = f"dim {s.dim}" if s.head is None else f"head {s.head}, dim {s.dim}"
    return (
        f"{norm.name}, token {token}, {where}: x = {s.value:.4g}"
        + (" (massive)" if s.massive else f", z = {s.z:.3g}")
        + (f" ({why})" if not s.massive and (why := not_massive(result, s.value)) else "")
        + f"; rank {s.rank_in} by |x| → {s.rank_out} by |y|"
        + (f", changed by the {s.changed_by}" if s.changed_by else "")
        + (f"; {note}" if (note := peak_note(result)) else "")
    )


def _massive_order(result: GradsResult) -> str:
    """Per role: how many massive activations keep their rank, and what demoted the rest."""
    totals = pooled_order(result, "massive")
    if totals is None:
        return "not measured"
    if not totals.spikes:
        return f"no massive activation in any norm ({spike_rule(result)})"
    parts = []
    for row in role_orders(result, "massive"):
        t = row.totals
        name = f"{row.group.label} ({row.leaf})"
        if t.kept == t.ranked:
            parts.append(f"{name}: rank kept {t.kept}/{t.ranked}")
        else:
            gain = f" (|gain| {row.gain:.2g} at the dim)" if math.isfinite(row.gain) else ""
            by = f", by the {row.stage}{gain}" if row.stage else ""
            parts.append(f"{name}: demoted in {t.ranked - t.kept}/{t.ranked}{by}")
    return f"{totals.spikes} in {totals.spiking} of {totals.norms} norms; " + "; ".join(parts)


def _order(result: GradsResult, kind: str = "all") -> str:
    totals = pooled_order(result, kind)
    if totals is None:
        return "not measured"
    if not totals.spikes:
        return f"none in any norm ({spike_rule(result)})"
    pairs = (
        f"; same-token pairs kept {totals.pair_share:.0%} of {totals.pairs}" if totals.pairs else ""
    )
    changed = totals.centre + totals.weight + totals.bias
    stages = (
        f"; re-ranked by centring {totals.centre}, the weight {totals.weight}, "
        f"the bias {totals.bias}"
        if changed
        else ""
    )
    ranked = f" ({totals.ranked} ranked)" if totals.ranked < totals.spikes else ""
    share = spike_share(result)
    return (
        f"rank kept for {totals.rank_kept:.0%} of {totals.spikes} spikes{ranked} in "
        f"{totals.spiking} of {totals.norms} norms{pairs}{stages}; "
        f"{share:.1%} of token × norm pairs have a spike"
    )


def _census(result: GradsResult, kind: str) -> str:
    """The headline dimension of `kind` in the residual stream: for massive activations the
    one of largest |x| (what an ablation would matter for), for outliers the most frequent."""
    rows = census_rows(result, limit=1, kind=kind, by="max" if kind == "massive" else "count")
    if not rows:
        return "—"
    row = rows[0]
    at = ""
    if len(row.max_at) == 2:
        at = f" at {token_label(result, row.max_at[0], row.max_at[1], width=12)}"
    what = "max |x|" if kind == "massive" or not row.massive else "max |x| (its massive ones too)"
    return (
        f"dim {row.dim}: {row.count} at layers {layer_span(row.layers)}, "
        f"{row.first_token_share:.0%} of them on the first token; {what} over the residual "
        f"stream's norms {row.max_abs:.4g}{at}"
    )


def _outlier_dims(result: GradsResult) -> str:
    found = outlier_dimensions(result, "in")
    if not found:
        return "—" if not any(n.dimensions for n in result.norms) else "none"
    out = outlier_dimensions(result, "out")

    def words(rows: list[tuple[int, int, int]]) -> str:
        return ", ".join(f"dim {j} at {n}/{total} norms" for j, n, total in rows) or "none"

    return f"input: {words(found)}; output: {words(out)}"


def _ablation(result: GradsResult) -> str:
    a = result.ablation
    if a is None or a.layer is None:
        return f"no massive activation to ablate{a.where()}" if a is not None else ""
    mean = "their mean (which is their own value)" if a.mean_is_value else "their mean"
    return (
        f"layer {a.layer}, dims {', '.join(map(str, a.dims))}: loss {fmt(a.loss)} → "
        f"{fmt(a.loss_mean)} set to {mean} over {a.texts} other texts "
        f"(Δ {loss_change(a.loss_mean - a.loss)}), {fmt(a.loss_zero)} set to 0 "
        f"(Δ {loss_change(a.loss_zero - a.loss)})"
    )


def _grad_scale(result: GradsResult) -> str:
    found = largest_grad_scale(result)
    if found is None:
        return "—"
    norm, value = found
    return f"{norm.name}: median ‖∂L/∂x‖ / ‖∂L/∂y‖ = {fmt(value)} over tokens"


def findings_table(result: GradsResult) -> FindingsTable:
    """The findings for the terminal."""
    return FindingsTable(result)


class FindingsTable:
    """The findings as a two-column table: a label wraps at its words where it is wider than
    a third of the console (80 columns: `dimension with the most` / `z-rule outliers`), a
    value at its words, never inside a token's text; the model's path in the middle."""

    def __init__(self, result: GradsResult) -> None:
        self.result = result

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        result = self.result
        rows = findings(result)
        longest = max(len(label) for label, _ in rows)
        table = Table(title=header(result), title_justify="left", box=box.SIMPLE, show_header=False)
        table.add_column(
            "what", style="bold", max_width=min(longest, max(16, options.max_width // 3))
        )
        table.add_column("value")
        name = visible(result.model.name)
        for label, value in rows:
            if label == "model":  # a long path shortened in the middle, the rest between phrases
                rest = value.removeprefix(name).lstrip()
                table.add_row(label, Group(MiddlePath(result.model.name), Phrases(rest, " · ")))
            else:
                table.add_row(label, Phrases.of(words_of(value), " "))
        yield table


# HTML ---------------------------------------------------------------------------------------


def render_html(result: GradsResult, images: list[Path]) -> str:
    """A self-contained page (templates/report.html): findings, notes, then every PNG as a
    base64 data URI with its heading and caption (lninspect.render.catalog)."""
    return render_page(
        "report.html",
        model=result.model.name,
        header=header(result),
        rows=findings(result),
        notes=result.notes,
        text="".join(result.input.tokens[0]) if result.input.tokens else "",
        interactive=INTERACTIVE_HTML,
        figures=[_figure(path) for path in images],
        document=REPORT_JSON,
        schema=result.schema,
        version=__version__,
    )


def _figure(path: Path) -> dict[str, str]:
    entry = BY_NAME[path.name]
    heading = entry.heading
    return {
        "id": path.stem,
        "name": path.name,
        "src": png_uri(path),
        "heading": heading,
        "sentence": heading if heading.endswith("?") else f"{heading}.",
        "caption": entry.caption,
    }
