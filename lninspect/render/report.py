"""The report folder: every figure, the JSON and a self-contained index.html (no torch).

Everything is written into a staging folder first and then moved into place file by file,
index.html last, so that an interrupted run leaves no half-written file (files.write_folder).
"""

from __future__ import annotations

import base64
import html
import math
from contextlib import AbstractContextManager
from pathlib import Path

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.table import Table

from lninspect import __version__
from lninspect.dimensions import census_rows, outlier_dimensions
from lninspect.escape import visible
from lninspect.files import check_report_folder as check_folder
from lninspect.files import claim_folder, dump_json, write_folder
from lninspect.render.format import (
    MiddlePath,
    Phrases,
    fmt,
    header,
    model_name,
    token_label,
    words_of,
)
from lninspect.render.grad_plots import FIGURES as GRAD_FIGURES
from lninspect.render.grad_plots import save_grads_figures
from lninspect.render.interactive import INTERACTIVE_HTML, interactive_html
from lninspect.render.map_plots import MAP_CAPTIONS
from lninspect.render.spike_tables import loss_change, not_massive, peak_note, spike_rule
from lninspect.render.stats_plots import MAYBE_FIGURES, STATS_FIGURES, save_stats_figures
from lninspect.results import GradsResult
from lninspect.statistics import denominator_key
from lninspect.streams import group_of
from lninspect.summary import (
    largest_grad_scale,
    largest_spike,
    layer_span,
    pooled_order,
    residual_growth,
    role_orders,
    spike_share,
)

