"""A tokenizer's chat template rendered under bounds of memory, time and output size.

A chat template is Jinja code that comes with a model. transformers renders it in Jinja's
sandbox, which stops attribute tricks but not `{{ 'x' * 6000000000 }}` (6 GB in one C call)
or two nested `range(100000)` loops (10**10 steps). Bounding that inside Jinja means
intercepting every operator, filter and method that can amplify (`*`, `**`, `%`, `center`,
`indent`, `replace`, ...), and a C call cannot be interrupted at all; so the render runs in
a forked child instead: an address-space limit of MEMORY_MARGIN over what the process
holds, a CPU limit per text, and a deadline after which the parent kills it. The child runs
the same `apply_chat_template` call on the same tokenizer (no import), sends back the text
or the template's error, and stays for the next text. Without fork (Windows) the render
runs in place, its errors still one sentence.
"""

from __future__ import annotations

import json
import os
import select
import signal
import struct
import time
import warnings
import weakref
from collections.abc import Callable

from lninspect.errors import LninspectError

MEMORY_MARGIN = 1 << 30  # address space the render may add
SECONDS = 10  # a real template renders in milliseconds
OUTPUT_MARGIN = 1 << 20  # characters a template may add around the text (and twice it)
FAILED = "the tokenizer's chat template cannot be rendered"


class BoundedRenderer:
    """Renders texts through one forked child, kept for the next text (a corpus renders one
    per document: a fork each cost ~140 ms with 512 MB resident, a request ~0.3 ms), and
    replaced after a failure. `render(text)` is the template applied to a text."""

    def __init__(self, render: Callable[[str], str]) -> None:
        self.render = render
        self.worker: tuple[int, int, int] | None = None  # pid, requests, replies
        self.stop: weakref.finalize | None = None

    def __call__(self, text: str) -> str:
        """The rendered text, or LninspectError (exit 2) naming the template's error."""
        limit = 2 * len(text) + OUTPUT_MARGIN
        if not hasattr(os, "fork"):
            return _checked(_outcome(self.render, text, limit))
        if self.worker is None:
            self._start()
        assert self.worker is not None
        try:
            _send(self.worker[1], text.encode("utf-8", "surrogatepass"))
            data = _receive(self.worker[2], limit)
        except BaseException:
            self.close()
            raise
        if data is None or not data:
            self.close()
            why = f"it ran longer than {SECONDS} s" if data is None else "the render died"
            raise LninspectError(f"{FAILED}: {why} (out of its memory or time)")
        return _checked(json.loads(data))

    def _start(self) -> None:
        # Imported here, not first in the child: jinja imports it when a template raises, and
        # an import in a child forked from a threaded process can find the import lock's state
        # torn (KeyError from importlib's _ModuleLock).
        import jinja2.debug  # noqa: F401

        requests, to_child = os.pipe()
        from_child, replies = os.pipe()
        with warnings.catch_warnings():  # Python 3.12 warns of fork in a threaded process
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(to_child)
            os.close(from_child)
            _serve(self.render, requests, replies)
        os.close(requests)
        os.close(replies)
        self.worker = (pid, to_child, from_child)
        self.stop = weakref.finalize(self, _stop, self.worker)

    def close(self) -> None:
        """Kill the child, if any (the next text starts another)."""
        if self.stop is not None:
            self.stop()
        self.worker = self.stop = None


def _serve(render: Callable[[str], str], requests: int, replies: int) -> None:
    """The child: render each request under limits and reply with its outcome as JSON,
    until the parent closes the pipe; exit without any cleanup of the parent's (os._exit:
    no atexit handler, no flush of inherited buffers)."""
    import resource  # Unix only, as fork

    try:
        _limit_memory()
        while (request := _message(requests)) is not None:
            text = request.decode("utf-8", "surrogatepass")
            used = resource.getrusage(resource.RUSAGE_SELF)
            cpu = int(used.ru_utime + used.ru_stime) + SECONDS
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, resource.RLIM_INFINITY))
            outcome = _outcome(render, text, 2 * len(text) + OUTPUT_MARGIN)
            _send(replies, json.dumps(outcome).encode())
    finally:
        os._exit(0)


def _stop(worker: tuple[int, int, int]) -> None:
    pid, requests, replies = worker
    os.close(requests)
    os.close(replies)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)


def _send(fd: int, data: bytes) -> None:
    """One message: its length (8 bytes), then the bytes."""
    view = memoryview(struct.pack("<Q", len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _message(fd: int) -> bytes | None:
    """One message (blocking), or None when the pipe is closed."""
    head = _exactly(fd, 8)
    return None if head is None else _exactly(fd, struct.unpack("<Q", head)[0])


def _exactly(fd: int, count: int) -> bytes | None:
    chunks, left = [], count
    while left:
        chunk = os.read(fd, min(left, 1 << 16))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _limit_memory() -> None:
    """Address space: what the process maps now plus MEMORY_MARGIN (Linux /proc)."""
    import resource

    try:
        with open("/proc/self/status") as status:
            kib = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
        resource.setrlimit(resource.RLIMIT_AS, (kib * 1024 + MEMORY_MARGIN,) * 2)
    except (OSError, StopIteration, ValueError):
        pass  # no /proc (macOS): the deadline and the output cap still hold


def _outcome(render: Callable[[str], str], text: str, limit: int) -> dict[str, str]:
    """{"text": render(text)} or {"error": "Type: first line"}."""
    try:
        text = render(text)
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


def _receive(fd: int, limit: int) -> bytes | None:
    """The child's reply; b"" when it died, None past the deadline (the reply of an
    output of `limit` characters, JSON-escaped, is at most 12 bytes each)."""
    chunks: list[bytes] = []
    want, deadline = 8, time.monotonic() + SECONDS + 2
    while (left := deadline - time.monotonic()) > 0:
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b""
            chunks.append(chunk)
            data = b"".join(chunks)
            if len(data) >= 8:
                want = 8 + min(struct.unpack("<Q", data[:8])[0], 12 * limit + 1024)
            if len(data) >= want:
                return data[8:want]
            chunks = [data]
    return None
