"""Writing output files safely: never over a user's file without consent, never half-written.

What sits at an output path decides how it is written:

- nothing, or a regular file (with --force): a temporary file beside it, renamed into place;
- a FIFO or a character device (`>(jq .)`, `/dev/stdout`, `/dev/null`): opened and written
  in place, never renamed over, and needing no --force (nothing stored is replaced);
- a symlink: followed, and its target treated as above (the link itself is never replaced);
- anything else (a directory, a socket, a block device): refused before any work.

Inside `all_or_nothing()` the writes of one command are staged and only put in place once
every one of them succeeded, so a full disk leaves none of them. A report folder is written
the same way (lninspect.folders).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from lninspect.errors import EXIT_RUNTIME, LninspectError

STDOUT = "-"
NEW, FILE, STREAM = "new", "file", "stream"  # what an output path holds (output_kind)
TEMPORARY = ".lninspect-"  # the prefix of staged files and folders: short, whatever the name
NAME_MAX = 255  # bytes of one path component where pathconf cannot tell
log = logging.getLogger("lninspect")


def output_kind(path: Path) -> tuple[str, Path]:
    """(NEW, FILE or STREAM, the real path after symlinks); refuse what is none of them."""
    real = Path(os.path.realpath(path))
    try:
        mode = os.stat(path).st_mode  # follows symlinks
    except (FileNotFoundError, NotADirectoryError):  # the parent checks say more
        return NEW, real
    except OSError as exc:  # a symlink loop, a component that is a file, no permission
        raise LninspectError(f"cannot write '{path}': {os_reason(exc)}") from exc
    if stat.S_ISREG(mode):
        return FILE, real
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
        # the path as given: /dev/fd/63 (bash's >(...)) resolves to `pipe:[N]`, not a path
        return STREAM, path
    if stat.S_ISDIR(mode):
        raise LninspectError(f"'{path}' is a directory; give a file name")
    what = "a socket" if stat.S_ISSOCK(mode) else "a block device" if stat.S_ISBLK(mode) else ""
    raise LninspectError(
        f"'{path}' is {what or 'not a regular file'}: lninspect writes only regular files, "
        "pipes and character devices"
    )


def check_target(path: str | None, force: bool) -> None:
    """Refuse, before any work is done, an output file that exists or cannot be written."""
    if path is None:
        return
    if path == STDOUT:
        if not stdout_is_open():
            raise LninspectError("stdout is closed: cannot write the JSON there (json=-)")
        return
    if not path.strip():
        raise LninspectError("the output path is empty: give a file name (or - for stdout)")
    check_name_length(Path(path))
    if Path(path).is_dir():
        raise LninspectError(f"'{path}' is a directory; give a file name")
    kind, real = output_kind(Path(path))
    if kind == STREAM:
        if not os.access(real, os.W_OK):
            raise LninspectError(f"cannot write '{path}': permission denied")
        return
    if kind == FILE and not force:
        raise LninspectError(f"'{path}' already exists; use force=True to overwrite it")
    parent = real.parent
    if parent.exists() and not parent.is_dir():
        raise LninspectError(f"cannot write '{path}': '{parent}' is a file, not a folder")
    if not parent.is_dir():
        raise LninspectError(f"cannot write '{path}': folder '{parent}' does not exist")
    if not os.access(parent, os.W_OK):
        raise LninspectError(f"cannot write '{path}': folder '{parent}' is not writable")


def stdout_is_open() -> bool:
    """Whether stdout can be written: a shell's `>&-` closes file descriptor 1."""
    stream = sys.stdout
    if stream is None or getattr(stream, "closed", False):
        return False
    try:
        descriptor = stream.fileno()
    except (OSError, ValueError, AttributeError):  # no descriptor (a test runner's buffer)
        return True
    try:
        os.fstat(descriptor)
    except OSError:
        return False
    return True


@dataclass
class _Batch:
    """Writes staged by `all_or_nothing`: put in place only when every one succeeded."""

    force: bool
    # what a path holds, the path as given (for messages), where it goes, what goes there:
    staged: list[tuple[str, Path, Path, Path | bytes]] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)  # created for this batch


_BATCH: ContextVar[_Batch | None] = ContextVar("lninspect_output_batch", default=None)


