"""The commands about training: the placement experiment (at initialization and --train),
and `run`, which reads back a log written by lninspect.watch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lninspect.cli.app import app, invoke
from lninspect.cli.options import (
    DEFAULT_OUT,
    AllJumpsOpt,
    ForceOpt,
    Init,
    JsonOpt,
    NormKind,
    OutOpt,
    PlotOpt,
    QuietNoJsonOpt,
    QuietOpt,
    positive_ints,
)
from lninspect.cli.placement_options import (
    INIT_SEEDS,
    INIT_SHAPE,
    TRAIN_EVAL_EVERY,
    TRAIN_LRS,
    TRAIN_SEEDS,
    TRAIN_SHAPE,
    TRAIN_STATS_EVERY,
    TRAIN_STEPS,
    TRAIN_WARMUP,
    check_device,
    check_mode,
    check_optional_depths,
    check_rates,
    positive_floats,
)

TRAINING = "Training (--train; docs/placement.md)"


@app.command()
def placement(
    ctx: typer.Context,
    layers: Annotated[
        str | None,
        typer.Option(
            callback=check_optional_depths,
            help="Depths L, comma-separated; several make a sweep. Default: 12; 6 with --train "
            "(one depth only).",
            show_default=False,
        ),
    ] = None,
    d_model: Annotated[
        int | None,
        typer.Option(
            min=8,
            help="Width d of the residual stream. Default: 256; 64 with --train.",
            show_default=False,
        ),
    ] = None,
    heads: Annotated[int, typer.Option(min=1, help="Attention heads; must divide --d-model.")] = 4,
    mlp_ratio: Annotated[
        int,
        typer.Option(min=1, help="FFN hidden width / d: 1 as in the paper's analysis, 4 in GPT-2."),
    ] = 1,
    norm: Annotated[
        NormKind, typer.Option(help="The norm in every position.")
    ] = NormKind.layernorm,
    init: Annotated[
        Init,
        typer.Option(
            help="xavier: the paper's setting (Xavier-normal, no residual scaling); gpt2: "
            "N(0, 0.02) with residual projections scaled by 1/sqrt(2L), the control."
        ),
    ] = Init.xavier,
    seeds: Annotated[
        int | None,
        typer.Option(
            min=1,
            help=f"Models (and token batches) per configuration; intervals are over them. "
            f"Default: {INIT_SEEDS}; {TRAIN_SEEDS} with --train.",
            show_default=False,
        ),
    ] = None,
    text: Annotated[
        str | None,
        typer.Option(
            "--text",
            "-t",
            help="Use the UTF-8 bytes of this text as tokens (default: seeded random tokens).",
            show_default=False,
        ),
    ] = None,
    train: Annotated[
        bool,
        typer.Option(
            "--train",
            help="Train pre-LN and post-LN models instead: learning rate x warm-up x placement.",
            rich_help_panel=TRAINING,
        ),
    ] = False,
    steps: Annotated[
        int, typer.Option(min=1, help="Optimizer steps per run.", rich_help_panel=TRAINING)
    ] = TRAIN_STEPS,
    warmup: Annotated[
        int,
        typer.Option(
            min=0,
            help="Steps of linear warm-up; every run is also made without one (0: only without).",
            rich_help_panel=TRAINING,
        ),
    ] = TRAIN_WARMUP,
    lr: Annotated[
        str,
        typer.Option(
            "--lr",
            callback=check_rates,
            help="Peak learning rates, comma-separated.",
            rich_help_panel=TRAINING,
        ),
    ] = TRAIN_LRS,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            help="Train on this text file (default: the shipped Python docs text); documents "
            "are separated by <|endoftext|> lines.",
            show_default=False,
            rich_help_panel=TRAINING,
        ),
    ] = None,
    seq_len: Annotated[
        int | None,
        typer.Option(
            min=2,
            help="Tokens per sequence. Default: 128; 64 with --train.",
            show_default=False,
        ),
    ] = None,
    batch: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Sequences per seed (per step with --train). Default: 4; 8 with --train.",
            show_default=False,
        ),
    ] = None,
    dropout: Annotated[
        float,
        typer.Option(min=0.0, max=0.9, help="Dropout while training.", rich_help_panel=TRAINING),
    ] = 0.1,
    eval_every: Annotated[
        int,
        typer.Option(min=1, help="Held-out loss every N steps.", rich_help_panel=TRAINING),
    ] = TRAIN_EVAL_EVERY,
    stats_every: Annotated[
        int,
        typer.Option(
            min=1, help="The norms' input statistics every N steps.", rich_help_panel=TRAINING
        ),
    ] = TRAIN_STATS_EVERY,
    target_loss: Annotated[
        float | None,
        typer.Option(
            help="Held-out loss that 'steps to target' counts to (default: 10% of the way from "
            "the best run back to the start).",
            show_default=False,
            rich_help_panel=TRAINING,
        ),
    ] = None,
    device: Annotated[
        str,
        typer.Option(
            callback=check_device,
            help="Where to train: cpu, cuda, cuda:N, mps or auto.",
            rich_help_panel=TRAINING,
        ),
    ] = "cpu",
    plot: PlotOpt = False,
    out_dir: OutOpt = DEFAULT_OUT,
    json: JsonOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Pre-LN vs post-LN gradient scales at initialization (Xiong et al. 2020, Theorem 1);
    with --train, the first steps of training with and without learning-rate warm-up."""
    from lninspect.cli import commands
    from lninspect.results.placement import PlacementConfig

    shape = TRAIN_SHAPE if train else INIT_SHAPE
    depths = positive_ints(layers or str(shape["layers"]))
    d_model = d_model or shape["d_model"]
    if d_model % heads:
        raise typer.BadParameter(
            f"{d_model} is not divisible by --heads {heads}", param_hint="'--d-model'"
        )
    check_mode(train, depths, text=text, file=file, device=device)
    config = PlacementConfig(
        layers=depths,
        d_model=d_model,
        heads=heads,
        mlp_ratio=mlp_ratio,
        norm=norm.value,
        init=init.value,
        seeds=seeds or shape["seeds"],
        seq_len=seq_len or shape["seq_len"],
        batch=batch or shape["batch"],
    )
    outputs = commands.Outputs(json, out_dir if plot else None, force, quiet)
    if not train:
        invoke(ctx, commands.placement, config=config, text=text, outputs=outputs)
        return
    from lninspect.results.placement_training import TrainConfig

    training = TrainConfig(
        steps=steps,
        warmup=warmup,
        lrs=positive_floats(lr),
        dropout=dropout,
        eval_every=eval_every,
        stats_every=stats_every,
        target_loss=target_loss,
        device=device,
    )
    invoke(ctx, commands.placement_train, config=config, train=training, file=file, outputs=outputs)


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
    out_dir: OutOpt = DEFAULT_OUT,
    force: ForceOpt = False,
    quiet: QuietNoJsonOpt = False,
) -> None:
    """Read back a watched training run: norms over steps, jumps, spikes (docs/training.md).

    Works on a log that is still being written (its partial last line is left out).
    """
    from lninspect.cli import commands

    outputs = commands.Outputs(None, out_dir if plot else None, force, quiet)
    invoke(ctx, commands.run_log, log=log, jump=jump, outputs=outputs, all_jumps=all_jumps)


def _check_factor(value: float) -> float:
    if not value > 1:
        raise typer.BadParameter(f"{value} is not a factor above 1")
    return value
