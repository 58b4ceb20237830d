"""The one JSON codec of every result type: dataclasses of numpy arrays <-> plain JSON values.

Encoding walks the dataclass fields in order; decoding reads each field back by its type
hint. Non-finite floats are written as null and read back as NaN. A field's metadata
(`field(metadata=meta(...))`) may say:
- `json`: its key in JSON when it differs from the field name (`cls` is written `class`);
- `dtype`: the numpy dtype of its arrays (float32 unless told; nested lists and dicts too);
- `omit_none`: leave the key out when the value is None (something not recorded), so that
  a document without it reads back the same;
- `was`: the key an older schema wrote it under, read when the current key is absent; for
  a `spread` field, a dict from each entry's former key to its key (the same rule);
- `spread`: a dict field whose items sit at the level of the other fields (a document's
  keys that no other field claims), for entries named by a declaration (lninspect.statistics).
A class that is not a dataclass takes part through `to_fields()` (JSON key -> value) and a
classmethod `from_fields(doc)`: lninspect.results.blocks, whose fields are declared elsewhere.
A result that is a document of its own derives from `Document` (and, holding a list of norms,
from `ByName`).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
import warnings
from functools import cache
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import numpy as np

T = TypeVar("T")
D = TypeVar("D", bound="Document")


class Named(Protocol):
    name: str


N = TypeVar("N", bound=Named)


class Document:
    """A result that is one JSON document, `schema` its first key: `to_json` and `from_json`
    through this codec. Subclasses (dataclasses) declare `schema` and the `SCHEMAS` they read."""

    SCHEMAS: ClassVar[tuple[str, ...]]  # what from_json reads, oldest first
    schema: str

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; arrays become nested lists, non-finite floats null."""
        return to_document(self)

    @classmethod
    def from_json(cls: type[D], doc: dict[str, Any]) -> D:
        """Rebuild a result from `to_json` output (null floats come back as NaN)."""
        return from_document(cls, cls.upgrade(doc), cls.SCHEMAS)

    @classmethod
    def upgrade(cls, doc: dict[str, Any]) -> dict[str, Any]:
        """An older document in the shape of a schema that `SCHEMAS` names (the same here)."""
        return doc


class ByName(Generic[N]):
    """A result holding one entry per norm, `norms`, each found by its `name`."""

    norms: list[N]

    def norm(self, name: str) -> N:
        """The entry of the module called `name` (KeyError if none is)."""
        # built once per list (and again if it grew): a dict, not a scan per call
        built = self.__dict__.get("_by_name")
        if built is None or built[0] is not self.norms or built[1] != len(self.norms):
            first = {n.name: n for n in reversed(self.norms)}  # the first of a repeated name
            built = self.__dict__["_by_name"] = (self.norms, len(self.norms), first)
        return built[2][name]


def meta(
    json: str | None = None,
    dtype: str | None = None,
    omit_none: bool = False,
    was: str | dict[str, str] = "",
    spread: bool = False,
) -> Any:
    """Codec metadata for a dataclass field: `field(metadata=meta(dtype="int64"))`."""
    metadata = {"json": json, "dtype": dtype, "omit_none": omit_none, "was": was, "spread": spread}
    return {k: v for k, v in metadata.items() if v}


PLAIN = (str, int, bool, type(None))  # written as they are


def to_document(result: Any) -> dict[str, Any]:
    """A result as a JSON-ready dict, its `schema` first."""
    return {"schema": result.schema, **encode(result)}


def encode(value: Any) -> Any:
    """Dataclasses, arrays, numpy scalars, lists and dicts to JSON-ready values."""
    kind = type(value)
    if kind is float:  # the leaves first: most values of a document are plain floats
        return value if math.isfinite(value) else None
    if kind in PLAIN:
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        doc = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if f.name == "schema" or (item is None and f.metadata.get("omit_none")):
                continue
            if f.metadata.get("spread"):
                doc.update(encode(item))
                continue
            doc[f.metadata.get("json", f.name)] = encode(item)
        return doc
    if hasattr(value, "to_fields"):
        return {k: encode(v) for k, v in value.to_fields().items()}
    if isinstance(value, np.ndarray):
        return encode(value.tolist())
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def from_document(cls: type[T], doc: dict[str, Any], schemas: tuple[str, ...]) -> T:
    """Read a result of type `cls` from a document whose schema is one of `schemas`."""
    schema = doc.get("schema") if isinstance(doc, dict) else None
    if schema not in schemas:
        raise ValueError(f"not a {' or '.join(schemas)} document: schema {schema!r}")
    return decode(cls, {k: v for k, v in doc.items() if k != "schema"})


