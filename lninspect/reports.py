"""The report folders, for Python callers as for `lninspect report`: run the job, then write
the folder (figures, JSON, index.html; lninspect.render.report and .compare_report).

    from lninspect.options import RunOptions
    from lninspect.reports import write_report_folder
    result, paths = write_report_folder(RunOptions(model="tiny", text="Hello"), Path("out"))

The folder is checked and held (a lock file) before the model loads, so that a folder that
cannot be written is refused in seconds and two runs never write one folder. Heavy imports
(torch, matplotlib, jinja2) happen inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lninspect.early import check_early
from lninspect.options import Loss, MapOptions, Progress, RunOptions, SpikeOptions

if TYPE_CHECKING:
    from lninspect.results import GradsResult
    from lninspect.results.compare import CompareResult

Notes = Callable[[str], None]  # told each note of the run (and each model that starts)


def write_report_folder(
    run: RunOptions,
    folder: Path,
    *,
    loss: Loss = "ce",
    target: str | None = None,
    spikes: SpikeOptions | None = None,
    ablate: bool = False,
    maps: MapOptions | None = None,
    force: bool = False,
    notes: Notes | None = None,
    progress: Progress | None = None,
) -> tuple[GradsResult, list[Path]]:
    """Stats, spikes and gradients of one run (jobs.run_grads), written into `folder` as a
    report; `force` replaces lninspect's own files there; `progress` is told each text
    that --freeze-scale ran. Returns the result and the paths."""
    from lninspect.render.report import claimed_folder, write_report

    with claimed_folder(folder, force):
        check_early(run)
        from lninspect.jobs import run_grads

        result = run_grads(
            run,
            loss,
            target,
            spikes=spikes or SpikeOptions(),
            ablate=ablate,
            maps=maps,
            progress=progress,
        )
        for note in result.notes:
            (notes or _ignore)(note)
        return result, write_report(result, folder)


def write_compare_folder(
    models: Sequence[str],
    run: RunOptions,
    folder: Path,
    *,
    spikes: SpikeOptions | None = None,
    force: bool = False,
    notes: Notes | None = None,
) -> tuple[CompareResult, list[Path]]:
    """Every model's report and their comparison on one page, written into `folder`.
    Returns the comparison and the paths."""
    from lninspect.render.compare_report import write_compare_report
    from lninspect.render.report import claimed_folder

    tell = notes or _ignore
    with claimed_folder(folder, force):
        check_early(run)
        from lninspect.comparison import compare_results
        from lninspect.jobs import run_models

        options = spikes or SpikeOptions()
        results = run_models(models, run, options, lambda spec: tell(f"running {spec}"))
        compared = compare_results(results, list(models))
        for note in compared.notes:
            tell(note)
        return compared, write_compare_report(results, compared, folder)


def _ignore(note: str) -> None:
    """Notes nobody asked for."""
