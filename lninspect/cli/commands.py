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
from lninspect.files import STDOUT, check_folder, check_target, make_folder, write_json
from lninspect.options import CorpusOptions, RunOptions, SpikeOptions

if TYPE_CHECKING:
    from lninspect.results.placement import PlacementConfig
    from lninspect.results.placement_training import TrainConfig


@dataclass(frozen=True)
class Outputs:
    """Where a command's results go besides the terminal."""

    json: str | None = None  # a file, or '-' for stdout
    figures: Path | None = None  # the folder for PNGs (--plot), None: no figures
    force: bool = False  # replace existing output files
    quiet: bool = False  # nothing but errors (and JSON on stdout)

    def console(self) -> Output:
        return Output(self.quiet, json_stdout=self.json == STDOUT)

    def check(self, figures: Sequence[str] = ()) -> None:
        """Refuse, before any work, existing outputs (without --force) and unwritable ones."""
        check_target(self.json, self.force)
        if self.figures is not None:
            check_folder(self.figures, list(figures), self.force)


def stats(run: RunOptions, spikes: SpikeOptions | None, outputs: Outputs) -> None:
    """`lninspect stats`: per-token statistics of every normalization module of one text."""
    from lninspect.jobs import run_stats
    from lninspect.render.spike_tables import order_table, spikes_table
    from lninspect.render.stats_plots import STATS_FIGURES, save_stats_figures
    from lninspect.render.stats_tables import stats_table

    outputs.check(STATS_FIGURES)
    result = run_stats(run, spikes)
    tables = [stats_table(result)]
    if spikes is not None:
        tables += [spikes_table(result), order_table(result)]
    _publish(outputs, result, tables, save_stats_figures)


def corpus_stats(
    run: RunOptions, corpus: CorpusOptions, spikes: SpikeOptions | None, outputs: Outputs
) -> None:
    """`lninspect stats --file ...` over a corpus; under torchrun rank 0 alone shows and writes."""
    from lninspect.cli.progress import CorpusProgress
    from lninspect.corpus.distributed import world_from_env
    from lninspect.corpus.job import run_corpus_stats
    from lninspect.render.corpus_plots import CORPUS_FIGURES, save_corpus_figures
    from lninspect.render.corpus_tables import aggregate_table, position_table

    outputs.check(CORPUS_FIGURES)
    world = world_from_env()
    err = outputs.console().err
    with CorpusProgress(err, enabled=world.is_main and not outputs.quiet) as progress:
        result = run_corpus_stats(run, corpus, spikes, progress.update, world)
    if world.is_main:
        tables = [aggregate_table(result), position_table(result)]
        _publish(outputs, result, tables, save_corpus_figures)


def norms(run: RunOptions, outputs: Outputs) -> None:
    """`lninspect norms`: the normalization modules found, with kind, layer, role and eps."""
    from lninspect.jobs import describe_norms
    from lninspect.render.stats_tables import norms_table

    outputs.check()
    result = describe_norms(run)
    _publish(outputs, result, [norms_table(result)])


def grads(run: RunOptions, loss: str, target: str | None, outputs: Outputs) -> None:
    """`lninspect grads`: gradient norms through every norm, per token and per layer."""
    from lninspect.jobs import run_grads
    from lninspect.render.grad_plots import FIGURES, save_grads_figures
    from lninspect.render.grad_tables import grads_table, layer_grads_table

    outputs.check(FIGURES)
    result = run_grads(run, loss, target)
    _publish(outputs, result, [grads_table(result), layer_grads_table(result)], save_grads_figures)


def placement(config: PlacementConfig, text: str | None, outputs: Outputs) -> None:
    """`lninspect placement`: pre-LN vs post-LN gradient scales at initialization."""
    from lninspect.placement.experiment import run_placement
    from lninspect.render.placement_plots import figure_names, save_placement_figures
    from lninspect.render.placement_tables import placement_report

    outputs.check(figure_names(config.layers))
    result = run_placement(config, text)
    _publish(outputs, result, [placement_report(result)], save_placement_figures)


def placement_train(
    config: PlacementConfig, train: TrainConfig, file: Path | None, outputs: Outputs
) -> None:
    """`lninspect placement --train`: pre-LN vs post-LN training, with and without warm-up."""
    from lninspect.cli.progress import StepProgress
    from lninspect.placement.training import train_placement
    from lninspect.render.placement_plots import figure_names, save_placement_figures
    from lninspect.render.placement_tables import placement_report

    outputs.check(figure_names(config.layers, train=True))
    with StepProgress(outputs.console().err, enabled=not outputs.quiet) as progress:
        result = train_placement(config, train, file, progress=progress.update)
    _publish(outputs, result, [placement_report(result)], save_placement_figures)


def report(
    run: RunOptions,
    loss: str,
    target: str | None,
    spikes: SpikeOptions,
    folder: Path,
    force: bool,
    quiet: bool,
) -> None:
    """`lninspect report`: stats, spikes and gradients of one run, written as a folder."""
    from lninspect.jobs import run_grads
    from lninspect.render.report import INDEX_HTML, check_report_folder, summary_table, write_report

    check_report_folder(folder, force)
    out = Output(quiet)
    result = run_grads(run, loss, target, spikes=spikes)
    for note in result.notes:
        out.note(note)
    paths = write_report(result, folder)
    out.show(summary_table(result))
    out.note(f"wrote {len(paths)} files to {folder}; open {folder / INDEX_HTML}")


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
    if outputs.figures is not None and save_figures is not None:
        for path in save_figures(result, make_folder(outputs.figures)):
            out.note(f"wrote {path}")
    if outputs.json:
        write_json(outputs.json, result.to_json())
