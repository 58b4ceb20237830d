"""Where the text to analyse comes from: --text, --file, or the built-in sample.

A file is streamed: decoded chunk by chunk and read only as far as asked (`max_chars`), so a
huge file costs no more than the part of it that the run can use.
"""

from __future__ import annotations

import codecs
import io
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from lninspect.errors import LninspectError
from lninspect.files import open_input, os_reason

TRAINING_TEXT = Path(__file__).parents[1] / "bundled" / "text" / "python-docs.txt"
DOCUMENT_SEPARATOR = "\n\n<|endoftext|>\n\n"  # between the documents of TRAINING_TEXT
CHUNK_BYTES = 1 << 16  # a file is decoded in chunks of this size, and read no further than needed
MAX_TEXT_CHARS = 64 << 20  # read as one text at most (a stream such as /dev/zero never ends)

# Used when neither --text nor --file is given: plain English prose about the subject.
SAMPLE_TEXT = (
    "Layer normalization rescales every token so that its features have zero mean and unit "
    "variance, then applies a learned gain and bias. In a GPT model it sits before each "
    "attention and feed-forward block, and once more before the output head. The residual "
    "stream grows as it passes through the layers, and the normalization keeps what each "
    "block sees at a steady scale."
)


@dataclass(frozen=True)
class InputText:
    """The text to analyse; `complete` is False when a file was read only in part."""

    text: str
    complete: bool = True


def training_documents() -> list[str]:
    """The documents of the training text shipped in the package (bundled/text/README.md)."""
    text = TRAINING_TEXT.read_text(encoding="utf-8")
    return [d.strip() for d in text.split(DOCUMENT_SEPARATOR) if d.strip()]


def read_text(
    text: str | None, file: Path | None, encoding: str = "utf-8", max_chars: int | None = None
) -> InputText:
    """The text of --text or --file (at most `max_chars` of a file), or SAMPLE_TEXT."""
    if text is not None and file is not None:
        raise LninspectError("give either text= or file=, not both")
    complete = True
    if file is not None:
        text, complete = _read_file(file, encoding, max_chars or MAX_TEXT_CHARS)
        if not complete and max_chars is None:
            raise LninspectError(
                f"'{file}' is longer than {MAX_TEXT_CHARS:,} characters, the most lninspect "
                "reads as one text; give a shorter file"
            )
    elif text is None:
        return InputText(SAMPLE_TEXT)
    _check(text, complete)
    return InputText(text, complete)


def _check(text: str, complete: bool) -> None:
    """Refuse text with nothing to analyse, and NUL characters (a binary or UTF-16 file)."""
    if not text and complete:
        raise LninspectError("the text is empty: give some words with text= or file=")
    if not text.strip() and complete:
        raise LninspectError(
            f"the text is only whitespace ({len(text)} characters): "
            "give some words with text= or file="
        )
    undecodable = next((i for i, c in enumerate(text) if "\udc80" <= c <= "\udcff"), None)
    if undecodable is not None:  # bytes of the command line that are not UTF-8
        raise LninspectError(
            f"the text holds bytes that are not valid UTF-8 (at character {undecodable}): "
            "give it in a file with file= and its encoding="
        )
    if "\0" in text:
        raise LninspectError(
            f"the text holds a NUL character (at character {text.index(chr(0))})"
            ": is it a binary or UTF-16 file? Choose the encoding with encoding="
        )


STDIN = "-"
BOMS = {  # byte order marks of the encodings a utf-8 reading fails on at byte 0 or 1
    b"\xff\xfe\x00\x00": "utf-32",
    b"\x00\x00\xfe\xff": "utf-32",
    b"\xff\xfe": "utf-16",
    b"\xfe\xff": "utf-16",
}


