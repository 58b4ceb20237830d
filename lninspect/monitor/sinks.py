"""Where a watched run's records go: the JSONL log, TensorBoard, an active wandb run.

The log is append-only: each record is one line, written with one `os.write` on a file
opened with O_APPEND and then `os.fsync`ed, so a crash loses at most the line being
written (lninspect.results.watch.read_log skips such a partial last line). The fsync runs
in a thread of its own, off the training step (it took 1-16 ms on the development
machine's disk); the next line, and `close`, wait for it first, so syncs stay in order and
a failed one is reported there. TensorBoard
(`torch.utils.tensorboard`, which needs the `tensorboard` package) and Weights & Biases are
used when installed (and, for wandb, when a run is active); neither is a dependency.
"""

from __future__ import annotations

import fcntl
import importlib
import logging
import math
import os
import stat
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from lninspect.errors import EXIT_RUNTIME, LninspectError
from lninspect.files import dump_json
from lninspect.results.watch import LOG_NAME, WatchRecord

log = logging.getLogger("lninspect")

PREFIX = "lninspect"


class Sink(Protocol):
    def write(self, record: WatchRecord) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """Appends one line per record to `log_dir/lninspect-watch.jsonl`, synced to disk."""

    def __init__(self, log_dir: Path, resume: bool) -> None:
        self.path = log_dir / LOG_NAME
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LninspectError(f"cannot create log_dir '{log_dir}': {exc.strerror}") from exc
        if self.path.is_symlink() or (
            self.path.exists() and not stat.S_ISREG(os.stat(self.path).st_mode)
        ):
            raise LninspectError(f"'{self.path}' exists and is not a regular file")
        self.fd = self._open(resume)
        self.syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lninspect-fsync")
        self.sync: Future[None] | None = None

    def _open(self, resume: bool) -> int:
        """The log opened for appending, and locked (flock) for as long as it is open: a new
        log is created exclusively (O_EXCL), so of two watchers starting on the same new
        log one is refused; a log being written is refused to another, resuming or not."""
        exists = (
            f"'{self.path}' already exists: pass resume=True to append to it, "
            "or choose another log_dir"
        )
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | (0 if resume else os.O_EXCL)
        try:
            fd = os.open(self.path, flags, 0o666)
        except FileExistsError:
            raise LninspectError(exists) from None
        except OSError as exc:
            raise LninspectError(f"cannot open '{self.path}': {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _cut_torn_line(fd, self.path)
        except BlockingIOError:
            os.close(fd)
            raise LninspectError(
                f"'{self.path}' is being written by another watcher (it holds the log's "
                "lock): choose another log_dir"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise LninspectError(f"cannot open '{self.path}': {exc.strerror}") from exc
        return fd

    def write(self, record: WatchRecord) -> None:
        data = (dump_json(record.to_json()) + "\n").encode("utf-8")
        size = os.fstat(self.fd).st_size
        try:
            self._wait()
            written = os.write(self.fd, data)
            while written < len(data):  # only a full disk or a signal makes a write short
                written += os.write(self.fd, data[written:])
            self.sync = self.syncer.submit(os.fsync, self.fd)
        except OSError as exc:
            try:
                os.ftruncate(self.fd, size)  # no half-written line (a full disk)
            except OSError:
                pass
            raise LninspectError(
                f"cannot write to '{self.path}': {exc.strerror}", EXIT_RUNTIME
            ) from exc

    def _wait(self) -> None:
        """Wait for the last line's fsync; its OSError, if any, is raised here."""
        sync, self.sync = self.sync, None
        if sync is not None:
            sync.result()

    def close(self) -> None:
        if self.fd < 0:
            return
        try:
            self._wait()
        except OSError as exc:
            raise LninspectError(
                f"cannot write to '{self.path}': {exc.strerror}", EXIT_RUNTIME
            ) from exc
        finally:
            self.syncer.shutdown()
            os.close(self.fd)
            self.fd = -1


def _cut_torn_line(fd: int, path: Path) -> None:
    """Resuming: cut a last line without its newline (a crash or a full disk mid-write),
    and say so, so that the lines appended after it stay readable."""
    size = os.fstat(fd).st_size
    end = size
    if not size:
        return
    while end > 0:
        start = max(end - (1 << 16), 0)
        chunk = os.pread(fd, end - start, start)
        if start + len(chunk) == size and chunk.endswith(b"\n"):
            return  # the last line is whole
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            end = start + cut + 1
            break
        end = start
    os.ftruncate(fd, end)
    log.warning(f"'{path}': cut a torn last line ({size - end} bytes) before resuming")


def scalars(record: WatchRecord) -> dict[str, float]:
    """The record's numbers as flat `lninspect/...` scalar names (finite values only)."""
    values = {f"{PREFIX}/loss": record.loss, f"{PREFIX}/lr": record.lr}
    for norm in record.norms:
        for key, quantiles in norm.quantiles.items():  # the medians of the summaries
            values[f"{PREFIX}/{key}/{norm.name}"] = quantiles.q50
        values[f"{PREFIX}/absmax/{norm.name}"] = norm.absmax
    for p in record.params:
        layer = "outside" if p.layer is None else f"layer{p.layer}"
        values[f"{PREFIX}/grad_norm/{layer}.{p.group}"] = p.grad_norm
    return {k: float(v) for k, v in values.items() if math.isfinite(v)}


class TensorBoardSink:
    """The scalars of each record, at global step `record.step`, into log_dir's event files."""

    def __init__(self, log_dir: Path) -> None:
        module = importlib.import_module("torch.utils.tensorboard")
        self.writer = module.SummaryWriter(log_dir=str(log_dir))

    def write(self, record: WatchRecord) -> None:
        for name, value in scalars(record).items():
            self.writer.add_scalar(name, value, global_step=record.step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """The scalars of each record to the active wandb run, against `lninspect/step`."""

    def __init__(self, run: Any) -> None:
        self.run = run
        run.define_metric(f"{PREFIX}/step")
        run.define_metric(f"{PREFIX}/*", step_metric=f"{PREFIX}/step")

    def write(self, record: WatchRecord) -> None:
        self.run.log({f"{PREFIX}/step": record.step, **scalars(record)})

    def close(self) -> None:
        pass  # the run belongs to the user


def tensorboard_available() -> bool:
    try:
        importlib.import_module("torch.utils.tensorboard")
    except ImportError:
        return False
    return True


def active_wandb_run() -> Any | None:
    """wandb's active run, or None (wandb not installed, or no run started)."""
    try:
        wandb = importlib.import_module("wandb")
    except ImportError:
        return None
    return getattr(wandb, "run", None)


def open_sinks(
    log_dir: Path, resume: bool, tensorboard: bool | None, wandb: bool | None
) -> list[Sink]:
    """The JSONL log, and TensorBoard / wandb: None means when available, True requires it."""
    sinks: list[Sink] = [JsonlSink(log_dir, resume)]
    try:
        _add_optional(sinks, log_dir, tensorboard, wandb)
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks


def _add_optional(
    sinks: list[Sink], log_dir: Path, tensorboard: bool | None, wandb: bool | None
) -> None:
    if tensorboard or (tensorboard is None and tensorboard_available()):
        if not tensorboard_available():
            raise LninspectError("tensorboard=True needs the tensorboard package (pip install)")
        sinks.append(TensorBoardSink(log_dir))
    run = active_wandb_run() if wandb is not False else None
    if wandb and run is None:
        raise LninspectError("wandb=True needs wandb installed and a run started (wandb.init)")
    if run is not None:
        sinks.append(WandbSink(run))
