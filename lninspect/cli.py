"""The `lninspect` command line: parse options, call lninspect.commands, report errors.

Imports neither torch nor transformers, so that `lninspect --help` is instant; the
commands import them when they run.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from lninspect import __version__
from lninspect.console import Output
from lninspect.errors import EXIT_INTERRUPTED, EXIT_RUNTIME, LninspectError
from lninspect.options import RunOptions

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
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise typer.BadParameter(f"'{value}' is not one of auto, cpu, cuda, cuda:N, mps")
    return value


ModelArg = Annotated[Optional[str], typer.Argument(
    help="Hub id (gpt2), local model directory, random:ARCH (random weights) or tiny "
         "(bundled). Default: gpt2 if cached, else the bundled model.", show_default=False)]
TextOpt = Annotated[Optional[str], typer.Option(
    "--text", "-t", help="Text to analyse (default: a built-in sample).", show_default=False)]
FileOpt = Annotated[Optional[Path], typer.Option(
    "--file", "-f", help="Read the text from this file.", show_default=False)]
EncodingOpt = Annotated[str, typer.Option(help="Encoding of --file.")]
MaxTokensOpt = Annotated[Optional[int], typer.Option(
    min=1, help="Keep at most this many tokens (default: the model's context).",
    show_default=False)]
DeviceOpt = Annotated[str, typer.Option(
    callback=_check_device, help="auto, cpu, cuda, cuda:N or mps.")]
DTypeOpt = Annotated[DType, typer.Option(
    help="Model dtype; statistics are always computed in float32.")]
RevisionOpt = Annotated[Optional[str], typer.Option(
    help="Hub revision (branch, tag or commit).", show_default=False)]
TrustOpt = Annotated[bool, typer.Option(
    "--trust-remote-code", help="Allow a hub model's own Python code to run (off by default).")]
SeedOpt = Annotated[int, typer.Option(help="Seed for random: weights.")]
JsonOpt = Annotated[Optional[str], typer.Option(
    "--json", help="Write the results as JSON to this file ('-' for stdout).",
    show_default=False)]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")]
QuietOpt = Annotated[bool, typer.Option(
    "--quiet", "-q", help="Print nothing but errors (and JSON asked for with --json -).")]


@app.callback()
def root(
    debug: Annotated[bool, typer.Option(
        "--debug", envvar="LNINSPECT_DEBUG", help="Show the full traceback of errors.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    """Inspect LayerNorm / RMSNorm statistics and gradient scales inside GPT-style models."""
    _state["debug"] = debug
    if version:
        typer.echo(f"lninspect {__version__}")
        raise typer.Exit()


@app.command()
def stats(
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
    json: JsonOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Per-token statistics of the input and output of every normalization module."""
    from lninspect import commands

    options = RunOptions(model, text, file, encoding, max_tokens, device, dtype.value, revision,
                         trust_remote_code, seed)
    _run(commands.stats, options, Output(quiet, json == "-"), json, force)


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
    from lninspect import commands

    options = RunOptions(model, device=device, dtype=dtype.value, revision=revision,
                         trust_remote_code=trust_remote_code)
    _run(commands.norms, options, Output(quiet, json == "-"), json, force)


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
        out.error(f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        raise typer.Exit(EXIT_RUNTIME) from None


def main() -> None:
    """Entry point of the `lninspect` script."""
    app(prog_name="lninspect")
