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
from typing import Annotated, Any

import typer
from typer.exceptions import TyperException

from lninspect import __version__
from lninspect.cli.console import Output, library_notes
from lninspect.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_RUNTIME,
    EXIT_TERMINATED,
    EXIT_USAGE,
    LninspectError,
    Terminated,
)

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


def invoke(ctx: typer.Context, command: Callable[..., None], **request: Any) -> None:
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
        if _SIGNALS and not code:  # raised in a finalizer, which Python ignores: still 143
            raise Terminated()
    except TyperException as exc:
        context = getattr(exc, "ctx", None)
        where = context.command_path if context is not None else "lninspect"
        Output().error(f"{exc.format_message()} (see '{where} --help')")
        code = getattr(exc, "exit_code", EXIT_USAGE)
    except LninspectError as exc:  # a request the library refused while it was built
        Output().error(str(exc))
        code = exc.exit_code
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


_SIGNALS: list[int] = []  # SIGTERMs received


def _terminate(signum: int, frame: Any) -> None:
    _SIGNALS.append(signum)
    raise Terminated()


def _reader_gone() -> int:
    """stdout's reader closed it: point stdout at /dev/null so that exiting writes nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    return EXIT_BROKEN_PIPE
