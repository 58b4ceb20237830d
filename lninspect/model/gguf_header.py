"""A GGUF file's header walked once, bounded, before transformers reads it (no torch).

transformers reads a GGUF's config through `gguf.GGUFReader`, which builds Python objects
per metadata array element: a 2.1 MB file with a 2,000,000-element u8 array took 1.84 GB
and 120 s, a sparse 100 MB one 3.3 GB for minutes; a count of 2**40 or a truncated file
ended in `unpack_from requires a buffer ...`. This pass reads the file through a memory
map: arrays of fixed-size elements are stepped over, string arrays read for their lengths
and UTF-8 only; each count is checked against the limits below and against the file's
size before it is used, so a hostile header costs milliseconds and no memory.

The limits leave a wide margin over real files: Gemma 3's vocabulary arrays hold 262,144
entries each (786,432 in all), Llama 3's merges 280,147; a chat template is a few kB.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lninspect.errors import LninspectError

MAX_PAIRS = 65_536  # metadata key/value pairs (real files: 20-60)
MAX_TENSORS = 65_536  # tensor infos (a 405B model: ~1,100)
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ARRAY = 1 << 20  # elements of one metadata array (4x a 262k vocabulary)
MAX_ELEMENTS = 1 << 21  # elements of all metadata arrays together
MAX_STRING = 4 << 20  # bytes of one string (a chat template: a few kB)
MAX_METADATA_BYTES = 64 << 20  # bytes of all metadata (Gemma 3: ~6 MB)
VERSIONS = (2, 3)  # v1 counted in 32 bits; transformers reads 2 and 3

# value type -> struct format of the fixed-size types (8: string, 9: array)
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q"}
SCALARS |= {12: "d"}
STRING, ARRAY = 8, 9


@dataclass
class GgufHeader:
    """What the walk keeps: scalar and string values by key, array lengths by key."""

    version: int
    tensor_count: int
    values: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, int] = field(default_factory=dict)


class _Reader:
    """A cursor over the mapped file; every read checked against its end first."""

    def __init__(self, blob: mmap.mmap, name: str) -> None:
        self.blob, self.name, self.pos, self.size = blob, name, 0, len(blob)
        self.elements = 0  # metadata array elements so far

    def refuse(self, why: str) -> LninspectError:
        return LninspectError(f"GGUF file '{self.name}': {why}")

    def skip(self, count: int, what: str) -> int:
        """Step over `count` bytes of `what`; the offset where they start."""
        start = self.pos
        if count > self.size - start:
            raise self.refuse(
                f"truncated: {what} needs {count:,} bytes at byte {start:,}, but the file "
                f"ends at byte {self.size:,}"
            )
        self.pos += count
        return start

    def unpack(self, fmt: str, what: str) -> Any:
        """One value of struct format `fmt` (little-endian)."""
        start = self.skip(struct.calcsize("<" + fmt), what)
        return struct.unpack_from("<" + fmt, self.blob, start)[0]

    def string(self, what: str, limit: int = MAX_STRING) -> str:
        """A GGUF string (u64 length, UTF-8 bytes) of at most `limit` bytes."""
        length = self.unpack("Q", what)
        if length > limit:
            raise self.refuse(f"{what} is a string of {length:,} bytes, more than {limit:,}")
        start = self.skip(length, what)
        try:
            return str(self.blob[start : self.pos], "utf-8")
        except UnicodeDecodeError as exc:
            raise self.refuse(f"{what} is not valid UTF-8 (byte {start + exc.start:,})") from None


def read_header(path: str | Path, name: str | None = None) -> GgufHeader:
    """Walk the header of the GGUF file at `path` (`name`: as messages call it), or refuse
    it (LninspectError, exit 2) with the field and the number at fault."""
    name = str(path) if name is None else name
    try:
        with open(path, "rb") as handle:
            if not handle.seek(0, 2):
                raise LninspectError(f"GGUF file '{name}': the file is empty")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as blob:
                return _walk(_Reader(blob, name))
    except OSError as exc:
        raise LninspectError(f"cannot read GGUF file '{name}': {exc.strerror}") from exc


def _walk(reader: _Reader) -> GgufHeader:
    """Magic, version, counts, the metadata pairs, the tensor infos."""
    magic = bytes(reader.blob[:4])
    if magic != b"GGUF":
        raise reader.refuse(f"not a GGUF file (it starts with {magic!r}, not b'GGUF')")
    reader.pos = 4
    version = reader.unpack("I", "the version")
    if version not in VERSIONS:
        raise reader.refuse(f"it is version {version}; lninspect reads GGUF versions 2 and 3")
    tensors = _count(reader, "tensors", MAX_TENSORS)
    header = GgufHeader(version, tensors)
    for index in range(_count(reader, "metadata pairs", MAX_PAIRS)):
        key = reader.string(f"the key of metadata pair {index}", limit=65_535)
        _read_value(reader, header, key)
        if reader.pos > MAX_METADATA_BYTES:
            raise reader.refuse(
                f"its metadata runs past {MAX_METADATA_BYTES >> 20} MiB (at metadata field '{key}')"
            )
    alignment = header.values.get("general.alignment", 32)
    if not (isinstance(alignment, int) and 0 < alignment <= 1 << 16 and alignment.bit_count() == 1):
        raise reader.refuse(
            f"metadata field 'general.alignment' is {alignment!r}, not a power of 2"
        )
    _check_tensors(reader, tensors, alignment)
    return header


def _count(reader: _Reader, what: str, limit: int) -> int:
    count: int = reader.unpack("Q", f"the number of {what}")
    if count > limit:
        raise reader.refuse(
            f"it declares {count:,} {what}, more than the {limit:,} lninspect reads"
        )
    return count


def _read_value(reader: _Reader, header: GgufHeader, key: str) -> None:
    """One typed value: scalars and strings kept, arrays stepped over and counted."""
    kind = reader.unpack("I", f"the type of metadata field '{key}'")
    if kind in SCALARS:
        header.values[key] = reader.unpack(SCALARS[kind], f"metadata field '{key}'")
    elif kind == STRING:
        header.values[key] = reader.string(f"metadata field '{key}'")
    elif kind == ARRAY:
        header.arrays[key] = _skip_array(reader, key)
    else:
        raise reader.refuse(
            f"metadata field '{key}' has value type {kind}, which GGUF does not define"
        )


def _skip_array(reader: _Reader, key: str) -> int:
    """Step over an array, its element count checked first; the count."""
    kind = reader.unpack("I", f"the element type of metadata field '{key}'")
    count: int = reader.unpack("Q", f"the length of metadata field '{key}'")
    if count > MAX_ARRAY:
        raise reader.refuse(
            f"metadata field '{key}' is an array of {count:,} elements, more than the "
            f"{MAX_ARRAY:,} lninspect reads"
        )
    reader.elements += count
    if reader.elements > MAX_ELEMENTS:
        raise reader.refuse(
            f"its metadata arrays hold more than {MAX_ELEMENTS:,} elements in all (at "
            f"metadata field '{key}', {count:,})"
        )
    if kind in SCALARS:
        reader.skip(count * struct.calcsize("<" + SCALARS[kind]), f"metadata field '{key}'")
    elif kind == STRING:
        _skip_strings(reader, key, count)
    else:  # nested arrays: no model writes them, and transformers does not read them
        raise reader.refuse(f"metadata field '{key}' is an array of value type {kind}, not read")
    return count


def _skip_strings(reader: _Reader, key: str, count: int) -> None:
    """Step over `count` strings: their lengths walked in a tight loop (a vocabulary holds
    262,144), then the whole stretch decoded as UTF-8 at once, the length prefixes of 128
    and more zeroed (smaller ones are ASCII); only when that fails is each string decoded,
    to name the bad one."""
    blob, pos, size, length_of = reader.blob, reader.pos, reader.size, struct.Struct("<Q")
    start, long = pos, []
    for index in range(count):
        length = length_of.unpack_from(blob, pos)[0] if pos + 8 <= size else -1
        if not 0 <= length <= MAX_STRING or length > size - pos - 8:
            reader.pos = pos
            reader.string(f"metadata field '{key}' element {index}")  # raises: says what is wrong
        if length >= 128:
            long.append(pos - start)
        pos += 8 + length
    if pos > MAX_METADATA_BYTES:
        raise reader.refuse(
            f"its metadata runs past {MAX_METADATA_BYTES >> 20} MiB (at metadata field '{key}')"
        )
    stretch = bytearray(blob[start:pos])
    for at in long:
        stretch[at : at + 8] = bytes(8)
    try:
        str(stretch, "utf-8")
    except UnicodeDecodeError:
        reader.pos = start
        for index in range(count):
            reader.string(f"metadata field '{key}' element {index}")
    reader.pos = pos


def _check_tensors(reader: _Reader, count: int, alignment: int) -> None:
    """Each tensor info: a name, at most MAX_DIMS positive dims, a known type, and data that
    lies inside the file."""
    infos = [_tensor_info(reader, index) for index in range(count)]
    data_start = -(-reader.pos // alignment) * alignment
    sizes = _type_sizes()
    for tensor, dims, ggml_type, offset in infos:
        if sizes is None:
            break
        if ggml_type not in sizes:
            raise reader.refuse(
                f"tensor '{tensor}' has ggml type {ggml_type}, not one GGUF defines"
            )
        block, block_bytes = sizes[ggml_type]
        end = data_start + offset + -(-math.prod(dims) // block) * block_bytes
        if end > reader.size:
            raise reader.refuse(
                f"truncated: tensor '{tensor}' ({'x'.join(map(str, dims))}) ends at byte "
                f"{end:,}, but the file ends at byte {reader.size:,}"
            )


def _tensor_info(reader: _Reader, index: int) -> tuple[str, tuple[int, ...], int, int]:
    tensor = reader.string(f"the name of tensor {index}", limit=65_535)
    ndims = reader.unpack("I", f"the dimension count of tensor '{tensor}'")
    if not 1 <= ndims <= MAX_DIMS:
        raise reader.refuse(f"tensor '{tensor}' has {ndims:,} dimensions, not 1 to {MAX_DIMS}")
    dims = tuple(reader.unpack("Q", f"the shape of tensor '{tensor}'") for _ in range(ndims))
    if not all(1 <= d < 1 << 40 for d in dims):
        raise reader.refuse(f"tensor '{tensor}' has the shape {dims}, not sizes 1 to 2**40")
    ggml_type = reader.unpack("I", f"the type of tensor '{tensor}'")
    return tensor, dims, ggml_type, reader.unpack("Q", f"the offset of tensor '{tensor}'")


def _type_sizes() -> dict[int, tuple[int, int]] | None:
    """ggml type -> (elements, bytes) of a block, from the gguf package (None without it)."""
    try:
        from gguf.constants import GGML_QUANT_SIZES
    except ImportError:
        return None
    return {int(kind): sizes for kind, sizes in GGML_QUANT_SIZES.items()}
