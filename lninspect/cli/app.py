"""The `lninspect` command line: parse options, call lninspect.cli.commands, report errors.

Imports neither torch nor transformers, so that `lninspect --help` is instant; the
commands import them when they run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.exceptions import TyperException

from lninspect import __version__
from lninspect.cli.console import Output
from lninspect.errors import EXIT_INTERRUPTED, EXIT_RUNTIME, EXIT_USAGE, LninspectError
from lninspect.options import RunOptions, is_device_name, parse_layers

app = typer.Typer(
    name="lninspect",
    help="Inspect LayerNorm / RMSNorm statistics and gradient scales inside GPT-style models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
_state = {"debug": False}


class DType(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


def _check_device(value: str) -> str:
    if not is_device_name(value):
        raise typer.BadParameter(f"'{value}' is not one of auto, cpu, cuda, cuda:N, mps")
    return value


ModelArg = Annotated[
    str | None,
    typer.Argument(
        help="Hub id (gpt2), local model directory, random:ARCH (random weights) or tiny "
        "(bundled). Default: gpt2 if cached, else the bundled model.",
        show_default=False,
    ),
]
TextOpt = Annotated[
    str | None,
    typer.Option(
        "--text", "-t", help="Text to analyse (default: a built-in sample).", show_default=False
    ),
]
FileOpt = Annotated[
    Path | None,
    typer.Option("--file", "-f", help="Read the text from this file.", show_default=False),
]
EncodingOpt = Annotated[str, typer.Option(help="Encoding of --file.")]
MaxTokensOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Keep at most this many tokens (default: the model's context).",
        show_default=False,
    ),
]
DeviceOpt = Annotated[
    str, typer.Option(callback=_check_device, help="auto, cpu, cuda, cuda:N or mps.")
]
DTypeOpt = Annotated[
    DType, typer.Option(help="Model dtype; statistics are always computed in float32.")
]
RevisionOpt = Annotated[
    str | None, typer.Option(help="Hub revision (branch, tag or commit).", show_default=False)
]
TrustOpt = Annotated[
    bool,
    typer.Option(
        "--trust-remote-code", help="Allow a hub model's own Python code to run (off by default)."
    ),
]
SeedOpt = Annotated[int, typer.Option(help="Seed for random: weights.")]
JsonOpt = Annotated[
    str | None,
    typer.Option(
        "--json",
        help="Write the results as JSON to this file ('-' for stdout).",
        show_default=False,
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")]


def _check_layer_filter(value: str | None) -> str | None:
    if value is not None:
        try:
            parse_layers(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


LayerFilterOpt = Annotated[
    str | None,
    typer.Option(
        "--layers",
        callback=_check_layer_filter,
        help="Only the norms of these layers, e.g. 0,3,11 "
        "or 0-5 (from 0); the norms outside the blocks (final, embedding) are then left out.",
        show_default=False,
    ),
]
StrideOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Cover the whole text: windows of --max-tokens tokens (default: the model's "
        "context), one every N tokens, each a sequence of its own.",
        show_default=False,
    ),
]


def _check_positive(value: float) -> float:
    if not value > 0:
        raise typer.BadParameter(f"{value} is not a positive number")
    return value


SpikeZOpt = Annotated[
    float, typer.Option(callback=_check_positive, help="A dimension with |z| >= this is a spike.")
]
TopKOpt = Annotated[int, typer.Option(min=1, help="k of the top-k retention of spikes.")]
DEFAULT_OUT = Path("lninspect-report")
PlotOpt = Annotated[bool, typer.Option("--plot", help="Draw the figures as PNGs into --out.")]
OutOpt = Annotated[Path, typer.Option("--out", help="Folder for the PNGs of --plot.")]
QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", help="Print nothing but errors (and JSON asked for with --json -)."
    ),
]


def _check_max_memory(value: str | None) -> str | None:
    from lninspect.model.device_map import parse_max_memory

    try:
        parse_max_memory(value)
    except LninspectError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


class DeviceMap(str, Enum):
    auto = "auto"
    balanced = "balanced"
    balanced_low_0 = "balanced_low_0"
    sequential = "sequential"


CORPUS = "Corpus (docs/corpus.md)"
FilesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--file",
        "-f",
        help="Read the text from this file. Repeat it, or give a quoted glob "
        "('data/*.txt'), for a corpus.",
        show_default=False,
    ),
]
LinesOpt = Annotated[
    bool,
    typer.Option(
        "--lines", help="Corpus: one document per non-empty line.", rich_help_panel=CORPUS
    ),
]
FieldOpt = Annotated[
    str | None,
    typer.Option(
        help="Corpus of JSONL files: the document is this field of each line, e.g. text.",
        show_default=False,
        rich_help_panel=CORPUS,
    ),
]
SeqLenOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Corpus: tokens per sequence (default: the model's context, at most 1024).",
        show_default=False,
        rich_help_panel=CORPUS,
    ),
]
BatchSizeOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Corpus: sequences per forward pass (default: 8).",
        show_default=False,
        rich_help_panel=CORPUS,
    ),
]
MaxSequencesOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Corpus: stop after this many sequences (over all torchrun processes).",
        show_default=False,
        rich_help_panel=CORPUS,
    ),
]
DeviceMapOpt = Annotated[
    DeviceMap | None,
    typer.Option(
        help="Spread the model's layers over the devices with accelerate (replaces --device).",
        show_default=False,
    ),
]
MaxMemoryOpt = Annotated[
    str | None,
    typer.Option(
        callback=_check_max_memory,
        help="With --device-map: memory per device, e.g. cuda:0=20GiB,cuda:1=20GiB,cpu=64GiB.",
        show_default=False,
    ),
]


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"lninspect {__version__}")
        raise typer.Exit()


@app.callback()
def root(
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
    _state["debug"] = debug


@app.command()
def stats(
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
        ),
    ] = False,
    spike_z: SpikeZOpt = 6.0,
    top_k: TopKOpt = 8,
    plot: PlotOpt = False,
    out_dir: OutOpt = DEFAULT_OUT,
    json: JsonOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Per-token statistics of the input and output of every normalization module.

    Over a corpus (several --file, a glob, --lines, --field, --seq-len, ...): per-position
    statistics aggregated while streaming; under torchrun each process runs its share.
    """
    from lninspect.cli import commands
    from lninspect.corpus.reader import CorpusOptions
    from lninspect.options import SpikeOptions

    options = RunOptions(
        model,
        text,
        None,
        encoding,
        max_tokens,
        device,
        dtype.value,
        revision,
        trust_remote_code,
        seed,
        parse_layers(layers) if layers else None,
        stride,
        device_map.value if device_map else None,
        max_memory,
    )
    corpus = CorpusOptions(
        tuple(file or ()), lines, field, seq_len, batch_size, max_sequences, encoding
    )
    spike_options = SpikeOptions(z=spike_z, top_k=top_k) if spikes else None
    _run(
        commands.stats,
        options,
        Output(quiet, json == "-"),
        spike_options,
        json,
        out_dir if plot else None,
        force,
        corpus,
    )


