"""GGUF files built byte by byte for tests: a header of chosen metadata and tensor infos.

Only what a test needs: values are (type, payload) pairs, arrays of fixed-size elements are
written as zeros (or left to a sparse file's hole), counts may lie about what follows.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
FORMATS = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f"}
FORMATS |= {BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}


def string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(data)) + data


def value(kind: int, payload: Any) -> bytes:
    """A typed value: a scalar, a string, or (ARRAY, (element type, count, element bytes))."""
    if kind == STRING:
        return struct.pack("<I", kind) + string(payload)
    if kind == ARRAY:
        element, count, body = payload
        return struct.pack("<IIQ", kind, element, count) + body
    return struct.pack("<I", kind) + struct.pack(FORMATS[kind], payload)


def llama(heads: int = 4, width: int = 64, **extra: tuple[int, Any]) -> dict[str, tuple]:
    """The metadata of a small llama: enough for transformers to build its config."""
    return {
        "general.architecture": (STRING, "llama"),
        "llama.block_count": (U32, 2),
        "llama.embedding_length": (U32, width),
        "llama.attention.head_count": (U32, heads),
        "llama.feed_forward_length": (U32, 128),
        "llama.context_length": (U32, 128),
        "llama.attention.layer_norm_rms_epsilon": (F32, 1e-5),
        **extra,
    }


def header(
    metadata: dict[str, tuple],
    tensors: list[tuple[str, tuple[int, ...], int, int]] = (),  # type: ignore[assignment]
    *,
    version: int = 3,
    counts: tuple[int | None, int | None] = (None, None),
    pad: bool = True,
) -> bytes:
    """Magic, version, counts (the real ones unless `counts` gives others), the pairs, the
    tensor infos (name, dims, ggml type, offset), padded to 32 bytes unless `pad` is False
    (a test then appends tensor infos of its own)."""
    tensor_count = len(tensors) if counts[0] is None else counts[0]
    pair_count = len(metadata) if counts[1] is None else counts[1]
    out = b"GGUF" + struct.pack("<IQQ", version, tensor_count, pair_count)
    for key, (kind, payload) in metadata.items():
        out += string(key) + value(kind, payload)
    for name, dims, ggml_type, offset in tensors:
        out += string(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, ggml_type, offset)
    return out + b"\0" * (-len(out) % 32 if pad else 0)


def write(path: Path, data: bytes, size: int | None = None) -> Path:
    """`data` at `path`, extended to `size` bytes by a hole (a sparse file) when given."""
    with path.open("wb") as handle:
        handle.write(data)
        if size is not None and size > len(data):
            handle.truncate(size)
    return path
