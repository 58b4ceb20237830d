"""Where the text to analyse comes from: --text, --file, or the built-in sample."""
from __future__ import annotations

from pathlib import Path

from lninspect.errors import LninspectError

# Used when neither --text nor --file is given: plain English prose about the subject.
SAMPLE_TEXT = (
    "Layer normalization rescales every token so that its features have zero mean and unit "
    "variance, then applies a learned gain and bias. In a GPT model it sits before each "
    "attention and feed-forward block, and once more before the output head. The residual "
    "stream grows as it passes through the layers, and the normalization keeps what each "
    "block sees at a steady scale."
)


def read_text(text: str | None, file: Path | None, encoding: str = "utf-8") -> str:
    """The text given on the command line or in a file, or SAMPLE_TEXT when neither is."""
    if text is not None and file is not None:
        raise LninspectError("give either --text or --file, not both")
    if file is not None:
        text = _read_file(file, encoding)
    elif text is None:
        return SAMPLE_TEXT
    if not text.strip():
        raise LninspectError("the text is empty: give some words with --text or --file")
    return text


def _read_file(path: Path, encoding: str) -> str:
    if not path.exists():
        raise LninspectError(f"file '{path}' does not exist")
    if path.is_dir():
        raise LninspectError(f"'{path}' is a directory, not a text file")
    try:
        return path.read_text(encoding=encoding)
    except UnicodeDecodeError as exc:
        raise LninspectError(
            f"'{path}' is not valid {encoding} text (byte {exc.start}); choose with --encoding"
        ) from exc
    except LookupError as exc:
        raise LninspectError(f"unknown encoding '{encoding}'") from exc
    except OSError as exc:
        raise LninspectError(f"cannot read '{path}': {exc.strerror}") from exc
