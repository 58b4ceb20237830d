"""The `lninspect` command line: parse options, build one request, call lninspect.cli.commands.

Imports neither torch nor transformers, so that `lninspect --help` is instant; the
commands import them when they run. Every failure is one red line and an exit code
(docs/errors.md); `--debug` (kept in the Typer context) shows the traceback instead.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.exceptions import TyperException

from lninspect import __version__
from lninspect.cli.console import Output, library_notes
from lninspect.cli.options import (
    DEFAULT_OUT,
    AblateOpt,
    BatchSizeOpt,
    DeviceMapOpt,
    DeviceOpt,
    DType,
    DTypeOpt,
    EncodingOpt,
    FieldOpt,
    FileOpt,
    FilesOpt,
    ForceOpt,
    Init,
    JsonOpt,
    LayerFilterOpt,
    LinesOpt,
    Loss,
    LossOpt,
    MaxMemoryOpt,
    MaxSequencesOpt,
    MaxTokensOpt,
    ModelArg,
    NormKind,
    OutOpt,
    PlotOpt,
    QuietOpt,
    ReductionsMode,
    ReductionsOpt,
    RevisionOpt,
    SeedOpt,
    SeqLenOpt,
    SpikeAbsOpt,
    SpikeRatioOpt,
    SpikeZOpt,
    StrideOpt,
    TargetOpt,
    TextOpt,
    TopKOpt,
    TrustOpt,
    WideOpt,
    check_target,
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
from lninspect.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_RUNTIME,
    EXIT_TERMINATED,
    EXIT_USAGE,
    LninspectError,
    Terminated,
)
from lninspect.options import CorpusOptions, RunOptions, SpikeOptions, parse_layers

app = typer.Typer(
    name="lninspect",
    help="Inspect LayerNorm / RMSNorm statistics and gradient scales inside GPT-style models.",
    invoke_without_command=True,  # `lninspect` alone: the help (root() prints it)
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: it fits 80 columns, and flags show no value
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass
class Settings:
    """What the root options set for every command (the Typer context's `obj`)."""

    debug: bool = False


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"lninspect {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug", envvar="LNINSPECT_DEBUG", help="Show the full traceback of errors."
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Inspect LayerNorm / RMSNorm statistics and gradient scales inside GPT-style models."""
    ctx.obj = Settings(debug=debug)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit()


@app.command()
def stats(
    ctx: typer.Context,
    model: ModelArg = None,
    text: TextOpt = None,
    file: FilesOpt = None,
    encoding: EncodingOpt = "utf-8",
    max_tokens: MaxTokensOpt = None,
    device: DeviceOpt = "auto",
    dtype: DTypeOpt = DType.float32,
    revision: RevisionOpt = None,
    trust_remote_code: TrustOpt = False,
    seed: SeedOpt = 0,
    layers: LayerFilterOpt = None,
    stride: StrideOpt = None,
    lines: LinesOpt = False,
    field: FieldOpt = None,
    seq_len: SeqLenOpt = None,
    batch_size: BatchSizeOpt = None,
    max_sequences: MaxSequencesOpt = None,
    device_map: DeviceMapOpt = None,
    max_memory: MaxMemoryOpt = None,
    spikes: Annotated[
        bool,
        typer.Option(
            "--spikes",
            help="Also find activation spikes and measure whether each norm keeps "
            "their order (docs/metrics.md).",
            rich_help_panel="Spikes (docs/metrics.md)",
        ),
    ] = False,
    spike_abs: SpikeAbsOpt = 100.0,
    spike_ratio: SpikeRatioOpt = 1000.0,
    spike_z: SpikeZOpt = 6.0,
    top_k: TopKOpt = 8,
    ablate_spikes: AblateOpt = False,
    plot: PlotOpt = False,
    out_dir: OutOpt = DEFAULT_OUT,
    json: JsonOpt = None,
    force: ForceOpt = False,
    reductions: ReductionsOpt = ReductionsMode.auto,
    quiet: QuietOpt = False,
    wide: WideOpt = False,
) -> None:
    """Per-token statistics of the input and output of every normalization module.

    Over a corpus (several --file, a glob, --lines, --field, --seq-len, ...): per-position
    statistics aggregated while streaming; under torchrun each process runs its share.
    """
    from lninspect.cli import commands

    corpus = CorpusOptions(
        files=tuple(file or ()),
        lines=lines,
        field=field,
        seq_len=seq_len,
        batch_size=batch_size,
        max_sequences=max_sequences,
        encoding=encoding,
    )
    run = RunOptions(
        model=model,
        text=text,
        file=Path(file[0]) if file and not corpus.requested else None,
        encoding=encoding,
        max_tokens=max_tokens,
        device=device,
        dtype=dtype.value,
        revision=revision,
        trust_remote_code=trust_remote_code,
        seed=seed,
        layers=parse_layers(layers) if layers else None,
        stride=stride,
        device_map=device_map.value if device_map else None,
        max_memory=max_memory,
        reductions=reductions.value,
    )
    spike_options = (
        SpikeOptions(z=spike_z, magnitude=spike_abs, ratio=spike_ratio, top_k=top_k)
        if spikes or ablate_spikes
        else None
    )
    outputs = commands.Outputs(json, out_dir if plot else None, force, quiet, wide)
    if corpus.requested:
        if ablate_spikes:
            raise typer.BadParameter(
                "applies to one text; a corpus is aggregated without keeping what the "
                "second and third runs would need",
                param_hint="'--ablate-spikes'",
            )
        _invoke(
            ctx,
            commands.corpus_stats,
            run=run,
            corpus=corpus,
            spikes=spike_options,
            outputs=outputs,
        )
    else:
        _invoke(
            ctx,
            commands.stats,
            run=run,
            spikes=spike_options,
            ablate=ablate_spikes,
            outputs=outputs,
        )


@app.command()
def norms(
    ctx: typer.Context,
    model: ModelArg = None,
    device: DeviceOpt = "auto",
    dtype: DTypeOpt = DType.float32,
    revision: RevisionOpt = None,
    trust_remote_code: TrustOpt = False,
    json: JsonOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    wide: WideOpt = False,
) -> None:
    """List the normalization modules found: kind, layer, role, eps and weight."""
    from lninspect.cli import commands

    run = RunOptions(
        model=model,
        device=device,
        dtype=dtype.value,
        revision=revision,
        trust_remote_code=trust_remote_code,
    )
    outputs = commands.Outputs(json, None, force, quiet, wide)
    _invoke(ctx, commands.norms, run=run, outputs=outputs)


@app.command()
def grads(
    ctx: typer.Context,
    model: ModelArg = None,
    text: TextOpt = None,
    file: FileOpt = None,
    encoding: EncodingOpt = "utf-8",
    max_tokens: MaxTokensOpt = None,
    device: DeviceOpt = "auto",
    dtype: DTypeOpt = DType.float32,
    revision: RevisionOpt = None,
    trust_remote_code: TrustOpt = False,
    seed: SeedOpt = 0,
    layers: LayerFilterOpt = None,
    stride: StrideOpt = None,
    loss: LossOpt = Loss.ce,
    target: TargetOpt = None,
    plot: PlotOpt = False,
    out_dir: OutOpt = DEFAULT_OUT,
    json: JsonOpt = None,
    force: ForceOpt = False,
    reductions: ReductionsOpt = ReductionsMode.auto,
    quiet: QuietOpt = False,
    wide: WideOpt = False,
) -> None:
    """Gradient norms on both sides of every normalization module, per token and per layer."""
    from lninspect.cli import commands

    check_target(loss, target)
    run = RunOptions(
        model=model,
        text=text,
        file=file,
        encoding=encoding,
        max_tokens=max_tokens,
        device=device,
        dtype=dtype.value,
        revision=revision,
        trust_remote_code=trust_remote_code,
        seed=seed,
        layers=parse_layers(layers) if layers else None,
        stride=stride,
        reductions=reductions.value,
    )
    outputs = commands.Outputs(json, out_dir if plot else None, force, quiet, wide)
    _invoke(ctx, commands.grads, run=run, loss=loss.value, target=target, outputs=outputs)


@app.command()
def report(
    ctx: typer.Context,
    models: Annotated[
        list[str] | None,
        typer.Argument(
            help="The model (see `stats`); several (a revision as id@revision) make one page "
            "with them side by side and their comparison.",
            show_default=False,
        ),
    ] = None,
    text: TextOpt = None,
    file: FileOpt = None,
    encoding: EncodingOpt = "utf-8",
    max_tokens: MaxTokensOpt = None,
    device: DeviceOpt = "auto",
    dtype: DTypeOpt = DType.float32,
    revision: RevisionOpt = None,
    trust_remote_code: TrustOpt = False,
    seed: SeedOpt = 0,
    layers: LayerFilterOpt = None,
    stride: StrideOpt = None,
    loss: LossOpt = Loss.ce,
    target: TargetOpt = None,
    spike_abs: SpikeAbsOpt = 100.0,
    spike_ratio: SpikeRatioOpt = 1000.0,
    spike_z: SpikeZOpt = 6.0,
    top_k: TopKOpt = 8,
    ablate_spikes: AblateOpt = False,
    out_dir: Annotated[
        Path,
        typer.Option("--out", help="Folder for the report: the PNGs, report.json and index.html."),
    ] = DEFAULT_OUT,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Write into a non-empty --out, replacing files of the same names."
        ),
    ] = False,
    reductions: ReductionsOpt = ReductionsMode.auto,
    quiet: QuietOpt = False,
) -> None:
    """Stats, spikes and gradients in one run: every figure, the JSON and an index.html.

    Several models: each one's figures side by side on one page, with their comparison
    (as `lninspect compare`; the loss is then next-token cross-entropy).
    """
    from lninspect.cli import commands

    check_target(loss, target)
    if models and len(models) > 1 and (loss != Loss.ce or revision):
        raise typer.BadParameter(
            "several models take neither --loss target nor --revision (write id@revision)"
        )
    run = RunOptions(
        model=models[0] if models else None,
        text=text,
        file=file,
        encoding=encoding,
        max_tokens=max_tokens,
        device=device,
        dtype=dtype.value,
        revision=revision,
        trust_remote_code=trust_remote_code,
        seed=seed,
        reductions=reductions.value,
        layers=parse_layers(layers) if layers else None,
        stride=stride,
    )
    if models and len(models) > 1:
        _invoke(
            ctx,
            commands.compare_report,
            models=list(models),
            run=run,
            spikes=SpikeOptions(z=spike_z, magnitude=spike_abs, ratio=spike_ratio, top_k=top_k),
            folder=out_dir,
            force=force,
            quiet=quiet,
        )
        return
    _invoke(
        ctx,
        commands.report,
        run=run,
        loss=loss.value,
        target=target,
        spikes=SpikeOptions(z=spike_z, magnitude=spike_abs, ratio=spike_ratio, top_k=top_k),
        ablate=ablate_spikes,
        folder=out_dir,
        force=force,
        quiet=quiet,
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
        _invoke(ctx, commands.placement, config=config, text=text, outputs=outputs)
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
    _invoke(
        ctx, commands.placement_train, config=config, train=training, file=file, outputs=outputs
    )


@app.command()
def compare(
    ctx: typer.Context,
    models: Annotated[
        list[str],
        typer.Argument(
            help="Two or more models: hub ids (a revision as id@revision), local "
            "directories, random:ARCH or tiny. The first is the reference, A.",
            show_default=False,
        ),
    ],
    text: TextOpt = None,
    file: FileOpt = None,
    encoding: EncodingOpt = "utf-8",
    max_tokens: MaxTokensOpt = None,
    device: DeviceOpt = "auto",
    dtype: DTypeOpt = DType.float32,
    trust_remote_code: TrustOpt = False,
    seed: SeedOpt = 0,
    spike_z: SpikeZOpt = 6.0,
    plot: PlotOpt = False,
    out_dir: OutOpt = DEFAULT_OUT,
    json: JsonOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Several models or checkpoints on one text: norm by norm, their largest differences.

    With the same tokenizer the models are compared token by token on the same tokens;
    otherwise per layer, norms matched by role and relative depth (the output says which).
    """
    from lninspect.cli import commands

    if len(models) < 2:
        raise typer.BadParameter("give at least two models to compare", param_hint="'MODELS'")
    run = RunOptions(
        text=text,
        file=file,
        encoding=encoding,
        max_tokens=max_tokens,
        device=device,
        dtype=dtype.value,
        trust_remote_code=trust_remote_code,
        seed=seed,
    )
    outputs = commands.Outputs(json, out_dir if plot else None, force, quiet)
    _invoke(
        ctx,
        commands.compare,
        models=list(models),
        run=run,
        spikes=SpikeOptions(z=spike_z),
        outputs=outputs,
    )


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
    plot: PlotOpt = False,
    out_dir: OutOpt = DEFAULT_OUT,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Read back a watched training run: norms over steps, jumps, spikes (docs/training.md).

    Works on a log that is still being written (its partial last line is left out).
    """
    from lninspect.cli import commands

    outputs = commands.Outputs(None, out_dir if plot else None, force, quiet)
    _invoke(ctx, commands.run_log, log=log, jump=jump, outputs=outputs)


def _check_factor(value: float) -> float:
    if not value > 1:
        raise typer.BadParameter(f"{value} is not a factor above 1")
    return value


def _invoke(ctx: typer.Context, command: Callable[..., None], **request: Any) -> None:
    """Run a command; a failure becomes one red line and an exit code (--debug: traceback)."""
    debug = isinstance(ctx.obj, Settings) and ctx.obj.debug
    outputs = request.get("outputs")
    quiet = bool(outputs.quiet if outputs is not None else request.get("quiet", False))
    try:
        with library_notes(Output(quiet), debug):
            command(**request)
    except KeyboardInterrupt:
        Output().error("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Terminated:
        Output().error("terminated")
        raise typer.Exit(EXIT_TERMINATED) from None
    except BrokenPipeError:
        raise typer.Exit(_reader_gone()) from None
    except LninspectError as exc:
        if debug:
            traceback.print_exc()
        Output().error(str(exc))
        raise typer.Exit(exc.exit_code) from None
    except Exception as exc:  # a bug: still one line, unless --debug
        if debug:
            raise
        line = next(iter(str(exc).strip().splitlines()), "")  # one line, whatever the message
        Output().error(
            f"unexpected {type(exc).__name__}: {line} (run with --debug for the traceback)"
        )
        raise typer.Exit(EXIT_RUNTIME) from None


def main() -> None:
    """Entry point of the `lninspect` script.

    Typer runs without its own error printing, so that a usage error (a bad option value,
    an unknown command) is, like every other failure, one red line and exit code 2.
    SIGTERM ends a run as Ctrl-C does, through every `finally` (no temporary file is left);
    a reader that closes stdout (`| head -1`) ends it quietly, exit 141 (128 + SIGPIPE).
    """
    signal.signal(signal.SIGTERM, _terminate)
    stdout = sys.stdout
    try:
        code = app(prog_name="lninspect", standalone_mode=False)
        if sys.stdout is not None:  # None: the shell closed it (`>&-`)
            sys.stdout.flush()
    except TyperException as exc:
        context = getattr(exc, "ctx", None)
        where = context.command_path if context is not None else "lninspect"
        Output().error(f"{exc.format_message()} (see '{where} --help')")
        code = getattr(exc, "exit_code", EXIT_USAGE)
    except (KeyboardInterrupt, typer.Abort):
        Output().error("interrupted")
        code = EXIT_INTERRUPTED
    except Terminated:
        Output().error("terminated")
        code = EXIT_TERMINATED
    except BrokenPipeError:
        code = _reader_gone()
    except SystemExit as exc:
        # Typer ends a broken pipe while printing help with exit 1, after wrapping stdout
        code = EXIT_BROKEN_PIPE if sys.stdout is not stdout else exc.code
    except OSError as exc:  # stdout on a full disk (/dev/full), ...
        Output().error(f"cannot write the output: {exc.strerror}")
        code = EXIT_RUNTIME
    sys.exit(code or 0)


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


def _reader_gone() -> int:
    """stdout's reader closed it: point stdout at /dev/null so that exiting writes nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    return EXIT_BROKEN_PIPE
