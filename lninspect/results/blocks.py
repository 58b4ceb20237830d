"""The per-token statistics of one side of a norm (input, output, grad): one array per
declared statistic (lninspect.statistics), read as attributes (`norm.input.std`).

The fields are the declaration's, in its order: a new statistic needs no field here. An
optional statistic that was not recorded, or one newer than the document read
(`Statistic.since`), reads as None and is absent from the JSON. No torch.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import numpy as np

from lninspect.results.codec import decode
from lninspect.statistics import Statistic, on_side

B = TypeVar("B", bound="StatisticBlock")


class StatisticBlock:
    """Arrays of per-token statistics, one per statistic of `SIDE`, by result field."""

    SIDE: ClassVar[str]
    _arrays: dict[str, np.ndarray | None]

    def __init__(self, **arrays: np.ndarray | None) -> None:
        declared = {s.field: s for s in on_side(self.SIDE)}
        unknown = sorted(set(arrays) - set(declared))
        missing = [f for f, s in declared.items() if not s.may_be_absent and arrays.get(f) is None]
        if unknown or missing:
            raise TypeError(f"{type(self).__name__}: unknown {unknown}, missing {missing}")
        self.__dict__["_arrays"] = {f: arrays.get(f) for f in declared}

    def __getattr__(self, name: str) -> np.ndarray:
        """The statistic of field `name` (None for an optional one not recorded)."""
        arrays = self.__dict__.get("_arrays", {})
        if name not in arrays:
            raise AttributeError(f"{type(self).__name__} has no statistic {name!r}")
        value: np.ndarray = arrays[name]
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self._arrays:
            raise AttributeError(f"{type(self).__name__} has no statistic {name!r}")
        self._arrays[name] = value

    def __repr__(self) -> str:
        shapes = {f: None if a is None else a.shape for f, a in self._arrays.items()}
        return f"{type(self).__name__}({shapes})"

    def get(self, name: str) -> np.ndarray | None:
        """The statistic of field `name`, typed as possibly absent (optional statistics)."""
        value: np.ndarray | None = getattr(self, name)
        return value

    def items(self) -> list[tuple[Statistic, np.ndarray | None]]:
        """(declaration, array) of every statistic of the block, in declaration order."""
        return [(s, self._arrays[s.field]) for s in on_side(self.SIDE)]

    @classmethod
    def from_record(cls: type[B], record: dict[str, np.ndarray]) -> B:
        """The block of a gathered record keyed by Statistic.key (absent keys: not recorded)."""
        return cls(**{s.field: record[s.key] for s in on_side(cls.SIDE) if s.key in record})

    def to_fields(self) -> dict[str, Any]:
        """JSON key -> value for the codec; statistics not recorded are left out."""
        return {s.field: a for s, a in self.items() if a is not None}

    @classmethod
    def from_fields(cls: type[B], doc: dict[str, Any]) -> B:
        """The block of a JSON object; a required statistic must be there."""
        arrays = {}
        for s in on_side(cls.SIDE):
            if s.field in doc:
                arrays[s.field] = decode(np.ndarray, doc[s.field], s.dtype)
            elif not s.may_be_absent:
                raise ValueError(f"{cls.__name__}: the document has no '{s.field}'")
        return cls(**arrays)


class InputStats(StatisticBlock):
    """Per-token statistics of a norm's input x over its hidden axis (mean, std, rms, ...)."""

    SIDE = "input"


class OutputStats(StatisticBlock):
    """Per-token statistics of a norm's output y (mean and biased, eps-free std, ...)."""

    SIDE = "output"


class GradStats(StatisticBlock):
    """Per-token gradient norms on both sides of a norm (over its hidden axis)."""

    SIDE = "grad"

    @property
    def scale(self) -> np.ndarray:
        """How much the norm scales the gradient: |dL/dx through it| / |dL/dy|."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.input_norm / self.output_norm
