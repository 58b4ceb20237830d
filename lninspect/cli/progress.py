"""Rich progress bars: corpus runs (bytes read of the corpus, tokens and tokens/s) and
training runs (optimizer steps of the whole grid, and what runs now).

Shown on stderr only when it is a terminal, not with --quiet, and only once a run has
lasted `delay` seconds, so that quick runs print nothing extra; removed when done.
"""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

DELAY_SECONDS = 0.5


class CorpusProgress:
    """`with CorpusProgress(console) as progress: ... progress.update(tokens, read, total)`."""

    def __init__(
        self,
        console: Console,
        enabled: bool = True,
        label: str = "corpus",
        delay: float = DELAY_SECONDS,
    ) -> None:
        self.console = console
        self.enabled = enabled and console.is_terminal
        self.label = label
        self.delay = delay
        self._started = time.perf_counter()
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> CorpusProgress:
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

    def update(self, tokens: int, bytes_read: int, total_bytes: int) -> None:
        """After each batch: tokens run so far, bytes of the corpus read, bytes in all."""
        elapsed = time.perf_counter() - self._started
        if not self.enabled or elapsed < self.delay:
            return
        if self._progress is None:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TextColumn("{task.fields[tokens]:,} tokens · {task.fields[rate]:,.0f} tok/s"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._task = self._progress.add_task(self.label, total=total_bytes, tokens=0, rate=0)
            self._progress.start()
        assert self._task is not None
        self._progress.update(
            self._task, completed=bytes_read, tokens=tokens, rate=tokens / elapsed
        )


class StepProgress:
    """`with StepProgress(console) as progress: ... progress.update(done, total, what)`."""

    def __init__(self, console: Console, enabled: bool = True, delay: float = DELAY_SECONDS):
        self.console = console
        self.enabled = enabled and console.is_terminal
        self.delay = delay
        self._started = time.perf_counter()
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> StepProgress:
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

    def update(self, done: int, total: int, what: str) -> None:
        """After each step: steps done of all runs, steps in all, the run in progress."""
        if not self.enabled or time.perf_counter() - self._started < self.delay:
            return
        if self._progress is None:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("steps"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._task = self._progress.add_task(what, total=total)
            self._progress.start()
        assert self._task is not None
        self._progress.update(self._task, completed=done, description=what)