@app.command()
def norms(
    model: ModelArg = None,
    device: DeviceOpt = "auto",
    dtype: DTypeOpt = DType.float32,
    revision: RevisionOpt = None,
    trust_remote_code: TrustOpt = False,
    json: JsonOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """List the normalization modules found: kind, layer, role, eps and weight."""
    from lninspect.cli import commands

    options = RunOptions(
        model,
        device=device,
        dtype=dtype.value,
        revision=revision,
        trust_remote_code=trust_remote_code,
    )
    _run(commands.norms, options, Output(quiet, json == "-"), json, force)


class Loss(str, Enum):
    ce = "ce"
    target = "target"


def _check_target(loss: Loss, target: str | None) -> None:
    if loss == Loss.target and not target:
        raise typer.BadParameter("--loss target needs --target TOKEN", param_hint="'--target'")


LossOpt = Annotated[
    Loss,
    typer.Option(
        help="ce: mean next-token cross-entropy of the text; target: -log p(--target) "
        "at the last position."
    ),
]
TargetOpt = Annotated[
    str | None, typer.Option(help="The token scored by --loss target.", show_default=False)
]


@app.command()
def grads(
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
    quiet: QuietOpt = False,
) -> None:
    """Gradient norms on both sides of every normalization module, per token and per layer."""
    from lninspect.cli import commands

    _check_target(loss, target)
    options = RunOptions(
        model,
        text,
        file,
        encoding,
        max_tokens,
        device,
        dtype.value,
        revision,
        trust_remote_code,
        seed,
        parse_layers(layers) if layers else None,
        stride,
    )
    _run(
        commands.grads,
        options,
        Output(quiet, json == "-"),
        loss.value,
        target,
        json,
        out_dir if plot else None,
        force,
    )


@app.command()
def report(
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
    loss: LossOpt = Loss.ce,
    target: TargetOpt = None,
    spike_z: SpikeZOpt = 6.0,
    top_k: TopKOpt = 8,
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
    quiet: QuietOpt = False,
) -> None:
    """Stats, spikes and gradients in one run: every figure, the JSON and an index.html."""
    from lninspect.cli import commands
    from lninspect.options import SpikeOptions

    _check_target(loss, target)
    options = RunOptions(
        model,
        text,
        file,
        encoding,
        max_tokens,
        device,
        dtype.value,
        revision,
        trust_remote_code,
        seed,
    )
    _run(
        commands.report,
        options,
        Output(quiet),
        loss.value,
        target,
        SpikeOptions(z=spike_z, top_k=top_k),
        out_dir,
        force,
    )


class NormKind(str, Enum):
    layernorm = "layernorm"
    rmsnorm = "rmsnorm"


class Init(str, Enum):
    xavier = "xavier"
    gpt2 = "gpt2"


def _positive_ints(value: str) -> list[int]:
    """`6,12,24` -> [6, 12, 24], sorted and without repeats; BadParameter otherwise."""
    try:
        numbers = sorted({int(v) for v in value.split(",")})
    except ValueError:
        raise typer.BadParameter(f"'{value}' is not a comma-separated list of integers") from None
    if numbers[0] < 1:
        raise typer.BadParameter(f"'{value}': every depth must be at least 1")
    return numbers


def _check_layers(value: str) -> str:
    _positive_ints(value)
    return value


@app.command()
def placement(
    layers: Annotated[
        str,
        typer.Option(
            callback=_check_layers, help="Depths L, comma-separated; several make a sweep."
        ),
    ] = "12",
    d_model: Annotated[int, typer.Option(min=8, help="Width d of the residual stream.")] = 256,
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
    seeds: Annotated[int, typer.Option(min=1, help="Models (and token batches) averaged.")] = 3,
    text: Annotated[
        str | None,
        typer.Option(
            "--text",
            "-t",
            help="Use the UTF-8 bytes of this text as tokens (default: seeded random tokens).",
            show_default=False,
        ),
    ] = None,
    plot: PlotOpt = False,
    out_dir: OutOpt = DEFAULT_OUT,
    json: JsonOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Pre-LN vs post-LN gradient scales at initialization (Xiong et al. 2020, Theorem 1)."""
    from lninspect.cli import commands
    from lninspect.results.placement import PlacementConfig

    if d_model % heads:
        raise typer.BadParameter(
            f"{d_model} is not divisible by --heads {heads}", param_hint="'--d-model'"
        )
    config = PlacementConfig(
        layers=_positive_ints(layers),
        d_model=d_model,
        heads=heads,
        mlp_ratio=mlp_ratio,
        norm=norm.value,
        init=init.value,
        seeds=seeds,
    )
    _run(
        commands.placement,
        RunOptions(text=text),
        Output(quiet, json == "-"),
        config,
        json,
        out_dir if plot else None,
        force,
    )


def _run(command: Callable[..., None], options: RunOptions, out: Output, *args: Any) -> None:
    """Run a command; a failure becomes one red line and an exit code (--debug: traceback)."""
    try:
        command(options, out, *args)
    except KeyboardInterrupt:
        out.error("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except LninspectError as exc:
        if _state["debug"]:
            raise
        out.error(str(exc))
        raise typer.Exit(exc.exit_code) from None
    except Exception as exc:  # a bug: still one line, unless --debug
        if _state["debug"]:
            raise
        line = next(iter(str(exc).strip().splitlines()), "")  # one line, whatever the message
        out.error(f"unexpected {type(exc).__name__}: {line} (run with --debug for the traceback)")
        raise typer.Exit(EXIT_RUNTIME) from None


def main() -> None:
    """Entry point of the `lninspect` script.

    Typer runs without its own error printing, so that a usage error (a bad option value,
    an unknown command) is, like every other failure, one red line and exit code 2.
    """
    try:
        code = app(prog_name="lninspect", standalone_mode=False)
    except TyperException as exc:
        context = getattr(exc, "ctx", None)
        where = context.command_path if context is not None else "lninspect"
        Output().error(f"{exc.format_message()} (see '{where} --help')")
        sys.exit(getattr(exc, "exit_code", EXIT_USAGE))
    except (KeyboardInterrupt, typer.Abort):
        Output().error("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code or 0)
