"""A tokenizer's chat template rendered under bounds of memory, time and output size.

A chat template is Jinja code that comes with a model. transformers renders it in Jinja's
sandbox, which stops attribute tricks but not `{{ 'x' * 6000000000 }}` (6 GB in one C call)
or two nested `range(100000)` loops (10**10 steps). Bounding that inside Jinja means
intercepting every operator, filter and method that can amplify (`*`, `**`, `%`,
`center`, `indent`, `replace`, ...), and a C call cannot be interrupted at all; so the render
runs in a forked child instead: an address-space limit of MEMORY_MARGIN over what the
process holds, a CPU limit, and a deadline after which the parent kills it. The child runs
the same `apply_chat_template` call on the same tokenizer (no import, ~10 ms to fork), and
sends back the text or the template's error. Without fork (Windows) the render runs in
place, its errors still one sentence.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import time
import warnings
from collections.abc import Callable

from lninspect.errors import LninspectError

MEMORY_MARGIN = 1 << 30  # address space the render may add
SECONDS = 10  # a real template renders in milliseconds
OUTPUT_MARGIN = 1 << 20  # characters a template may add around the text (and twice it)
FAILED = "the tokenizer's chat template cannot be rendered"


def render_bounded(render: Callable[[], str], text_length: int) -> str:
    """`render()` (a chat template applied to a text of `text_length` characters) in a
    child process under the bounds above; its error, or a bound crossed, is LninspectError
    (exit 2) naming the template's error."""
    limit = 2 * text_length + OUTPUT_MARGIN
    if not hasattr(os, "fork"):
        return _checked(_outcome(render, limit))
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():  # Python 3.12 warns of fork in a threaded process
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        _child(render, limit, write_end)
    os.close(write_end)
    try:
        data = _read(read_end, limit)
    finally:
        os.close(read_end)
        _reap(pid)
    if data is None:
        raise LninspectError(f"{FAILED}: it ran longer than {SECONDS} s")
    if not data:
        raise LninspectError(f"{FAILED}: the render died (out of its memory or time)")
    return _checked(json.loads(data))


def _child(render: Callable[[], str], limit: int, write_end: int) -> None:
    """Render under limits, write the outcome as JSON, exit without running any cleanup of
    the parent's (os._exit: no atexit handler, no flush of inherited buffers)."""
    try:
        _limit_resources()
        data = json.dumps(_outcome(render, limit)).encode()
        view = memoryview(data)
        while view:
            view = view[os.write(write_end, view) :]
    finally:
        os._exit(0)


def _limit_resources() -> None:
    """Address space: what the process maps now plus MEMORY_MARGIN (Linux); CPU seconds."""
    try:
        with open("/proc/self/status") as status:
            kib = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
        resource.setrlimit(resource.RLIMIT_AS, (kib * 1024 + MEMORY_MARGIN,) * 2)
    except (OSError, StopIteration, ValueError):
        pass  # no /proc (macOS): the deadline and the output cap still hold
    resource.setrlimit(resource.RLIMIT_CPU, (SECONDS, SECONDS + 1))


def _outcome(render: Callable[[], str], limit: int) -> dict[str, str]:
    """{"text": ...} or {"error": "Type: first line"}."""
    try:
        text = render()
    except MemoryError:
        return {"error": f"MemoryError: it needs more than {MEMORY_MARGIN >> 20} MiB"}
    except Exception as exc:  # the template's own error (TemplateSyntaxError, ...)
        line = next(iter(str(exc).strip().splitlines()), "")
        return {"error": f"{type(exc).__name__}: {line[:200]}"}
    if len(text) > limit:
        return {"error": f"it renders {len(text):,} characters, more than {limit:,}"}
    return {"text": text}


def _checked(outcome: dict[str, str]) -> str:
    if "error" in outcome:
        raise LninspectError(f"{FAILED}: {outcome['error']}")
    return outcome["text"]


def _read(fd: int, limit: int) -> bytes | None:
    """What the child writes until it closes the pipe; None past the deadline."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + SECONDS + 2
    while (left := deadline - time.monotonic()) > 0:
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    return None


def _reap(pid: int) -> None:
    """Kill the child if it still runs, and wait for it (no zombie)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)