@contextmanager
def all_or_nothing(force: bool) -> Iterator[None]:
    """Stage every write_atomic of the block; put them all in place when it ends without error.

    Without `force` a file that appeared at a target while the run ran is not replaced (the
    run fails with exit 1 instead); on any failure no staged file and no folder made for it
    is left behind.
    """
    batch = _Batch(force)
    token = _BATCH.set(batch)
    done = False
    try:
        yield
        for kind, path, target, what in batch.staged:
            _put(kind, path, target, what, batch.force)
        done = True
    finally:
        _BATCH.reset(token)
        for _, _, _, what in batch.staged:
            if isinstance(what, Path):
                what.unlink(missing_ok=True)
        if not done:
            for folder in reversed(batch.folders):
                remove_if_empty(folder)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path`: in place for a pipe or device, else through a temporary file.

    Inside `all_or_nothing` the write is staged; outside it, it happens now (replacing a
    regular file). A failure is LninspectError, exit 1, with nothing left behind.
    """
    kind, real = output_kind(path)
    batch = _BATCH.get()
    try:
        what = data if kind == STREAM else _temporary(real, data)
        if batch is None:
            _put(kind, path, real, what, True)
        else:
            batch.staged.append((kind, path, real, what))
    except OSError as exc:  # after the run: a full disk, a folder gone or made read-only
        raise LninspectError(f"cannot write '{path}': {os_reason(exc)}", EXIT_RUNTIME) from exc


def _temporary(real: Path, data: bytes) -> Path:
    """`data` in a new file `.lninspect-XXXX.tmp` beside `real` (short, whatever the length of
    its name), with the usual permissions."""
    fd, name = tempfile.mkstemp(dir=real.parent, prefix=TEMPORARY, suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; an output file is as any other
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _put(kind: str, path: Path, target: Path, what: Path | bytes, force: bool) -> None:
    """Put one staged write in place at `target` (`path` after symlinks): write a stream,
    rename (or link) a temporary file. Failures name `path`, never the temporary file."""
    try:
        if isinstance(what, bytes):  # a pipe or a device: written as it is, never renamed over
            with open_stream(target) as handle:
                handle.write(what)
            return
        try:
            if force:
                os.replace(what, target)
            else:
                _link_new(what, target)
        finally:
            what.unlink(missing_ok=True)
    except FileExistsError as exc:
        raise LninspectError(
            f"'{path}' appeared while this run ran; use force=True to overwrite it", EXIT_RUNTIME
        ) from exc
    except OSError as exc:
        raise LninspectError(f"cannot write '{path}': {os_reason(exc)}", EXIT_RUNTIME) from exc


def open_stream(target: Path) -> BinaryIO:
    """Open a pipe or a device for writing; for a FIFO with no reader yet, say so on stderr
    first (the open waits for one; Ctrl-C ends the wait, exit 130)."""
    try:
        descriptor = os.open(target, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno != errno.ENXIO:  # ENXIO: a FIFO that no process reads yet
            raise
        log.warning(f"waiting for a reader of the FIFO '{target}' (Ctrl-C to stop)")
        return open(target, "wb")  # noqa: SIM115 - the caller closes it
    os.set_blocking(descriptor, True)
    return os.fdopen(descriptor, "wb")


def open_input(path: Path) -> BinaryIO:
    """Open a file for reading; for a FIFO, say on stderr first that the open may wait for a
    writer (Ctrl-C ends the wait, exit 130)."""
    try:
        fifo = stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        fifo = False  # the open below says why
    if fifo:
        log.warning(f"reading the FIFO '{path}': waiting for a writer (Ctrl-C to stop)")
    return open(path, "rb")  # noqa: SIM115 - the caller closes it


def os_reason(exc: OSError) -> str:
    """An OSError in words that do not mislead (a symlink loop is not 'does not exist')."""
    if exc.errno == errno.ELOOP:
        return "a symlink loop (a link that points back to itself)"
    if exc.errno == errno.ENAMETOOLONG:
        return "the file name is too long"
    return exc.strerror or str(exc)


def check_name_length(path: Path) -> None:
    """Refuse, before any work, a path with a component longer than its file system takes."""
    limit = NAME_MAX
    try:
        limit = os.pathconf(_existing(path), "PC_NAME_MAX")
    except (OSError, ValueError):
        pass
    for part in path.parts:
        if len(os.fsencode(part)) > limit:
            raise LninspectError(
                f"the name '{part[:40]}...' is {len(os.fsencode(part))} bytes long; the file "
                f"system takes at most {limit}"
            )


def _existing(path: Path) -> Path:
    """The nearest folder of `path` that exists (for pathconf)."""
    absolute = Path(os.path.abspath(path))
    return next((p for p in absolute.parents if p.is_dir()), Path("/"))


def _link_new(tmp: Path, target: Path) -> None:
    """Put `tmp` at `target` only if nothing is there (atomic where hard links exist)."""
    try:
        os.link(tmp, target)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise FileExistsError(errno.EEXIST, "exists", str(target)) from exc
        if target.exists():  # a file system without hard links: check, then rename
            raise FileExistsError(errno.EEXIST, "exists", str(target)) from exc
        os.replace(tmp, target)


def dump_json(doc: dict[str, Any]) -> str:
    """Strict JSON (no NaN literals: results already turned them into null)."""
    return json.dumps(doc, allow_nan=False, ensure_ascii=False)


def write_json(path: str, doc: dict[str, Any]) -> None:
    """`doc` as JSON to `path` (atomically), or to stdout for '-'."""
    text = dump_json(doc)
    if path == STDOUT:
        if not stdout_is_open():
            raise LninspectError("stdout is closed: the JSON could not be written", EXIT_RUNTIME)
        try:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:  # /dev/full
            raise LninspectError(
                f"cannot write the JSON to stdout: {exc.strerror}", EXIT_RUNTIME
            ) from exc
        return
    write_atomic(Path(path), (text + "\n").encode("utf-8"))


def check_folder(folder: Path, names: list[str], force: bool) -> None:
    """Refuse, before any work, a folder that is a file or PNGs that exist (unless --force)."""
    if folder.exists() and not folder.is_dir():
        raise LninspectError(f"'{folder}' is a file; give a folder for the figures with out=")
    if folder.is_dir():  # a missing folder is created after the run
        for name in names:
            check_target(str(folder / name), force)


def make_folder(folder: Path) -> Path:
    """Create `folder` (and its parents); inside all_or_nothing, removed again on failure."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LninspectError(f"cannot create folder '{folder}': {os_reason(exc)}") from exc
    batch = _BATCH.get()
    if batch is not None:
        batch.folders.extend(reversed(missing))  # outermost first; removed innermost first
    return folder


def remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty, or gone
        pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
