"""What each CLI command does once its options are parsed: run a job, then show and write.

Each command takes one typed request (keyword arguments of plain data from lninspect.options
and `Outputs`), runs the job behind it, and publishes the result: notes, tables, figures,
JSON, in that order. Heavy imports (torch, matplotlib) happen inside the commands.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import RenderableType

from lninspect.cli.console import Output
from lninspect.early import check_early
from lninspect.errors import LninspectError
from lninspect.files import (
    STDOUT,
    all_or_nothing,
    check_folder,
    check_target,
    make_folder,
    write_json,
)
from lninspect.options import CorpusOptions, Loss, MapOptions, RunOptions, SpikeOptions

if TYPE_CHECKING:
    from lninspect.cli.progress import StepProgress
    from lninspect.results.placement import PlacementConfig
    from lninspect.results.placement_training import TrainConfig


@dataclass(frozen=True)
class Outputs:
    """Where a command's results go besides the terminal."""

    json: str | None = None  # a file, or '-' for stdout
    figures: Path | None = None  # the folder for PNGs (--plot), None: no figures
    force: bool = False  # replace existing output files
    quiet: bool = False  # nothing but errors (and JSON on stdout)
    wide: bool = False  # tables with every column, not only those that fit 80 columns

    def console(self) -> Output:
        return Output(self.quiet, json_stdout=self.json == STDOUT, wide=self.wide)

    def check(self, figures: Sequence[str] = ()) -> None:
        """Refuse, before any work, existing outputs (without --force) and unwritable ones."""
        check_target(self.json, self.force)
        if self.figures is not None:
            check_folder(self.figures, list(figures), self.force)


def stats(
    run: RunOptions,
    spikes: SpikeOptions | None,
    outputs: Outputs,
    ablate: bool = False,
    maps: MapOptions | None = None,
) -> None:
    """`lninspect stats`: per-token statistics of every normalization module of one text."""
    from lninspect.render.catalog import STATS, names_of, save_stats_figures
    from lninspect.render.map_tables import freeze_tables, map_tables
    from lninspect.render.spike_tables import spike_tables
    from lninspect.render.stats_tables import stats_table

    outputs.check(names_of(STATS))
    check_early(run)
    from lninspect.jobs import run_stats

    with _freeze_progress(outputs, maps) as progress:
        result = run_stats(run, spikes, ablate, maps, progress.update)
    tables: list[RenderableType] = [stats_table(result, outputs.wide)]
    tables += map_tables(result, outputs.wide) + freeze_tables(result, outputs.wide)
    if spikes is not None:
        tables += spike_tables(result, outputs.wide)
    _publish(outputs, result, tables, save_stats_figures)


def corpus_stats(
    run: RunOptions,
    corpus: CorpusOptions,
    spikes: SpikeOptions | None,
    outputs: Outputs,
    maps: MapOptions | None = None,
) -> None:
    """`lninspect stats --file ...` over a corpus; under torchrun rank 0 alone shows and writes."""
    from lninspect.cli.progress import CorpusProgress
    from lninspect.derived import KINDS
    from lninspect.render.catalog import CORPUS, names_of, save_corpus_figures
    from lninspect.render.corpus_tables import aggregate_table, position_table
    from lninspect.render.map_tables import map_tables
    from lninspect.render.spike_tables import census_table

    outputs.check(names_of(CORPUS))
    check_early(run, text=False)
    from lninspect.corpus.distributed import world_from_env
    from lninspect.corpus.job import run_corpus_stats

    world = world_from_env()
    err = outputs.console().err
    with CorpusProgress(err, enabled=world.is_main and not outputs.quiet) as progress:
        result = run_corpus_stats(run, corpus, spikes, progress.update, world, maps)
    if world.is_main:
        tables: list[RenderableType] = [
            aggregate_table(result, outputs.wide),
            position_table(result),
            *map_tables(result, outputs.wide),
        ]
        if spikes is not None:
            tables += [census_table(result, kind=kind, wide=outputs.wide) for kind in KINDS]
        _publish(outputs, result, tables, save_corpus_figures)


def norms(run: RunOptions, outputs: Outputs) -> None:
    """`lninspect norms`: the normalization modules found, with kind, layer, role and eps."""
    from lninspect.render.stats_tables import norms_table

    outputs.check()
    check_early(run, text=False)
    from lninspect.jobs import describe_norms

    result = describe_norms(run)
    _publish(outputs, result, [norms_table(result, outputs.wide)])


def grads(run: RunOptions, loss: Loss, target: str | None, outputs: Outputs) -> None:
    """`lninspect grads`: gradient norms through every norm, per token and per layer."""
    from lninspect.render.catalog import GRADS, names_of, save_grads_figures
    from lninspect.render.grad_tables import grads_table, layer_grads_table

    outputs.check(names_of(GRADS))
    check_early(run)
    from lninspect.jobs import run_grads

    result = run_grads(run, loss, target)
    tables = [grads_table(result, outputs.wide), layer_grads_table(result, outputs.wide)]
    _publish(outputs, result, tables, save_grads_figures)


def placement(config: PlacementConfig, text: str | None, outputs: Outputs) -> None:
    """`lninspect placement`: the norm layouts' gradient scales and stream at initialization."""
    from lninspect.placement.experiment import run_placement
    from lninspect.render.placement_plots import figure_names, save_placement_figures
    from lninspect.render.placement_tables import placement_report

    outputs.check(figure_names(config.layers))
    result = run_placement(config, text)
    _publish(outputs, result, [placement_report(result)], save_placement_figures)


