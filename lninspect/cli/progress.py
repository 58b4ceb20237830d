"""Rich progress bars: corpus runs (bytes read of the corpus, tokens and tokens/s) and
training runs (optimizer steps of the whole grid, and what runs now).

On a terminal: a bar on stderr, once a run has lasted `delay` seconds (quick runs print
nothing extra), removed when done. On a pipe or a file (`| tee`, a CI log): a plain line
every `interval` seconds. Neither with --quiet.

The bars are Rich's `Progress` and its columns; what this module adds is what Rich's has
not: the delayed start, and the plain lines where there is no terminal (Rich's progress
draws nothing on a pipe until it stops).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

DELAY_SECONDS = 0.5
PIPE_INTERVAL = 5.0  # seconds between two progress lines on a pipe
Self = TypeVar("Self", bound="_DelayedProgress")


class _DelayedProgress:
    """A transient Rich progress bar that appears only after `delay` seconds, on a terminal."""

    def __init__(
        self,
        console: Console,
        enabled: bool,
        delay: float | None = None,
        interval: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.console = console
        self.enabled = enabled
        self.terminal = console.is_terminal
        # None: the module's settings, read now (a test sets them for a whole command)
        self.delay = DELAY_SECONDS if delay is None else delay
        self.interval = PIPE_INTERVAL if interval is None else interval
        self.clock = clock
        self._started = clock()
        self._last_line: float | None = None  # when the last plain line was written
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self: Self) -> Self:
        self._started = self.clock()
        return self

    def _line(self, text: str, elapsed: float) -> None:
        """On a pipe: `text` as one plain line every `interval` seconds (the first one after
        `interval` seconds: a quick run prints none)."""
        if elapsed - (self._last_line or 0.0) < self.interval:
            return
        self._last_line = elapsed
        seconds = int(elapsed)
        self.console.file.write(f"{text} · {seconds // 60}:{seconds % 60:02d} elapsed\n")
        self.console.file.flush()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def _show(self, columns: tuple[ProgressColumn | str, ...], total: int, **fields: Any) -> None:
        """Start the bar on the first update past the delay, then update it."""
        if self._progress is None:
            self._progress = Progress(*columns, console=self.console, transient=True)
            self._task = self._progress.add_task(total=total, **fields)  # fields before a draw
            self._progress.start()
        assert self._task is not None
        self._progress.update(self._task, total=total, **fields)

    def _due(self) -> float | None:
        """Seconds since the start when the bar may show, else None."""
        elapsed = self.clock() - self._started
        return elapsed if self.enabled and elapsed >= self.delay else None


class CorpusProgress(_DelayedProgress):
    """`with CorpusProgress(console) as progress: ... progress.update(tokens, read, total)`."""

    def __init__(
        self,
        console: Console,
        enabled: bool = True,
        label: str = "corpus",
        delay: float | None = None,
        interval: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        super().__init__(console, enabled, delay, interval, clock)
        self.label = label

    def update(self, tokens: int, bytes_read: int, total_bytes: int) -> None:
        """After each batch: tokens run so far, bytes of the corpus read, bytes in all."""
        elapsed = self._due()
        if elapsed is None:
            return
        if not self.terminal:
            share = bytes_read / total_bytes if total_bytes else 1.0
            rate = tokens / elapsed if elapsed > 0 else 0.0
            self._line(
                f"{self.label}: {share:.0%} of {total_bytes:,} bytes · {tokens:,} tokens · "
                f"{rate:,.0f} tok/s",
                elapsed,
            )
            return
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TextColumn("{task.fields[tokens]:,} tokens · {task.fields[rate]:,.0f} tok/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        self._show(
            columns,
            total_bytes,
            description=self.label,
            completed=bytes_read,
            tokens=tokens,
            rate=tokens / elapsed if elapsed > 0 else 0.0,
        )


class StepProgress(_DelayedProgress):
    """`with StepProgress(console) as progress: ... progress.update(done, total, what)`:
    training steps, or any other `unit` of a long job (the texts of --freeze-scale)."""

    def __init__(
        self,
        console: Console,
        enabled: bool = True,
        delay: float | None = None,
        interval: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
        unit: str = "steps",
    ):
        super().__init__(console, enabled, delay, interval, clock)
        self.unit = unit

    def update(self, done: int, total: int, what: str) -> None:
        """After each unit: units done, units in all, what runs now."""
        elapsed = self._due()
        if elapsed is None:
            return
        if not self.terminal:
            share = done / max(1, total)
            self._line(f"{done:,} of {total:,} {self.unit} ({share:.0%}) · {what}", elapsed)
            return
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(self.unit),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        self._show(columns, total, description=what, completed=done)
