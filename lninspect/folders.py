"""A report folder: held by a lock file that names its process, built in a staging folder
inside it, moved into place file by file (the writes themselves are lninspect.files').

The lock is made here, not with the `filelock` package (4.3.2, installed with torch): its
Unix lock is an flock on an empty file that stays in the folder after the run, so a
refusal could not name the run that holds the folder (process and host), and the folder
would keep a file that is not the report's; flock is also unreliable on network file
systems, where the host in our lock tells a living run from a dead one. The guarantees of
docs/errors.md (nothing but regular files replaced, nothing half written) come from the
staging and the renames, which a lock library does not provide either way.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from lninspect.errors import EXIT_RUNTIME, LninspectError
from lninspect.files import (
    STREAM,
    TEMPORARY,
    check_name_length,
    check_target,
    log,
    open_stream,
    os_reason,
    output_kind,
    remove_if_empty,
)

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
                remove_if_empty(path)
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
