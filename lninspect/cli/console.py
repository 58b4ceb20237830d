"""Where output goes: tables to stdout, notes and errors to stderr, one object for all."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console, RenderableType
from rich.text import Text

LIBRARY_LOGGER = "lninspect"  # what the library says while it runs (a compile, a fallback)


class Output:
    """Prints the results of one command.

    `quiet` keeps stdout and stderr free of everything but errors and requested JSON;
    `json_stdout` (for `--json -`) keeps stdout for the JSON document alone.
    """

    def __init__(self, quiet: bool = False, json_stdout: bool = False) -> None:
        self.quiet = quiet
        self.json_stdout = json_stdout
        self.out = Console(soft_wrap=False)
        self.err = Console(stderr=True, soft_wrap=True)  # one message, one line

    def show(self, renderable: RenderableType) -> None:
        if not (self.quiet or self.json_stdout):
            self.out.print(renderable)

    def note(self, message: str) -> None:
        if not self.quiet:
            self.err.print(Text(message, style="yellow"), soft_wrap=True)

    def error(self, message: str) -> None:
        # soft_wrap: one line whatever the terminal's width (the terminal may still fold it)
        self.err.print(Text.assemble(("error: ", "bold red"), (message, "red")), soft_wrap=True)


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
