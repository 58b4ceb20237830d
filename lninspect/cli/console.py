"""Where output goes: tables to stdout, notes and errors to stderr, one object for all.

Lines are written without trailing spaces, and notes and errors with their control
characters escaped (lninspect.escape), so that no text or file name drives the terminal.
"""

from __future__ import annotations

import errno
import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from lninspect.cli.flags import as_flags
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
        # markup=False: a string in a table (a module name such as `[red]`, a token) is shown
        # as written, never read as Rich markup; styles come from Text objects only
        self.out = _Console(soft_wrap=False, markup=False)
        self.err = _Console(stderr=True, soft_wrap=True, markup=False)  # one message, one line

    def show(self, renderable: RenderableType) -> None:
        """A table (or any renderable) on stdout, each line without trailing spaces."""
        if self.quiet or self.json_stdout:
            return
        options = self.out.options
        width = _table_width(self.out, renderable, "maximum" if self.wide else "minimum")
        if width > options.max_width:  # a table wider than the console is shown whole
            options = options.update_width(width)
        lines = self.out.render_lines(renderable, options, pad=False, new_lines=False)
        try:
            for line in lines:
                self.out.print(*_rstrip(line), sep="", end="\n", soft_wrap=True)
        except BrokenPipeError:
            raise
        except OSError as exc:  # stdout on a full disk
            raise LninspectError(f"cannot write to stdout: {exc.strerror}", EXIT_RUNTIME) from exc

    def note(self, message: str) -> None:
        """A note on stderr, the library's parameters named by their flags (cli/flags.py)."""
        if not self.quiet:
            self.err.print(Text(visible(as_flags(message)), style="yellow"), soft_wrap=True)

    def error(self, message: str) -> None:
        """One red line on stderr, the library's parameters named by their flags."""
        # soft_wrap: one line whatever the terminal's width (the terminal may still fold it)
        line = visible(as_flags(message))
        self.err.print(Text.assemble(("error: ", "bold red"), (line, "red")), soft_wrap=True)


def _table_width(console: Console, renderable: RenderableType, bound: str) -> int:
    """The natural width (`maximum`) of the widest table in `renderable` (a table, or a group
    of them), or the least width (`minimum`) at which its fitted tables cut nothing."""
    from lninspect.render.fit import FitTable  # numpy: not at the CLI's start

    parts = renderable.renderables if isinstance(renderable, Group) else [renderable]
    kinds = (Table, FitTable) if bound == "maximum" else (FitTable,)
    widths = [
        getattr(Measurement.get(console, console.options.update_width(10_000), part), bound)
        for part in parts
        if isinstance(part, kinds)
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
    """Log records of the library (and of transformers) as one-line notes on stderr."""

    def __init__(self, output: Output, level: int, debug: bool) -> None:
        super().__init__(level)
        self.output = output
        self.debug = debug
        self.displaced: list[logging.Handler] = []  # transformers' own, while this one runs

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info and record.levelno <= logging.DEBUG:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        where = "" if record.name.split(".")[0] == LIBRARY_LOGGER else "transformers: "
        self.output.note(where + one_note(message, self.debug))


_STYLE = re.compile(r"\x1b\[[0-9;]*m")  # a library's own bold and colours, not the content's


def one_note(message: str, debug: bool) -> str:
    """A library's message as one line (all of it with --debug), its styling removed."""
    lines = [line.rstrip() for line in _STYLE.sub("", message).splitlines() if line.strip()]
    if debug or len(lines) <= 1:
        return " | ".join(lines)
    return f"{lines[0]} ({len(lines) - 1} more lines; --debug shows them)"


@contextmanager
def library_notes(output: Output, debug: bool) -> Iterator[None]:
    """Show what the libraries say while a command runs as escaped one-line notes: the
    library's log records (DEBUG ones with --debug), transformers' (model/loading.py hands
    them over), and Python warnings of torch, numpy, ... (one note each)."""
    logger = logging.getLogger(LIBRARY_LOGGER)
    level = logging.DEBUG if debug else logging.INFO
    handler, before = _NoteHandler(output, level, debug), logger.level
    transformers = logging.getLogger("transformers")
    logger.addHandler(handler)
    transformers.addHandler(handler)
    logger.setLevel(level)

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        where = f" ({filename}:{lineno})" if debug else ""
        output.note(f"{category.__name__}: {one_note(str(message), debug)}{where}")

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show
            yield
    finally:
        logger.removeHandler(handler)
        transformers.removeHandler(handler)
        for displaced in handler.displaced:
            transformers.addHandler(displaced)
        logger.setLevel(before)
