"""What each CLI command does, given parsed options: run a job, then show and write."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import RenderableType

from lninspect.cli.console import Output
from lninspect.files import check_folder, check_target, make_folder, write_json
from lninspect.options import RunOptions, SpikeOptions

if TYPE_CHECKING:
    from lninspect.corpus.reader import CorpusOptions
    from lninspect.results.placement import PlacementConfig


def stats(
    options: RunOptions,
    out: Output,
    spikes: SpikeOptions | None,
    json_path: str | None,
    png_folder: Path | None,
    force: bool,
    corpus: CorpusOptions | None = None,
) -> None:
    """`lninspect stats`: per-token statistics of every normalization module.

    With corpus options (several files, a glob, --lines, --seq-len, ...) the statistics
    are aggregated per position over the corpus instead (corpus_stats).
    """
    if corpus is not None and corpus.requested:
        corpus_stats(options, out, corpus, spikes, json_path, png_folder, force)
        return
    if corpus is not None and corpus.files:
        options = replace(options, file=Path(corpus.files[0]))
    from lninspect.jobs import run_stats
    from lninspect.render.spike_tables import order_table, spikes_table
    from lninspect.render.stats_plots import STATS_FIGURES, save_stats_figures
    from lninspect.render.stats_tables import stats_table

    _check_outputs(json_path, png_folder, STATS_FIGURES, force)
    result = run_stats(options, spikes)
    tables = [stats_table(result)]
    if spikes is not None:
        tables += [spikes_table(result), order_table(result)]
    _publish(out, result, tables, json_path, png_folder, save_stats_figures)


def corpus_stats(
    options: RunOptions,
    out: Output,
    corpus: CorpusOptions,
    spikes: SpikeOptions | None,
    json_path: str | None,
    png_folder: Path | None,
    force: bool,
) -> None:
    """`lninspect stats --file ...` over a corpus; under torchrun rank 0 alone shows and writes."""
    from lninspect.cli.progress import CorpusProgress
    from lninspect.corpus.distributed import world_from_env
    from lninspect.corpus.job import run_corpus_stats
    from lninspect.render.corpus_plots import CORPUS_FIGURES, save_corpus_figures
    from lninspect.render.corpus_tables import aggregate_table, position_table

    _check_outputs(json_path, png_folder, CORPUS_FIGURES, force)
    world = world_from_env()
    with CorpusProgress(out.err, enabled=world.is_main and not out.quiet) as progress:
        result = run_corpus_stats(options, corpus, spikes, progress.update, world)
    if world.is_main:
        _publish(
            out,
            result,
            [aggregate_table(result), position_table(result)],
            json_path,
            png_folder,
            save_corpus_figures,
        )


def norms(options: RunOptions, out: Output, json_path: str | None, force: bool) -> None:
    """`lninspect norms`: the normalization modules found, with kind, layer, role and eps."""
    from lninspect.jobs import describe_norms
    from lninspect.render.stats_tables import norms_table

    check_target(json_path, force)
    result = describe_norms(options)
    _publish(out, result, [norms_table(result)], json_path)


def grads(
    options: RunOptions,
    out: Output,
    loss: str,
    target: str | None,
    json_path: str | None,
    png_folder: Path | None,
    force: bool,
) -> None:
    """`lninspect grads`: gradient norms through every norm, per token and per layer."""
    from lninspect.jobs import run_grads
    from lninspect.render.grad_plots import FIGURES, save_grads_figures
    from lninspect.render.grad_tables import grads_table, layer_grads_table

    _check_outputs(json_path, png_folder, FIGURES, force)
    result = run_grads(options, loss, target)
    _publish(
        out,
        result,
        [grads_table(result), layer_grads_table(result)],
        json_path,
        png_folder,
        save_grads_figures,
    )


def placement(
    options: RunOptions,
    out: Output,
    config: PlacementConfig,
    json_path: str | None,
    png_folder: Path | None,
    force: bool,
) -> None:
    """`lninspect placement`: pre-LN vs post-LN gradient scales at initialization."""
    from lninspect.placement.experiment import run_placement
    from lninspect.render.placement_tables import (
        figure_names,
        placement_report,
        save_placement_figures,
    )

    _check_outputs(json_path, png_folder, figure_names(config.layers), force)
    result = run_placement(config, options.text)
    _publish(out, result, [placement_report(result)], json_path, png_folder, save_placement_figures)


def report(
    options: RunOptions,
    out: Output,
    loss: str,
    target: str | None,
    spikes: SpikeOptions,
    folder: Path,
    force: bool,
) -> None:
    """`lninspect report`: stats, spikes and gradients of one run, written as a folder."""
    from lninspect.jobs import run_grads
    from lninspect.render.report import INDEX_HTML, check_report_folder, summary_table, write_report

    check_report_folder(folder, force)
    result = run_grads(options, loss, target, spikes=spikes)
    for note in result.notes:
        out.note(note)
    paths = write_report(result, folder)
    out.show(summary_table(result))
    out.note(f"wrote {len(paths)} files to {folder}; open {folder / INDEX_HTML}")


def _check_outputs(
    json_path: str | None, png_folder: Path | None, figures: Sequence[str], force: bool
) -> None:
    """Refuse, before any work, output files that exist (without --force) or cannot be written."""
    check_target(json_path, force)
    if png_folder is not None:
        check_folder(png_folder, list(figures), force)


def _publish(
    out: Output,
    result: Any,
    tables: list[RenderableType],
    json_path: str | None,
    png_folder: Path | None = None,
    save_figures: Callable[[Any, Path], list[Path]] | None = None,
) -> None:
    """A result's notes, tables, figures (into `png_folder`) and JSON, in that order."""
    for note in result.notes:
        out.note(note)
    for table in tables:
        out.show(table)
    if png_folder is not None and save_figures is not None:
        for path in save_figures(result, make_folder(png_folder)):
            out.note(f"wrote {path}")
    if json_path:
        write_json(json_path, result.to_json())