REPORT_JSON = "report.json"
INDEX_HTML = "index.html"
REPORT_FILES = (*STATS_FIGURES, *GRAD_FIGURES, REPORT_JSON, INTERACTIVE_HTML, INDEX_HTML)
OWN_FILES = (*REPORT_FILES, *MAYBE_FIGURES)  # and the figures of --map
FORMER_REPORT_FILES = ("stats-within-token-spearman.png",)  # written by earlier versions
CAPTIONS = {
    **MAP_CAPTIONS,
    "stats-std-heatmap.png": (
        "Input std per module and token",
        "The denominator of every norm (rms for RMSNorm) per "
        "token of sequence 0, log colour scale; one panel per kind of norm (what it reads and "
        "where it sits), a q/k norm's heads reduced by their median. Rows of the residual "
        "stream's norms brighten with depth as it grows; a bright column is a token whose "
        "activations are far larger (often the first). ▼ above the first panel: the token "
        "with the largest |value| of many norms "
        "(one token is a column a pixel or two wide in a long text).",
    ),
    "stats-mean-heatmap.png": (
        "Input mean per module and token",
        "The mean over the hidden dims that a LayerNorm "
        "subtracts; diverging scale centred at 0 (white); ▼ as in the std heatmap.",
    ),
    "stats-std-per-layer.png": (
        "Residual-stream growth with depth",
        "Median input std (rms for RMSNorm) per layer with the 25–75% band over tokens, one "
        "line per norm that reads the residual stream (before attention, before the MLP, ...). "
        "Where the model has them, a panel of their own for the norms on a sub-layer's output "
        "(their input, and the output std they add to the stream: Gemma 2 / 3, OLMo 2) and "
        "for the query / key norms (tokens and heads pooled).",
    ),
    "stats-spike-ranks.png": (
        "Do spikes keep their rank?",
        "Every listed spike (the 100 largest |x| per norm): its rank among the token's |x| "
        "before the norm vs among |y| after it (left, log axes; on the dashed line the rank "
        "is kept) and its magnitude |x| vs |y| (right). Colour: the first stage of the norm "
        "that changed the rank (centring, the weight, the bias), grey when kept. A marker's "
        "area grows with the spikes at that point; the table between the panels counts the "
        "most crowded points.",
    ),
    "stats-spike-order.png": (
        "Does each norm keep the order of its spikes?",
        "Per norm, in model order: the share of its spikes whose rank is kept and of "
        "same-token spike pairs whose order is kept (top; × where a norm has no spike, "
        "which gives no number), and its ranked spikes by the stage that re-ranked them "
        "(bottom).",
    ),
    "stats-spike-trajectory.png": (
        "The largest dimensions through depth",
        "Sun et al.'s view: the max |x| over tokens of the dimensions that reach the "
        "largest |x| anywhere, at every norm that reads the residual stream (solid; norms on "
        "a sub-layer's output and query / key norms left out), and the max |y| after the "
        "norm (dashed), log scale.",
    ),
    "stats-spike-roles.png": (
        "Do massive activations stay the largest, role by role?",
        "Every massive activation (a spike that passes the magnitude rule): its rank by |y| "
        "after the norm (1, at the top: still the token's largest) against the layer (the "
        "final norm at -1); the marker says where the norm sits and what it reads (before "
        "attention, on the MLP's output, ...), the colour the first stage of the "
        "norm that changed the rank (centring, the weight, the bias), grey when kept.",
    ),
    "stats-outlier-dims.png": (
        "Outlier dimensions through depth",
        "Per norm of the residual stream, in model order: the mean over tokens of |x_j| (left, "
        "the input) and |y_j| "
        "(right, the output) of the dimensions that are outliers at most norms, as a z over "
        "the dimensions ((mean_j − mean over j) / sd over j); above the dashed line k a "
        "dimension is an outlier. A dimension has one colour in both panels.",
    ),
    "stats-spike-compression.png": (
        "Across tokens: compression of the top dimension",
        "For the dimension of the largest spike: max over tokens of |x| divided by its "
        "median over tokens, before (x) and after (y) each norm that measured it. Each "
        "token is divided by its own std, so a token with a huge spike is shrunk most; the "
        "title counts the norms where that compresses the dimension (y below x) and where "
        "it expands it.",
    ),
    "stats-spike-census.png": (
        "Spike census",
        "Spikes per dimension (rows: the dimensions that spike most over the model) and "
        "norm (columns), log colour scale; blank: no spike there.",
    ),
    "grads-params.png": (
        "Parameter gradient norms per layer",
        "L2 norm of the gradient of each parameter group "
        "per layer, log scale; grey markers: parameters outside the blocks.",
    ),
    "grads-heatmap.png": (
        "Gradient through each norm",
        "‖∂L/∂x‖ through each norm per token, log colour scale; blank cells got no gradient; "
        "▼ as in the std heatmap.",
    ),
    "grads-scale-vs-std.png": (
        "The backward pass divides by σ",
        "Gradient scale ‖∂L/∂x‖ / ‖∂L/∂y‖ of each norm and "
        "token against its input std; the dashed line is 1/σ, a norm with unit weight.",
    ),
}
CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1250px; padding: 0 1rem; color: #1b1f24; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 0.3rem; }
.sub { color: #57606a; margin-top: 0; }
table.summary { border-collapse: collapse; }
table.summary th { text-align: left; padding: 0.3rem 1.2rem 0.3rem 0; vertical-align: top;
                   white-space: nowrap; color: #57606a; font-weight: 600; }
table.summary td { padding: 0.3rem 0; }
code, pre { font-family: ui-monospace, "SF Mono", Menlo, Consolas, monospace; font-size: 0.9em; }
pre { white-space: pre-wrap; background: #f6f8fa; padding: 0.8rem; border-radius: 6px; }
ul.notes { color: #9a6700; }
figure { margin: 2rem 0; } figure img { max-width: 100%; height: auto;
                                        border: 1px solid #d0d7de; }
figcaption { color: #57606a; max-width: 60rem; } figcaption b { color: #1b1f24; }
nav a { margin-right: 1rem; } footer { color: #57606a; margin-top: 3rem; font-size: 0.9em; }
"""


# Checks and writing -------------------------------------------------------------------------


def check_report_folder(folder: Path, force: bool) -> None:
    """Refuse, before any work, a folder the report cannot be written into (files.py)."""
    check_folder(folder, OWN_FILES, force)


def claimed_folder(folder: Path, force: bool) -> AbstractContextManager[Path]:
    """The report folder, checked and held by this run (files.claim_folder)."""
    return claim_folder(folder, OWN_FILES, force)


def write_report(result: GradsResult, folder: Path) -> list[Path]:
    """Write the figures, report.json and index.html into `folder`; return their paths.

    Files of lninspect's own report names that this run did not write (a spike figure of an
    older report) are removed, so that the folder shows one run.
    """

    def build(staging: Path) -> list[str]:
        images = save_stats_figures(result, staging) + save_grads_figures(result, staging)
        (staging / REPORT_JSON).write_text(dump_json(result.to_json()) + "\n", encoding="utf-8")
        page = interactive_html(result)
        (staging / INTERACTIVE_HTML).write_text(page, encoding="utf-8")
        (staging / INDEX_HTML).write_text(render_html(result, images), encoding="utf-8")
        # index.html moves last
        return [p.name for p in images] + [REPORT_JSON, INTERACTIVE_HTML, INDEX_HTML]

    return write_folder(folder, build, lambda name: name in (*OWN_FILES, *FORMER_REPORT_FILES))


# Summary ------------------------------------------------------------------------------------


def summary(result: GradsResult) -> list[tuple[str, str]]:
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


def summary_table(result: GradsResult) -> SummaryTable:
    """The summary for the terminal."""
    return SummaryTable(result)


class SummaryTable:
    """The summary as a two-column table: a label wraps at its words where it is wider than
    a third of the console (80 columns: `dimension with the most` / `z-rule outliers`), a
    value at its words, never inside a token's text; the model's path in the middle."""

    def __init__(self, result: GradsResult) -> None:
        self.result = result

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        result = self.result
        rows = summary(result)
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
    """A self-contained page: summary, notes, then every PNG as a base64 data URI."""
    e = html.escape
    text = "".join(result.input.tokens[0]) if result.input.tokens else ""
    rows = "".join(
        f"<tr><th>{e(label)}</th><td>{e(value)}</td></tr>" for label, value in summary(result)
    )
    notes = "".join(f"<li>{e(note)}</li>" for note in result.notes)
    nav = "".join(
        f'<a href="#{e(p.stem)}">{e(CAPTIONS.get(p.name, (p.stem,))[0])}</a>' for p in images
    )
    figures = "".join(_figure_html(path) for path in images)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lninspect report · {e(result.model.name)}</title>
<style>{CSS}</style>
</head>
<body>
<h1>lninspect report</h1>
<p class="sub">{e(header(result))}</p>
<h2>Summary</h2>
<table class="summary">{rows}</table>
{f'<ul class="notes">{notes}</ul>' if notes else ""}
<details><summary>the text</summary><pre>{e(text)}</pre></details>
<h2>Figures</h2>
<p>The token heatmaps with hover (token, position, value, layer), the tokens along the
axis and a colour key:
<a href="{INTERACTIVE_HTML}">{INTERACTIVE_HTML}</a>.</p>
<nav>{nav}</nav>
{figures}
<footer>Every number is in <code>{REPORT_JSON}</code> (schema <code>{e(result.schema)}</code>).
Written by lninspect {e(__version__)}.</footer>
</body>
</html>
"""


def _figure_html(path: Path) -> str:
    title, caption = CAPTIONS.get(path.name, (path.stem, ""))
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    e = html.escape
    heading = title if title.endswith("?") else f"{title}."
    return (
        f'<figure id="{e(path.stem)}"><img src="data:image/png;base64,{data}" '
        f'alt="{e(title)}"><figcaption><b>{e(heading)}</b> {e(caption)} '
        f"<code>{e(path.name)}</code></figcaption></figure>\n"
    )
