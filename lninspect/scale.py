"""How nonlinear a norm's scale is: the spread of its per-token divisor s over tokens.

A norm is linear in its input except through s (std for LayerNorm, rms for RMSNorm): with
s the same for every token it would be an affine map. Three numbers say how far from that
it is (docs/metrics.md):

- `cv`: the coefficient of variation of s over the tokens, std / mean (population std);
- `cv_rest`: the same over the tokens that are not the first of their sequence;
- `first_ratio`: the median s of the first tokens / the median s of the rest (Heimersheim
  2024's and Baroni et al. 2025's two position classes).

Derived from the per-token s that every result holds: no capture of its own. Pad positions
(NaN) are left out. Per-token arrays are in the module's order; `token_axis` says which axis
holds the tokens where they also hold heads (a q/k norm). No torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class ScaleSpread:
    """The spread of a norm's s over tokens; NaN where there are no tokens to take it over."""

    cv: float  # std / mean of s over every token
    cv_rest: float  # the same without the first token of each sequence
    first_ratio: float  # median s of the first tokens / median s of the rest


def scale_spread(s: np.ndarray, token_axis: int | None = None) -> ScaleSpread:
    """The spread of the per-token divisor `s` (sequences, tokens[, heads]) or (tokens,)."""
    first, rest = split_first(s, token_axis)
    every = np.concatenate([first, rest])
    return ScaleSpread(
        cv=variation(every),
        cv_rest=variation(rest),
        first_ratio=_ratio(_median(first), _median(rest)),
    )


def split_first(s: np.ndarray, token_axis: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The finite values of `s` at the first token of each sequence, and those of the rest,
    as float64 vectors."""
    array = np.asarray(s, dtype=np.float64)
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim == 1:  # (tokens,): one sequence
        array = array[None, :]
    tokens = np.moveaxis(array, token_axis or 1, 1)  # (sequences, tokens, ...)
    first, rest = tokens[:, :1].ravel(), tokens[:, 1:].ravel()
    return first[np.isfinite(first)], rest[np.isfinite(rest)]


def variation(values: np.ndarray) -> float:
    """std / mean of the values (population std); NaN without a value or with mean 0."""
    if values.size == 0:
        return math.nan
    return _ratio(float(values.std()), float(values.mean()))


def _median(values: np.ndarray) -> float:
    return float(np.median(values)) if values.size else math.nan


def _ratio(top: float, bottom: float) -> float:
    if not (math.isfinite(top) and math.isfinite(bottom)) or bottom == 0:
        return math.nan
    return top / bottom