def placement_train(
    config: PlacementConfig,
    train: TrainConfig,
    file: Path | None,
    outputs: Outputs,
    log_dir: Path | None = None,
) -> None:
    """`lninspect placement --train`: the layouts' training, with and without warm-up."""
    from lninspect.cli.progress import StepProgress
    from lninspect.placement.training import train_placement
    from lninspect.render.placement_plots import figure_names, save_placement_figures
    from lninspect.render.placement_tables import placement_report

    outputs.check(figure_names(config.layers, train=True, maps=train.maps))
    with StepProgress(outputs.console().err, enabled=not outputs.quiet) as progress:
        result = train_placement(config, train, file, progress=progress.update, log_dir=log_dir)
    _publish(outputs, result, [placement_report(result)], save_placement_figures)


def report(
    run: RunOptions,
    loss: Loss,
    target: str | None,
    spikes: SpikeOptions,
    folder: Path,
    outputs: Outputs,
    ablate: bool = False,
    maps: MapOptions | None = None,
) -> None:
    """`lninspect report`: stats, spikes and gradients of one run, written as a folder
    (and, with --json, the document also to that file)."""
    from lninspect.render.report import INDEX_HTML, findings_table
    from lninspect.reports import write_report_folder

    out = outputs.console()
    check_target(outputs.json, outputs.force)
    with _freeze_progress(outputs, maps) as progress:
        result, paths = write_report_folder(
            run,
            folder,
            loss=loss,
            target=target,
            spikes=spikes,
            ablate=ablate,
            maps=maps,
            force=outputs.force,
            notes=out.note,
            progress=progress.update,
        )
    _write_json(outputs, result)
    out.show(findings_table(result))
    out.note(f"wrote {len(paths)} files to {folder}; open {folder / INDEX_HTML}")


def run_log(log: Path, jump: float, outputs: Outputs, all_jumps: bool = False) -> None:
    """`lninspect run`: a watched run's log read back (also while it is being written)."""
    from lninspect.render.catalog import RUN, names_of, save_run_figures
    from lninspect.render.run_tables import MAX_JUMPS, jumps_table, run_table
    from lninspect.results.watch import read_log
    from lninspect.trends import jumps

    outputs.check(names_of(RUN))
    found = read_log(log)
    out = outputs.console()
    if found.partial_line:
        out.note(f"{found.path}: the last line is still being written; left out")
    for note in found.notes:
        out.note(note)
    if not found.records:
        raise LninspectError(f"log '{found.path}' holds no complete record yet")
    changes = jumps(found, factor=jump)
    out.show(run_table(found))
    out.show(jumps_table(found, changes, factor=jump, limit=None if all_jumps else MAX_JUMPS))
    written: list[Path] = []
    with all_or_nothing(outputs.force):  # every figure, or none and no folder made for them
        if outputs.figures is not None:
            written = save_run_figures(found, changes, make_folder(outputs.figures))
    for path in written:
        out.note(f"wrote {path}")


def compare(models: list[str], run: RunOptions, spikes: SpikeOptions, outputs: Outputs) -> None:
    """`lninspect compare`: several models or checkpoints on one text, norm by norm."""
    from lninspect.jobs import run_compare
    from lninspect.render.catalog import COMPARE, names_of, save_compare_figures
    from lninspect.render.compare_tables import differences_table, models_table

    outputs.check(names_of(COMPARE))
    out = outputs.console()
    result = run_compare(models, run, spikes, lambda spec: out.note(f"running {spec}"))
    _publish(
        outputs, result, [models_table(result), differences_table(result)], save_compare_figures
    )


def compare_report(
    models: list[str], run: RunOptions, spikes: SpikeOptions, folder: Path, outputs: Outputs
) -> None:
    """`lninspect report A B ...`: every model's report and their comparison on one page
    (and, with --json, the comparison's document also to that file)."""
    from lninspect.render.compare_report import INDEX_HTML
    from lninspect.render.compare_tables import differences_table, models_table
    from lninspect.reports import write_compare_folder

    out = outputs.console()
    check_target(outputs.json, outputs.force)
    compared, paths = write_compare_folder(
        models, run, folder, spikes=spikes, force=outputs.force, notes=out.note
    )
    _write_json(outputs, compared)
    out.show(models_table(compared))
    out.show(differences_table(compared))
    out.note(f"wrote {len(paths)} files to {folder}; open {folder / INDEX_HTML}")


def _freeze_progress(outputs: Outputs, maps: MapOptions | None) -> StepProgress:
    """The progress of --freeze-scale's texts (a minute or more on a real model)."""
    from lninspect.cli.progress import StepProgress

    asked = maps is not None and maps.freeze
    return StepProgress(outputs.console().err, enabled=asked and not outputs.quiet, unit="texts")


def _write_json(outputs: Outputs, result: Any) -> None:
    if outputs.json:
        with all_or_nothing(outputs.force):
            write_json(outputs.json, result.to_json())


def _publish(
    outputs: Outputs,
    result: Any,
    tables: Sequence[RenderableType],
    save_figures: Callable[[Any, Path], list[Path]] | None = None,
) -> None:
    """A result's notes, tables, figures (into the --out folder) and JSON, in that order."""
    out = outputs.console()
    for note in result.notes:
        out.note(note)
    for table in tables:
        out.show(table)
    written: list[Path] = []
    with all_or_nothing(outputs.force):  # every file, or none of them (a full disk)
        if outputs.figures is not None and save_figures is not None:
            written = save_figures(result, make_folder(outputs.figures))
        if outputs.json:
            write_json(outputs.json, result.to_json())
    for path in written:
        out.note(f"wrote {path}")