def decode(hint: Any, value: Any, dtype: str | None = None) -> Any:
    """`value` (plain JSON) read as type `hint`; arrays get `dtype` (float32 by default)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return None if value is None else decode(inner[0], value, dtype)
    if dataclasses.is_dataclass(hint):
        return _decode_dataclass(hint, _expect(value, dict, "an object"))
    if hasattr(hint, "from_fields"):
        return hint.from_fields(_expect(value, dict, "an object"))
    if origin is list:
        items = _expect(value, list, "a list")
        return [_decode_at(f"[{i}]", args[0], v, dtype) for i, v in enumerate(items)]
    if origin is dict:
        items = _expect(value, dict, "an object").items()
        return {k: _decode_at(str(k), args[1], v, dtype) for k, v in items}
    if hint is np.ndarray:
        return _array(value, dtype or "float32")
    if hint is float:
        if value is None:
            return math.nan
        return _float(_expect(value, (int, float), "a number"))
    if hint is int:
        return _int64(_expect(value, int, "an integer"))
    if hint in SCALARS:
        return _expect(value, hint, SCALARS[hint])
    return value


INT64 = (-(1 << 63), (1 << 63) - 1)  # the integers a document holds (numpy's int64)


def shown_number(value: int | float) -> str:
    """A number as a message shows it: a long integer by its first digits and its length."""
    text = str(value)
    return text if len(text) <= 24 else f"{text[:12]}...({len(text.lstrip('-'))} digits)"


def _int64(value: int) -> int:
    if not INT64[0] <= value <= INT64[1]:
        raise ValueError(f"{shown_number(value)} is outside the 64-bit integers")
    return value


def _float(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:  # an integer of 309 digits or more
        raise ValueError(f"{shown_number(value)} is beyond the largest float") from None


SCALARS: dict[Any, str] = {int: "an integer", str: "a string", bool: "true or false"}


def _expect(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    """`value` if it is of `kind` (a bool is no number here), else a ValueError saying so."""
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    shown = repr(value) if len(repr(value)) <= 40 else f"{type(value).__name__} ..."
    raise ValueError(f"expected {what}, got {shown}")


def _decode_dataclass(cls: Any, doc: dict[str, Any]) -> Any:
    hints = _hints(cls)
    kwargs = {}
    claimed = {
        name
        for f in dataclasses.fields(cls)
        for name in (f.metadata.get("json", f.name), f.metadata.get("was", f.name))
        if isinstance(name, str)  # a spread field's `was` names its entries
    }
    for f in dataclasses.fields(cls):
        if f.metadata.get("spread"):
            rest = _renamed({k: v for k, v in doc.items() if k not in claimed}, f.metadata)
            kwargs[f.name] = decode(hints[f.name], rest, f.metadata.get("dtype"))
            continue
        key = f.metadata.get("json", f.name)
        if key not in doc and f.metadata.get("was") in doc:
            key = f.metadata["was"]
        if key in doc:
            kwargs[f.name] = _decode_at(key, hints[f.name], doc[key], f.metadata.get("dtype"))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"{cls.__name__}: the document has no '{key}'")
    return cls(**kwargs)


def _renamed(entries: dict[str, Any], metadata: Any) -> dict[str, Any]:
    """A spread field's entries under their current keys: a former key (`was`) is read when
    the current one is absent."""
    former = metadata.get("was", {})
    return {former.get(k, k): v for k, v in entries.items() if former.get(k) not in entries}


class FieldError(ValueError):
    """A value of a document that cannot be read, and where it is: `norms[2].layer`."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def _decode_at(part: str, hint: Any, value: Any, dtype: str | None) -> Any:
    """`decode`, its ValueError prefixed with `part` of the path (a key, or [index])."""
    try:
        return decode(hint, value, dtype)
    except FieldError as exc:
        joined = f"{part}{exc.path}" if exc.path.startswith("[") else f"{part}.{exc.path}"
        raise FieldError(joined, exc.reason) from None
    except ValueError as exc:
        raise FieldError(part, str(exc)) from None


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _array(values: Any, dtype: str) -> np.ndarray:
    """Nested lists, with None for non-finite floats, back to an array of `dtype`."""
    try:
        if np.dtype(dtype).kind != "f":
            return np.asarray(values, dtype=dtype)
        arr = np.asarray(values, dtype=object)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr[arr == None] = np.nan  # noqa: E711 (elementwise comparison)
        return arr.astype(dtype)
    except OverflowError:
        raise ValueError(f"a number beyond what {dtype} holds") from None
