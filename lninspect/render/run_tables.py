"""Rich tables of a watched training run (`lninspect run`), made to fit 80 columns."""

from __future__ import annotations

from rich.console import Group

from lninspect.escape import visible
from lninspect.render.format import fmt, new_table, short_names, titled
from lninspect.results.watch import WatchLog
from lninspect.statistics import INPUT_DENOMINATOR, SUMMARY
from lninspect.trends import (
    JUMP_CONTRAST,
    JUMP_FACTOR,
    JUMP_WINDOW,
    Jump,
    first_last,
    losses,
    norm_series,
    spike_history,
)

MAX_JUMPS = 12


def run_header(log: WatchLog) -> str:
    """One line: the log, how many records over which steps, the mode, the loss."""
    steps = log.steps
    first, last = first_last(losses(log))
    modes = sorted({r.mode for r in log.records})
    loss = f" · loss {fmt(first)} → {fmt(last)}" if first == first else ""
    span = f"steps {min(steps)}–{max(steps)}"  # the file's order may differ (a note says so)
    return f"{visible(log.path)} · {len(steps)} records, {span} · {'/'.join(modes)}{loss}"


def _arrow(values: tuple[float, float]) -> str:
    return f"{fmt(values[0])} → {fmt(values[1])}"


def run_table(log: WatchLog) -> Group:
    """Per norm: median input std and gradient scale, first → last; its largest |x| ever."""
    table = new_table()
    for column, right in (
        ("module", False),
        ("std", True),
        ("scale", True),
        ("max|x|", True),
        ("step", True),
        ("dim", True),
        ("first", True),
    ):
        table.add_column(column, justify="right" if right else "left", no_wrap=True)
    series = norm_series(log)
    spikes = {s.name: s for s in spike_history(log, series)}
    for name, s in zip(short_names([s.name for s in series]), series, strict=True):
        spike = spikes.get(s.name)
        cells = (
            [fmt(spike.value), str(spike.step), str(spike.dim), str(spike.first)]
            if spike
            else ["—"] * 4
        )
        table.add_row(
            name,
            _arrow(first_last(s.values[INPUT_DENOMINATOR])),
            _arrow(first_last(s.values["grad_scale"])),
            *cells,
        )
    caption = (
        "std, scale: medians over the tokens of the first and last recorded steps "
        "(std: rms for RMSNorm; scale: |dL/dx| / |dL/dy|); max|x|: the largest over "
        "all steps, its step, its dim, and the first step with the max in that dim"
    )
    return titled(table, run_header(log), caption)


def jumps_table(
    log: WatchLog, found: list[Jump], factor: float = JUMP_FACTOR, limit: int | None = MAX_JUMPS
) -> Group:
    """The largest jumps (`limit` of them, all with None): step, module, statistic, the
    median before, the value, the factor."""
    shown = found if limit is None else found[:limit]
    title = f"jumps: ×{factor:g} or ÷{factor:g} from one record to the next · {len(found)} found"
    if shown != found:
        title += f" · the {len(shown)} largest shown (--all: every one)"
    caption = (
        f"a jump is also {JUMP_CONTRAST:g}× larger (in log scale) than the median of the (up "
        f"to {JUMP_WINDOW}) changes before it; so the change from the first record to the "
        "second is never flagged: the rule needs at least one change before it"
    )
    table = new_table()
    for column, right in (
        ("step", True),
        ("module", False),
        ("stat", False),
        ("before", True),
        ("after", True),
        ("×", True),
    ):
        table.add_column(column, justify="right" if right else "left", no_wrap=True)
    ordered = [s.name for s in norm_series(log)]
    names = dict(zip(ordered, short_names(ordered), strict=True))
    for jump in shown:
        table.add_row(
            str(jump.step),
            names.get(jump.name, visible(jump.name)),
            SUMMARY[jump.statistic].label,
            fmt(jump.before),
            fmt(jump.after),
            fmt(jump.factor),
        )
    if not found:
        table.add_row("—", "none", "", "", "", "")
    return titled(table, title, caption)