class _Stream:
    """A pipe, a device or stdin: read once, its chunks kept, so that reading it again (the
    check before the model loads, then the run) replays what was read and goes on from there."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.chunks: list[bytes] = []
        self.ended = False

    def read(self) -> Iterator[bytes]:
        """Every chunk from the start; b"" at the end."""
        index = 0
        while True:
            if index < len(self.chunks):
                yield self.chunks[index]
                index += 1
            elif self.ended:
                yield b""
                return
            else:
                chunk = self.handle.read(CHUNK_BYTES)
                if chunk:
                    self.chunks.append(chunk)
                else:
                    self.ended = True


_STREAMS: dict[str, _Stream] = {}


def _chunks(path: Path) -> Iterator[bytes]:
    """The bytes of `path` in chunks, ending with b"": a file read afresh, a stream replayed."""
    if str(path) != STDIN and path.is_file():
        with path.open("rb") as file:
            while chunk := file.read(CHUNK_BYTES):
                yield chunk
        yield b""
        return
    key = STDIN if str(path) == STDIN else os.path.realpath(path)
    known = _STREAMS.get(key)
    if key == STDIN:
        stdin = _stdin()
        if known is None or known.handle is not stdin:
            known = _STREAMS[key] = _Stream(stdin)  # a new stdin (a test runner's)
    elif known is None:
        known = _STREAMS[key] = _Stream(open_input(path))  # a FIFO: said that it may wait
    yield from known.read()


def _stdin() -> BinaryIO:
    """stdin's bytes, or one sentence when the shell closed it (`<&-`)."""
    stream: BinaryIO | None = getattr(sys.stdin, "buffer", None)
    try:
        if stream is None or stream.closed:
            raise ValueError
        os.fstat(stream.fileno())
    except (AttributeError, io.UnsupportedOperation):  # before OSError, its base
        pass  # no descriptor (a test runner's stdin)
    except (OSError, ValueError):
        raise LninspectError("stdin is closed: there is no text to read for file=-") from None
    assert stream is not None
    return stream


def _read_file(path: Path, encoding: str, max_chars: int | None) -> tuple[str, bool]:
    """The first `max_chars` characters of a file (all for None) and whether that is all.

    `-` is stdin; stdin, pipes (`<(...)`) and devices are read once (see _Stream).
    """
    if str(path) != STDIN:
        try:
            os.stat(path)
        except FileNotFoundError:
            raise LninspectError(f"file '{path}' does not exist") from None
        except OSError as exc:  # a symlink loop, no permission to look
            raise LninspectError(f"cannot read '{path}': {os_reason(exc)}") from exc
        if path.is_dir():
            raise LninspectError(f"'{path}' is a directory, not a text file")
    decoder = _decoder(encoding)
    parts: list[str] = []
    chars = offset = 0  # characters decoded, bytes read
    head = b""  # the first bytes, for the hint about byte order marks
    try:
        for chunk in _chunks(path):
            head = head or chunk[:4]
            pending = len(decoder.getstate()[0])  # bytes of a character begun in the last chunk
            try:
                part = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:  # the state is unchanged: decode up to the error
                part = decoder.decode(chunk[: max(exc.start - pending, 0)])
                if max_chars is None or chars + len(part) <= max_chars:
                    raise _not_decodable(
                        path, encoding, offset - pending + exc.start, head
                    ) from exc
                return ("".join(parts) + part)[:max_chars], False  # bad bytes lie beyond
            parts.append(part)
            chars, offset = chars + len(part), offset + len(chunk)
            if not chunk:
                return "".join(parts), True
            if max_chars is not None and chars > max_chars:
                break
    except OSError as exc:
        raise LninspectError(f"cannot read '{path}': {os_reason(exc)}") from exc
    return "".join(parts)[:max_chars], False


def _not_decodable(path: Path, encoding: str, byte: int, head: bytes) -> LninspectError:
    """The decoding error, with the encoding a byte order mark names when the file has one."""
    name = "stdin" if str(path) == STDIN else f"'{path}'"
    marked = next((e for bom, e in BOMS.items() if head.startswith(bom)), None)
    if marked is not None and byte < 4:
        return LninspectError(
            f"{name} is not valid {encoding} text (byte {byte}): it starts with a {marked.upper()} "
            f"byte order mark; use encoding={marked}"
        )
    return LninspectError(
        f"{name} is not valid {encoding} text (byte {byte}); choose the encoding with encoding="
    )


def _decoder(encoding: str) -> codecs.IncrementalDecoder:
    """An incremental decoder of a text encoding (not base64, rot13, ...)."""
    try:
        info = codecs.lookup(encoding)
    except LookupError as exc:
        raise LninspectError(f"unknown encoding '{encoding}'") from exc
    if not getattr(info, "_is_text_encoding", True):
        raise LninspectError(f"'{encoding}' is not a text encoding: use e.g. utf-8 or latin-1")
    if info.name == "utf-8":  # a byte order mark at the start is not text (Notepad writes one)
        info = codecs.lookup("utf-8-sig")
    return info.incrementaldecoder()
