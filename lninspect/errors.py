"""The one exception type for failures a user can cause or fix."""

from __future__ import annotations

# Documented exit codes (docs/errors.md).
EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of stdout closed it, as `yes | head` ends
EXIT_TERMINATED = 143  # 128 + SIGTERM


class LninspectError(Exception):
    """A failure shown to the user as one red line, with an exit code.

    `exit_code` is EXIT_USAGE for bad input or options (a model that cannot be found,
    unreadable text) and EXIT_RUNTIME for failures while running. The message names what
    the caller passed as Python does: `max_tokens=0`, `force=True`, or `stride=` for the
    parameter alone; the CLI shows the flags instead (lninspect/cli/flags.py).
    """

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that `finally` blocks clean up (the CLI's)."""
