"""Rich progress bars: corpus runs (bytes read of the corpus, tokens and tokens/s) and
training runs (optimizer steps of the whole grid, and what runs now).

Shown on stderr only when it is a terminal, not with --quiet, and only once a run has
lasted `delay` seconds, so that quick runs print nothing extra; removed when done.
"""

from __future__ import annotations

import time
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
Self = TypeVar("Self", bound="_DelayedProgress")


class _DelayedProgress:
    """A transient Rich progress bar that appears only after `delay` seconds, on a terminal."""

    def __init__(self, console: Console, enabled: bool, delay: float) -> None:
        self.console = console
        self.enabled = enabled and console.is_terminal
        self.delay = delay
        self._started = time.perf_counter()
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self: Self) -> Self:
        self._started = time.perf_counter()
        return self

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
        elapsed = time.perf_counter() - self._started
        return elapsed if self.enabled and elapsed >= self.delay else None


class CorpusProgress(_DelayedProgress):
    """`with CorpusProgress(console) as progress: ... progress.update(tokens, read, total)`."""

    def __init__(
        self,
        console: Console,
        enabled: bool = True,
        label: str = "corpus",
        delay: float = DELAY_SECONDS,
    ) -> None:
        super().__init__(console, enabled, delay)
        self.label = label

    def update(self, tokens: int, bytes_read: int, total_bytes: int) -> None:
        """After each batch: tokens run so far, bytes of the corpus read, bytes in all."""
        elapsed = self._due()
        if elapsed is None:
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
            rate=tokens / elapsed,
        )


class StepProgress(_DelayedProgress):
    """`with StepProgress(console) as progress: ... progress.update(done, total, what)`."""

    def __init__(self, console: Console, enabled: bool = True, delay: float = DELAY_SECONDS):
        super().__init__(console, enabled, delay)

    def update(self, done: int, total: int, what: str) -> None:
        """After each step: steps done of all runs, steps in all, the run in progress."""
        if self._due() is None:
            return
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("steps"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        self._show(columns, total, description=what, completed=done)
