"""The report folder: every figure, the JSON and a self-contained index.html (no torch).

Everything is written into a temporary sibling folder first and then moved into place file
by file, index.html last, so that an interrupted run leaves no half-written file.
"""

from __future__ import annotations

import base64
import html
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich import box
from rich.table import Table

from lninspect import __version__
from lninspect.errors import EXIT_RUNTIME, LninspectError
from lninspect.escape import visible
from lninspect.files import STREAM, check_target, dump_json, output_kind
from lninspect.render.format import fmt, header, token_label
from lninspect.render.grad_plots import FIGURES as GRAD_FIGURES
from lninspect.render.grad_plots import save_grads_figures
from lninspect.render.interactive import INTERACTIVE_HTML, interactive_html
from lninspect.render.spike_tables import spike_rule
from lninspect.render.stats_plots import STATS_FIGURES, save_stats_figures
from lninspect.results import GradsResult
from lninspect.summary import (
    census_rows,
    largest_grad_scale,
    largest_spike,
    layer_span,
    pooled_order,
    residual_growth,
)

REPORT_JSON = "report.json"
INDEX_HTML = "index.html"
REPORT_FILES = (*STATS_FIGURES, *GRAD_FIGURES, REPORT_JSON, INTERACTIVE_HTML, INDEX_HTML)
FORMER_REPORT_FILES = ("stats-within-token-spearman.png",)  # written by earlier versions
CAPTIONS = {
    "stats-std-heatmap.png": (
        "Input std per module and token",
        "The denominator of every norm (rms for RMSNorm) per "
        "token of sequence 0, log colour scale. Rows brighten with depth as the residual "
        "stream grows; a bright column is a token whose activations are far larger (often the "
        "first).",
    ),
    "stats-mean-heatmap.png": (
        "Input mean per module and token",
        "The mean over the hidden dims that a LayerNorm "
        "subtracts; diverging scale centred at 0 (white).",
    ),
    "stats-std-per-layer.png": (
        "Residual-stream growth with depth",
        "Median input std per layer with the 25–75% band over tokens, one line per role.",
    ),
    "stats-spike-ranks.png": (
        "Do spikes keep their rank?",
        "Every listed spike (the 100 largest |x| per norm): its rank among the token's |x| "
        "before the norm vs among |y| after it (left, log axes; on the dashed line the rank "
        "is kept) and its magnitude |x| vs |y| (right). Colour: the first stage of the norm "
        "that changed the rank (centring, the weight, the bias), grey when kept.",
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
        "largest |x| anywhere, at every norm of the residual stream (solid), and the "
        "max |y| after the norm (dashed), log scale.",
    ),
    "stats-spike-compression.png": (
        "Across tokens: compression of the top dimension",
        "For the dimension of the largest spike: max over tokens of |x| divided by its "
        "median over tokens, before (x) and after (y) each norm that measured it. Each "
        "token is divided by its own std, so a token with a huge spike is shrunk most.",
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
        "‖∂L/∂x‖ through each norm per token, log colour scale; blank cells got no gradient.",
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


LOCK = ".lninspect.lock"  # in a report folder while a run writes it


def check_report_folder(folder: Path, force: bool) -> None:
    """Refuse, before any work: a file, a non-empty folder (without --force), no write access."""
    if folder.exists() and not folder.is_dir():
        raise LninspectError(f"'{folder}' is a file; give a folder for the report with --out")
    if (folder / LOCK).exists():
        raise LninspectError(
            f"folder '{folder}' is being written by another lninspect run ({LOCK} is there); "
            "wait for it to end, or delete the lock if no run is writing there"
        )
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise LninspectError(
            f"folder '{folder}' is not empty; use --force to write the report "
            "into it (files of the same names are replaced)"
        )
    if folder.is_dir():  # what --force would replace must be a file, a link to one, or a pipe
        for name in REPORT_FILES:
            check_target(str(folder / name), force=True)
    existing = next(p for p in (folder.absolute(), *folder.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise LninspectError(f"cannot create folder '{folder}': '{existing}' is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LninspectError(f"cannot write the report: folder '{existing}' is not writable")


@contextmanager
def claimed_folder(folder: Path, force: bool) -> Iterator[Path]:
    """Check `folder`, then hold it for this run: created if missing, with a lock file inside.

    A second run into the same folder is refused (the lock makes it non-empty, and --force
    does not take a held folder); a failed run removes the folders it created.
    """
    check_report_folder(folder, force)
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(folder / LOCK, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError as exc:
        raise LninspectError(
            f"folder '{folder}' is being written by another lninspect run ({LOCK} is there)"
        ) from exc
    except OSError as exc:
        raise LninspectError(f"cannot create folder '{folder}': {exc.strerror}") from exc
    os.close(descriptor)
    try:
        yield folder
    finally:
        (folder / LOCK).unlink(missing_ok=True)
        for path in created:  # innermost first; only the empty ones (a failed run)
            try:
                path.rmdir()
            except OSError:
                break


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

    return write_folder(folder, build, lambda name: name in (*REPORT_FILES, *FORMER_REPORT_FILES))


def write_folder(
    folder: Path, build: Callable[[Path], list[str]], ours: Callable[[str], bool]
) -> list[Path]:
    """Build a report in a hidden sibling folder, then move its files into `folder`.

    `build(staging)` writes the files and returns their names in the order they move (the
    page last, so that a folder with an index.html is complete). Files in `folder` that
    `ours(name)` claims and this run did not write are removed first; nothing else is
    touched. An interrupted run leaves no half-written file.
    """
    try:
        folder.absolute().parent.mkdir(parents=True, exist_ok=True)
        staging = Path(
            tempfile.mkdtemp(dir=folder.absolute().parent, prefix=f".{folder.name}.", suffix=".tmp")
        )
    except OSError as exc:
        raise LninspectError(
            f"cannot write the report next to '{folder}': {exc.strerror}", EXIT_RUNTIME
        ) from exc
    try:
        names = build(staging)
        folder.mkdir(parents=True, exist_ok=True)
        _remove_stale(folder, names, ours)
        for name in names:
            _move(staging / name, folder / name)
    except OSError as exc:
        raise LninspectError(
            f"cannot write the report into '{folder}': {exc.strerror}", EXIT_RUNTIME
        ) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [folder / name for name in names]


def _move(staged: Path, target: Path) -> None:
    """Rename a staged file over `target` (or its symlink's target); write a pipe in place."""
    kind, real = output_kind(target)
    if kind == STREAM:
        with open(real, "wb") as handle:
            handle.write(staged.read_bytes())
    else:
        os.replace(staged, real)


def _remove_stale(folder: Path, written: list[str], ours: Callable[[str], bool]) -> None:
    """Remove regular files of report names (this version's or an earlier one's) that this
    run does not write, so that a report folder never mixes two runs."""
    for path in folder.iterdir():
        if ours(path.name) and path.name not in written and path.is_file():
            if not path.is_symlink():
                path.unlink()


# Summary ------------------------------------------------------------------------------------


def summary(result: GradsResult) -> list[tuple[str, str]]:
    """(label, plain text) rows: what the report shows first."""
    m, i = result.model, result.input
    text = "".join(i.tokens[0]) if i.tokens else ""
    sequences = f"{i.num_sequences} sequence{'s' if i.num_sequences != 1 else ''}"
    return [
        (
            "model",
            f"{visible(m.name)} ({m.source}) · {m.cls} · {m.dtype} on {m.device}"
            + (f" · {m.num_layers} layers" if m.num_layers else "")
            + (f", width {m.hidden_size}" if m.hidden_size else ""),
        ),
        ("text", f"{i.num_tokens} tokens, {sequences}: \u201c{_snippet(text, 120)}\u201d"),
        ("loss", f"{fmt(result.loss)} ({result.loss_kind})"),
        ("residual-stream growth", _growth(result)),
        ("largest spike", _spike(result)),
        ("spike order kept by the norms", _order(result)),
        ("dimension that spikes most", _census(result)),
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
        return "—"
    first, low, last, high = growth
    return (
        f"median input std {fmt(low)} at {first.name} → {fmt(high)} at {last.name} "
        f"(×{fmt(high / low)})"
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
        + f"; rank {s.rank_in} by |x| → {s.rank_out} by |y|"
        + (f", changed by the {s.changed_by}" if s.changed_by else "")
    )


def _order(result: GradsResult) -> str:
    totals = pooled_order(result)
    if totals is None:
        return "not measured"
    if not totals.spikes:
        return f"no spike in any norm ({spike_rule(result)}): no order to keep"
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
    return (
        f"rank kept for {totals.rank_kept:.0%} of {totals.spikes} spikes{ranked} in "
        f"{totals.spiking} of {totals.norms} norms{pairs}{stages}"
    )


def _census(result: GradsResult) -> str:
    rows = census_rows(result, limit=1)
    if not rows:
        return "—"
    row = rows[0]
    return (
        f"dim {row.dim}: {row.count} spikes at layers {layer_span(row.layers)}, "
        f"{row.first_token_share:.0%} on the first token, max |x| {row.max_abs:.4g}"
    )


def _ablation(result: GradsResult) -> str:
    a = result.ablation
    if a is None or a.layer is None:
        return "no massive activation to ablate" if a is not None else ""
    return (
        f"layer {a.layer}, dims {', '.join(map(str, a.dims))}: loss {fmt(a.loss)} → "
        f"{fmt(a.loss_mean)} set to their mean, {fmt(a.loss_zero)} set to 0"
    )


def _grad_scale(result: GradsResult) -> str:
    found = largest_grad_scale(result)
    if found is None:
        return "—"
    norm, value = found
    return f"{norm.name}: median ‖∂L/∂x‖ / ‖∂L/∂y‖ = {fmt(value)} over tokens"


def summary_table(result: GradsResult) -> Table:
    """The summary for the terminal."""
    table = Table(title=header(result), title_justify="left", box=box.SIMPLE, show_header=False)
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value")
    for label, value in summary(result):
        table.add_row(label, value)
    return table


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
<p>The token heatmaps with hover (token, position, value, layer):
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
