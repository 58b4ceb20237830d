"""What each CLI command does, given parsed options: run a job, then show and write."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lninspect.console import Output
from lninspect.files import check_folder, check_target, make_folder, write_json
from lninspect.options import RunOptions, SpikeOptions

if TYPE_CHECKING:
    from lninspect.placement_results import PlacementConfig


def stats(options: RunOptions, out: Output, spikes: SpikeOptions | None, json_path: str | None,
          png_folder: Path | None, force: bool) -> None:
    """`lninspect stats`: per-token statistics of every normalization module."""
    from lninspect.jobs import run_stats
    from lninspect.render.spike_tables import order_table, spikes_table
    from lninspect.render.stats_plots import STATS_FIGURES, save_stats_figures
    from lninspect.render.tables import stats_table

    check_target(json_path, force)
    if png_folder is not None:
        check_folder(png_folder, list(STATS_FIGURES), force)
    result = run_stats(options, spikes)
    for note in result.notes:
        out.note(note)
    out.show(stats_table(result))
    if spikes is not None:
        out.show(spikes_table(result))
        out.show(order_table(result))
    if png_folder is not None:
        for path in save_stats_figures(result, make_folder(png_folder)):
            out.note(f"wrote {path}")
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


def grads(options: RunOptions, out: Output, loss: str, target: str | None,
          json_path: str | None, png_folder: Path | None, force: bool) -> None:
    """`lninspect grads`: gradient norms through every norm, per token and per layer."""
    from lninspect.jobs import run_grads
    from lninspect.render.grad_plots import FIGURES, save_grads_figures
    from lninspect.render.grad_tables import grads_table, layer_grads_table

    check_target(json_path, force)
    if png_folder is not None:
        check_folder(png_folder, list(FIGURES), force)
    result = run_grads(options, loss, target)
    for note in result.notes:
        out.note(note)
    out.show(grads_table(result))
    out.show(layer_grads_table(result))
    if png_folder is not None:
        for path in save_grads_figures(result, make_folder(png_folder)):
            out.note(f"wrote {path}")
    if json_path:
        write_json(json_path, result.to_json())


def placement(options: RunOptions, out: Output, config: PlacementConfig, json_path: str | None,
              png_folder: Path | None, force: bool) -> None:
    """`lninspect placement`: pre-LN vs post-LN gradient scales at initialization."""
    from lninspect.placement import run_placement
    from lninspect.render.placement import figure_names, placement_report, save_placement_figures

    check_target(json_path, force)
    if png_folder is not None:
        check_folder(png_folder, figure_names(config.layers), force)
    result = run_placement(config, options.text)
    for note in result.notes:
        out.note(note)
    out.show(placement_report(result))
    if png_folder is not None:
        for path in save_placement_figures(result, make_folder(png_folder)):
            out.note(f"wrote {path}")
    if json_path:
        write_json(json_path, result.to_json())


def report(options: RunOptions, out: Output, loss: str, target: str | None,
           spikes: SpikeOptions, folder: Path, force: bool) -> None:
    """`lninspect report`: stats, spikes and gradients of one run, written as a folder."""
    from lninspect.jobs import run_grads
    from lninspect.report import INDEX_HTML, check_report_folder, summary_table, write_report

    check_report_folder(folder, force)
    result = run_grads(options, loss, target, spikes=spikes)
    for note in result.notes:
        out.note(note)
    paths = write_report(result, folder)
    out.show(summary_table(result))
    out.note(f"wrote {len(paths)} files to {folder}; open {folder / INDEX_HTML}")
