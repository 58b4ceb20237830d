"""The commands about training: the placement experiment (at initialization and --train),
and `run`, which reads back a log written by lninspect.watch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lninspect.cli.app import app, invoke
from lninspect.cli.options import (
    AllJumpsOpt,
    ForceOpt,
    OutOpt,
    PlotOpt,
    QuietNoJsonOpt,
    figures_folder,
)
from lninspect.cli.placement_options import PLACEMENT, placement_config, train_config
from lninspect.cli.shared import FIGURES, FORCE, JSON, QUIET, Given, shared


@app.command()
@shared(PLACEMENT, FIGURES, JSON, FORCE, QUIET)
def placement(ctx: typer.Context, *, given: Given) -> None:
    """Norm layouts at initialization: gradient scales (Xiong et al. 2020, Theorem 1) and
    the residual stream's growth; with --train, the first steps of training with and
    without learning-rate warm-up (docs/placement.md)."""
    from lninspect.cli import commands

    config, outputs = placement_config(given), given.outputs()
    if given.train:
        training = train_config(given)
        request = {
            "config": config,
            "train": training,
            "file": given.file,
            "outputs": outputs,
            "log_dir": given.log_dir,
        }
        invoke(ctx, commands.placement_train, **request)
    else:
        invoke(ctx, commands.placement, config=config, text=given.text, outputs=outputs)


@app.command("run")
def run_command(
    ctx: typer.Context,
    log: Annotated[
        Path,
        typer.Argument(
            help="The JSONL log of lninspect.watch, or the log_dir that holds it.",
            show_default=False,
        ),
    ],
    jump: Annotated[
        float,
        typer.Option(
            callback=_check_factor,
            help="A statistic jumps when it grows or shrinks this many times against its "
            "recent median.",
        ),
    ] = 2.0,
    all_jumps: AllJumpsOpt = False,
    plot: PlotOpt = False,
    out_dir: OutOpt = None,
    force: ForceOpt = False,
    quiet: QuietNoJsonOpt = False,
) -> None:
    """Read back a watched training run: norms over steps, jumps, spikes (docs/training.md).

    Works on a log that is still being written (its partial last line is left out).
    """
    from lninspect.cli import commands

    outputs = commands.Outputs(None, figures_folder(plot, out_dir), force, quiet)
    invoke(ctx, commands.run_log, log=log, jump=jump, outputs=outputs, all_jumps=all_jumps)


def _check_factor(value: float) -> float:
    if not value > 1:
        raise typer.BadParameter(f"{value} is not a factor above 1")
    return value
