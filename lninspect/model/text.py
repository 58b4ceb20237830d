"""Where the text to analyse comes from: --text, --file, or the built-in sample.

A file is streamed: decoded chunk by chunk and read only as far as asked (`max_chars`), so a
huge file costs no more than the part of it that the run can use.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path

from lninspect.errors import LninspectError

TRAINING_TEXT = Path(__file__).parents[1] / "bundled" / "text" / "python-docs.txt"
DOCUMENT_SEPARATOR = "\n\n<|endoftext|>\n\n"  # between the documents of TRAINING_TEXT
CHUNK_BYTES = 1 << 16  # a file is decoded in chunks of this size, and read no further than needed

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
        raise LninspectError("give either --text or --file, not both")
    complete = True
    if file is not None:
        text, complete = _read_file(file, encoding, max_chars)
    elif text is None:
        return InputText(SAMPLE_TEXT)
    _check(text, complete)
    return InputText(text, complete)


def _check(text: str, complete: bool) -> None:
    """Refuse text with nothing to analyse, and NUL characters (a binary or UTF-16 file)."""
    if not text and complete:
        raise LninspectError("the text is empty: give some words with --text or --file")
    if not text.strip() and complete:
        raise LninspectError(
            f"the text is only whitespace ({len(text)} characters): "
            "give some words with --text or --file"
        )
    if "\0" in text:
        raise LninspectError(
            f"the text holds a NUL character (at character {text.index(chr(0))})"
            ": is it a binary or UTF-16 file? Choose the encoding with --encoding"
        )


def _read_file(path: Path, encoding: str, max_chars: int | None) -> tuple[str, bool]:
    """The first `max_chars` characters of a file (all for None) and whether that is all."""
    if not path.exists():
        raise LninspectError(f"file '{path}' does not exist")
    if path.is_dir():
        raise LninspectError(f"'{path}' is a directory, not a text file")
    decoder = _decoder(encoding)
    parts: list[str] = []
    chars = offset = 0  # characters decoded, bytes read
    try:
        with path.open("rb") as handle:
            while max_chars is None or chars <= max_chars:
                chunk = handle.read(CHUNK_BYTES)
                pending = len(decoder.getstate()[0])  # bytes of a character begun in the last chunk
                try:
                    part = decoder.decode(chunk, final=not chunk)
                except UnicodeDecodeError as exc:  # the state is unchanged: decode up to the error
                    part = decoder.decode(chunk[: max(exc.start - pending, 0)])
                    if max_chars is None or chars + len(part) <= max_chars:
                        raise LninspectError(
                            f"'{path}' is not valid {encoding} text (byte "
                            f"{offset - pending + exc.start}); choose the encoding with "
                            "--encoding"
                        ) from exc
                    return ("".join(parts) + part)[:max_chars], False  # bad bytes lie beyond
                parts.append(part)
                chars, offset = chars + len(part), offset + len(chunk)
                if not chunk:
                    return "".join(parts), True
    except OSError as exc:
        raise LninspectError(f"cannot read '{path}': {exc.strerror}") from exc
    return "".join(parts)[:max_chars], False


def _decoder(encoding: str) -> codecs.IncrementalDecoder:
    """An incremental decoder of a text encoding (not base64, rot13, ...)."""
    try:
        info = codecs.lookup(encoding)
    except LookupError as exc:
        raise LninspectError(f"unknown encoding '{encoding}'") from exc
    if not getattr(info, "_is_text_encoding", True):
        raise LninspectError(f"'{encoding}' is not a text encoding: use e.g. utf-8 or latin-1")
    return info.incrementaldecoder()
