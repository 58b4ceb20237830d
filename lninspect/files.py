"""Writing output files safely: never over a user's file without consent, never half-written."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from lninspect.errors import EXIT_RUNTIME, LninspectError

STDOUT = "-"


def check_target(path: str | None, force: bool) -> None:
    """Refuse, before any work is done, an output file that exists or cannot be written."""
    if path is None or path == STDOUT:
        return
    target = Path(path)
    if target.is_dir():
        raise LninspectError(f"'{path}' is a directory; give a file name for the JSON")
    if target.exists() and not force:
        raise LninspectError(f"'{path}' already exists; use --force to overwrite it")
    parent = target.parent if str(target.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise LninspectError(f"cannot write '{path}': '{parent}' is a file, not a folder")
    if not parent.is_dir():
        raise LninspectError(f"cannot write '{path}': folder '{parent}' does not exist")
    if not os.access(parent, os.W_OK):
        raise LninspectError(f"cannot write '{path}': folder '{parent}' is not writable")


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; an output file is as any other
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def dump_json(doc: dict[str, Any]) -> str:
    """Strict JSON (no NaN literals: results already turned them into null)."""
    return json.dumps(doc, allow_nan=False, ensure_ascii=False)


def write_json(path: str, doc: dict[str, Any]) -> None:
    """`doc` as JSON to `path` (atomically), or to stdout for '-'."""
    text = dump_json(doc)
    if path == STDOUT:
        print(text)
        return
    try:
        write_atomic(Path(path), (text + "\n").encode("utf-8"))
    except OSError as exc:  # after the run: a full disk, a folder gone or made read-only
        raise LninspectError(f"cannot write '{path}': {exc.strerror}", EXIT_RUNTIME) from exc


def check_folder(folder: Path, names: list[str], force: bool) -> None:
    """Refuse, before any work, a folder that is a file or PNGs that exist (unless --force)."""
    if folder.exists() and not folder.is_dir():
        raise LninspectError(f"'{folder}' is a file; give a folder for the figures with --out")
    if folder.is_dir():  # a missing folder is created after the run
        for name in names:
            check_target(str(folder / name), force)


def make_folder(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LninspectError(f"cannot create folder '{folder}': {exc.strerror}") from exc
    return folder


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
