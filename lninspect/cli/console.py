"""Where output goes: tables to stdout, notes and errors to stderr, one object for all."""

from __future__ import annotations

from rich.console import Console, RenderableType
from rich.text import Text


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
