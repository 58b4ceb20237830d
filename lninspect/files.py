"""Writing output files safely: never over a user's file without consent, never half-written.

What sits at an output path decides how it is written:

- nothing, or a regular file (with --force): a temporary file beside it, renamed into place;
- a FIFO or a character device (`>(jq .)`, `/dev/stdout`, `/dev/null`): opened and written
  in place, never renamed over, and needing no --force (nothing stored is replaced);
- a symlink: followed, and its target treated as above (the link itself is never replaced);
- anything else (a directory, a socket, a block device): refused before any work.

Inside `all_or_nothing()` the writes of one command are staged and only put in place once
every one of them succeeded, so a full disk leaves none of them. A report folder is written
the same way (`claim_folder`, `write_folder`): held by a lock file that names its process,
built in a staging folder inside it, moved into place file by file.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import socket
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
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
                _remove_if_empty(folder)


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


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty, or gone
        pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# A report folder: held by a lock, written through a staging folder ---------------------------

LOCK = ".lninspect.lock"  # in a report folder while a run writes it: "PID HOST"


def _lock_owner(lock: Path) -> tuple[int, str] | None:
    """(PID, host) written in a lock file, or None when it names none (empty, damaged)."""
    try:
        pid, host = lock.read_text(encoding="utf-8", errors="replace").split()
        return int(pid), host
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _check_lock(folder: Path, force: bool) -> None:
    """Refuse a folder another run holds; clear the lock and staging of one that was killed
    (its process gone from this host), and with --force a lock that names no process."""
    lock = folder / LOCK
    if not lock.exists():
        return
    owner = _lock_owner(lock)
    here = socket.gethostname()
    if owner is not None and (owner[1] != here or _alive(owner[0])):
        raise LninspectError(
            f"folder '{folder}' is being written by another lninspect run (process {owner[0]} "
            f"on {owner[1]}, {LOCK}); wait for it to end"
            + ("" if owner[1] == here else ", or delete the lock if no run is writing there")
        )
    if owner is None and not force:
        raise LninspectError(
            f"folder '{folder}' holds a lock ({LOCK}) that names no process, left by an "
            "earlier version or a killed run; use force=True to take the folder over"
        )
    what = "a lock that names no process" if owner is None else f"process {owner[0]} is gone"
    log.warning(f"'{folder}': clearing a stale lock and staging files ({what})")
    _clear_stale(folder)


def _clear_stale(folder: Path) -> None:
    """Remove the lock and the staging folders and files of a killed run."""
    for path in folder.iterdir():
        if path.name.startswith(TEMPORARY) and not path.is_symlink():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    (folder / LOCK).unlink(missing_ok=True)


def check_report_folder(folder: Path, names: Sequence[str], force: bool) -> None:
    """Refuse, before any work: a file, a non-empty folder (without --force), no write access,
    a folder another run holds; `names` are the files --force may replace."""
    check_name_length(folder)
    try:
        os.stat(folder)
    except FileNotFoundError:
        pass
    except OSError as exc:  # a symlink loop, no permission to look
        raise LninspectError(f"cannot write the report into '{folder}': {os_reason(exc)}") from exc
    if folder.exists() and not folder.is_dir():
        raise LninspectError(f"'{folder}' is a file; give a folder for the report with out=")
    if folder.is_dir():
        _check_lock(folder, force)
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise LninspectError(
            f"folder '{folder}' is not empty; use force=True to write the report "
            "into it (files of the same names are replaced)"
        )
    if folder.is_dir():  # what --force would replace must be a file, a link to one, or a pipe
        for name in names:
            check_target(str(folder / name), force=True)
    existing = next(p for p in (folder.absolute(), *folder.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise LninspectError(f"cannot create folder '{folder}': '{existing}' is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LninspectError(f"cannot write the report: folder '{existing}' is not writable")


@contextmanager
def claim_folder(folder: Path, names: Sequence[str], force: bool) -> Iterator[Path]:
    """Check `folder`, then hold it for this run: created if missing, with a lock file inside
    that names this process and host.

    A second run into the same folder is refused (--force does not take a folder a living
    run holds); a failed run removes the folders it created.
    """
    check_report_folder(folder, names, force)
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(folder / LOCK, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError as exc:
        raise LninspectError(
            f"folder '{folder}' is being written by another lninspect run ({LOCK} is there)"
        ) from exc
    except OSError as exc:
        raise LninspectError(f"cannot create folder '{folder}': {os_reason(exc)}") from exc
    try:
        os.write(descriptor, f"{os.getpid()} {socket.gethostname()}\n".encode())
    finally:
        os.close(descriptor)
    try:
        yield folder
    finally:
        (folder / LOCK).unlink(missing_ok=True)
        for path in created:  # innermost first; only the empty ones (a failed run)
            try:
                path.rmdir()
            except OSError:
                break


def write_folder(
    folder: Path, build: Callable[[Path], list[str]], ours: Callable[[str], bool]
) -> list[Path]:
    """Build a report in a staging folder inside `folder`, then move its files into place.

    `build(staging)` writes the files and returns their names in the order they move (the
    page last, so that a folder with an index.html is complete). Files in `folder` that
    `ours(name)` claims and this run did not write are removed first; nothing else is
    touched. An interrupted run leaves no half-written file, and no folder it created.
    """
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder, prefix=TEMPORARY, suffix=".tmp"))
    except OSError as exc:
        raise _report_error(folder, exc) from exc
    done = False
    try:
        names = build(staging)
        _remove_stale(folder, names, ours)
        for name in names:
            _move(staging / name, folder / name)
        done = True
    except OSError as exc:
        raise _report_error(folder, exc) from exc
    except LninspectError as exc:  # a figure's write_atomic names its path in the staging
        if not isinstance(exc.__cause__, OSError):
            raise
        raise _report_error(folder, exc.__cause__) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not done:
            for path in created:  # innermost first
                _remove_if_empty(path)
    return [folder / name for name in names]


def _report_error(folder: Path, exc: OSError) -> LninspectError:
    """A failure while the report was built or moved, naming the folder."""
    return LninspectError(
        f"cannot write the report into '{folder}': {os_reason(exc)}", EXIT_RUNTIME
    )


def _move(staged: Path, target: Path) -> None:
    """Rename a staged file over `target` (or its symlink's target); write a pipe in place."""
    kind, real = output_kind(target)
    if kind == STREAM:
        with open_stream(real) as handle:
            handle.write(staged.read_bytes())
    else:
        os.replace(staged, real)


def _remove_stale(folder: Path, written: list[str], ours: Callable[[str], bool]) -> None:
    """Remove regular files of report names (this version's or an earlier one's) that this
    run does not write, so that a report folder never mixes two runs."""
    for path in folder.iterdir():
        if ours(path.name) and path.name not in written and path.is_file():
            if not path.is_symlink():
                path.unlink()
