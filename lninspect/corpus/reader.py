"""A corpus as a stream of token batches: files -> documents -> token ids -> sequences -> batches.

    paths = expand_files(["data/*.txt"])
    reader = CorpusReader(paths, CorpusOptions(lines=True), encode, eos=50256)
    for ids in reader.batches(seq_len=1024, batch_size=8):   # (batch, seq_len) int64
        ...

Documents are the whole of each file, each non-empty line (`lines`), or one field of each
line of a JSONL file (`field`). Their token ids are concatenated, each document followed by
the end-of-text token when there is one, and cut into sequences of `seq_len` tokens; only
the last sequence may be shorter. Everything is a generator: one file (one line, with
`lines` or `field`) is in memory at a time, never the corpus. With several processes,
every one reads and tokenizes the whole stream (cheap next to the forward passes) and keeps
every `world`-th sequence, so that the processes together run exactly the sequences of a
single process. Imports no torch.
"""

from __future__ import annotations

import codecs
import glob
import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from lninspect.errors import LninspectError
from lninspect.options import CorpusOptions, is_pattern

DEFAULT_SEQ_LEN = 1024  # when the model's context is longer or unknown
# Each document is tokenized whole: at most this many characters (about 4M tokens), so that
# a file or line that never ends (/dev/zero) cannot exhaust memory.
MAX_DOCUMENT_CHARS = 16 << 20

Encode = Callable[[str], list[int]]


def expand_files(patterns: Iterable[str]) -> list[Path]:
    """Paths and glob patterns to existing files, each pattern's matches sorted, no repeats."""
    found: dict[Path, None] = {}
    for pattern in patterns:
        if is_pattern(pattern):
            matches = sorted(
                Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file()
            )
            if not matches:
                raise LninspectError(f"files='{pattern}' matches no file")
        else:
            path = Path(pattern)
            if not path.exists():
                raise LninspectError(f"file '{path}' does not exist")
            if path.is_dir():
                raise LninspectError(
                    f"'{path}' is a directory; give files or a glob such as '{path}/*.txt'"
                )
            matches = [path]
        found.update(dict.fromkeys(matches))
    if not found:
        raise LninspectError("no corpus file given: use files=")
    return list(found)


class CorpusReader:
    """Documents, sequences and batches of a corpus; counts what it has read so far."""

    def __init__(
        self,
        paths: list[Path],
        options: CorpusOptions,
        encode: Encode,
        eos: int | None = None,
        vocab_size: int | None = None,
    ) -> None:
        self.paths = paths
        self.options = options
        self.encode = encode
        self.eos = eos
        self.vocab_size = vocab_size
        self.total_bytes = sum(p.stat().st_size for p in paths)
        # of the documents whose tokens have been handed out, the current one in proportion
        # to its tokens handed out (a one-document corpus is not read in full at once)
        self.bytes_read = 0
        self.document_count = 0
        self._settled = 0  # bytes of the documents before the current one
        self._current = 0  # bytes of the current document

    def documents(self) -> Iterator[str]:
        """Every document of every file, in order; line-wise files are read line by line."""
        for path in self.paths:
            if self.options.field is None and not self.options.lines:
                text = _read(path, self.options.encoding)
                self._next_document(path.stat().st_size)
                if text.strip():
                    self.document_count += 1
                    yield text
                continue
            for number, line in _lines(path, self.options.encoding):
                self._next_document(len(line.encode(self.options.encoding, errors="replace")))
                document = (
                    line.rstrip("\r\n")
                    if self.options.field is None
                    else _json_field(path, number, line, self.options.field)
                )
                if document.strip():
                    self.document_count += 1
                    yield document
        self._next_document(0)  # every document handed out: all bytes read

    def _next_document(self, size: int) -> None:
        self._settled += self._current
        self._current, self.bytes_read = size, self._settled

    def _consumed(self, share: float) -> None:
        """`share` of the current document's tokens have been handed out."""
        self.bytes_read = self._settled + round(self._current * min(1.0, share))

    def token_ids(self) -> Iterator[list[int]]:
        """Each document's token ids, followed by the end-of-text token when there is one."""
        for document in self.documents():
            ids = self.encode(document)
            if self.vocab_size is not None and ids and max(ids) >= self.vocab_size:
                raise LninspectError(
                    f"the tokenizer produced id {max(ids)}, outside the "
                    f"model's vocabulary of {self.vocab_size}"
                )
            if self.eos is not None and (not ids or ids[-1] != self.eos):
                ids = ids + [self.eos]
            yield ids

    def sequences(self, seq_len: int) -> Iterator[np.ndarray]:
        """The concatenated token ids cut into sequences of `seq_len` (the last may be shorter)."""
        rest = np.empty(0, dtype=np.int64)  # fewer than seq_len tokens carried over
        for ids in self.token_ids():
            buffer = np.concatenate([rest, np.asarray(ids, dtype=np.int64)])
            full = len(buffer) - len(buffer) % seq_len
            for start in range(0, full, seq_len):
                self._consumed((start + seq_len - len(rest)) / max(1, len(ids)))
                yield buffer[start : start + seq_len]
            rest = buffer[full:]
        self._consumed(1.0)
        if len(rest):
            yield rest

    def batches(
        self, seq_len: int, batch_size: int, rank: int = 0, world: int = 1
    ) -> Iterator[np.ndarray]:
        """This process's sequences, `batch_size` at a time, as (batch, tokens) int64 arrays.

        At most `max_sequences` sequences in all processes together; process `rank` keeps
        sequences rank, rank + world, ... A shorter last sequence comes in a batch of its own.
        """
        stream: Iterator[np.ndarray] = self.sequences(seq_len)
        if self.options.max_sequences is not None:
            stream = itertools.islice(stream, self.options.max_sequences)
        return _batched(itertools.islice(stream, rank, None, world), batch_size)


