"""What each CLI command does, given parsed options: run a job, then show and write."""
from __future__ import annotations

from lninspect.console import Output
from lninspect.files import check_target, write_json
from lninspect.options import RunOptions


def stats(options: RunOptions, out: Output, json_path: str | None, force: bool) -> None:
    """`lninspect stats`: per-token statistics of every normalization module."""
    from lninspect.jobs import run_stats
    from lninspect.render.tables import stats_table

    check_target(json_path, force)
    result = run_stats(options)
    for note in result.notes:
        out.note(note)
    out.show(stats_table(result))
    if json_path:
        write_json(json_path, result.to_json())


def norms(options: RunOptions, out: Output, json_path: str | None, force: bool) -> None:
    """`lninspect norms`: the normalization modules found, with kind, layer, role and eps."""
    from lninspect.jobs import describe_norms
    from lninspect.render.tables import norms_table

    check_target(json_path, force)
    result = describe_norms(options)
    for note in result.notes:
        out.note(note)
    out.show(norms_table(result))
    if json_path:
        write_json(json_path, result.to_json())
