"""Where output goes: tables to stdout, notes and errors to stderr, one object for all.

Lines are written without trailing spaces, and notes and errors with their control
characters escaped (lninspect.escape), so that no text or file name drives the terminal.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from lninspect.errors import EXIT_RUNTIME, LninspectError
from lninspect.escape import visible

LIBRARY_LOGGER = "lninspect"  # what the library says while it runs (a compile, a fallback)


class _Console(Console):
    """A Rich console that lets a closed pipe reach the CLI (Rich's own choice is exit 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, "the reader of the output closed it")


class Output:
    """Prints the results of one command.

    `quiet` keeps stdout and stderr free of everything but errors and requested JSON;
    `json_stdout` (for `--json -`) keeps stdout for the JSON document alone.
    """

    def __init__(self, quiet: bool = False, json_stdout: bool = False, wide: bool = False) -> None:
        self.quiet = quiet
        self.json_stdout = json_stdout
        self.wide = wide  # tables at their natural width, even wider than the terminal
        self.out = _Console(soft_wrap=False)
        self.err = _Console(stderr=True, soft_wrap=True)  # one message, one line

    def show(self, renderable: RenderableType) -> None:
        """A table (or any renderable) on stdout, each line without trailing spaces."""
        if self.quiet or self.json_stdout:
            return
        options = self.out.options
        if self.wide:
            options = options.update_width(
                max(options.max_width, _table_width(self.out, renderable))
            )
        lines = self.out.render_lines(renderable, options, pad=False, new_lines=False)
        try:
            for line in lines:
                self.out.print(*_rstrip(line), sep="", end="\n", soft_wrap=True)
        except BrokenPipeError:
            raise
        except OSError as exc:  # stdout on a full disk
            raise LninspectError(f"cannot write to stdout: {exc.strerror}", EXIT_RUNTIME) from exc

    def note(self, message: str) -> None:
        if not self.quiet:
            self.err.print(Text(visible(message), style="yellow"), soft_wrap=True)

    def error(self, message: str) -> None:
        # soft_wrap: one line whatever the terminal's width (the terminal may still fold it)
        self.err.print(
            Text.assemble(("error: ", "bold red"), (visible(message), "red")), soft_wrap=True
        )


def _table_width(console: Console, renderable: RenderableType) -> int:
    """The natural width of the widest table in `renderable` (a table, or a group of them)."""
    parts = renderable.renderables if isinstance(renderable, Group) else [renderable]
    widths = [
        Measurement.get(console, console.options.update_width(10_000), part).maximum
        for part in parts
        if isinstance(part, Table)
    ]
    return max(widths, default=0)


def _rstrip(line: list[Segment]) -> list[Text]:
    """One rendered line as Text pieces, its trailing whitespace removed."""
    pieces = [Text(s.text, style=s.style or "") for s in line if not s.control]
    while pieces and not pieces[-1].plain.rstrip():
        pieces.pop()
    if pieces:
        pieces[-1].rstrip()
    return pieces


class _NoteHandler(logging.Handler):
    """Log records of the library as one-line notes on stderr."""

    def __init__(self, output: Output, level: int) -> None:
        super().__init__(level)
        self.output = output

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info and record.levelno <= logging.DEBUG:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        self.output.note(message)


@contextmanager
def library_notes(output: Output, debug: bool) -> Iterator[None]:
    """Show the library's log records as notes while a command runs (DEBUG ones with --debug)."""
    logger = logging.getLogger(LIBRARY_LOGGER)
    level = logging.DEBUG if debug else logging.INFO
    handler, before = _NoteHandler(output, level), logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)