def _batched(sequences: Iterator[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    """Stack consecutive sequences of one length into batches of at most `batch_size`."""
    batch: list[np.ndarray] = []
    for sequence in sequences:
        if batch and (len(batch) == batch_size or len(sequence) != len(batch[0])):
            yield np.stack(batch)
            batch = []
        batch.append(sequence)
    if batch:
        yield np.stack(batch)


def _read(path: Path, encoding: str) -> str:
    """A whole file as one document, of at most MAX_DOCUMENT_CHARS (a device such as
    /dev/zero never ends)."""
    with _readable(path, encoding), path.open(encoding=_without_bom(encoding)) as handle:
        text = handle.read(MAX_DOCUMENT_CHARS + 1)
    if len(text) > MAX_DOCUMENT_CHARS:
        raise _too_long(f"'{path}'", "give one document per line with lines=True")
    return text


def _lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of a text file, read lazily, each of at most MAX_DOCUMENT_CHARS."""
    with _readable(path, encoding), path.open(encoding=_without_bom(encoding)) as handle:
        number = 0
        while line := handle.readline(MAX_DOCUMENT_CHARS + 1):
            number += 1
            if len(line) > MAX_DOCUMENT_CHARS:
                raise _too_long(f"{path}:{number}", "split it into lines")
            yield number, line


def _too_long(where: str, hint: str) -> LninspectError:
    return LninspectError(
        f"{where}: a document longer than {MAX_DOCUMENT_CHARS:,} characters (each document is "
        f"tokenized whole); {hint}"
    )


def _without_bom(encoding: str) -> str:
    """utf-8 read as utf-8-sig: a byte order mark at the start of a file is not text."""
    try:
        return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    except LookupError:
        return encoding  # reported by _readable


@contextmanager
def _readable(path: Path, encoding: str) -> Iterator[None]:
    """Turn decoding and reading errors into LninspectError."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise LninspectError(
            f"'{path}' is not valid {encoding} text (byte {exc.start}); choose with encoding="
        ) from exc
    except LookupError as exc:
        raise LninspectError(f"unknown encoding '{encoding}'") from exc
    except OSError as exc:
        raise LninspectError(f"cannot read '{path}': {exc.strerror}") from exc


def _json_field(path: Path, number: int, line: str, field: str) -> str:
    """The `field` of one JSONL line's object ("" for a blank line, which is skipped)."""
    if not line.strip():
        return ""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise LninspectError(f"{path}:{number}: not a JSON line ({exc.msg})") from exc
    except RecursionError:
        raise LninspectError(f"{path}:{number}: not a JSON line (nested too deeply)") from None
    except ValueError as exc:  # a number of more digits than Python converts
        raise LninspectError(f"{path}:{number}: not a JSON line ({exc})") from exc
    if not isinstance(record, dict) or field not in record:
        raise LninspectError(f"{path}:{number}: no field '{field}' (choose with field=)")
    value = record[field]
    if not isinstance(value, str):
        raise LninspectError(
            f"{path}:{number}: field '{field}' is {type(value).__name__}, not text"
        )
    return value
