"""A norm's sampled map ŷ(x) and its fits (--map): drawn by lninspect.hooks.normmap,
fitted by lninspect.mapfit (docs/metrics.md, "The norm's map"). No torch."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lninspect.results.codec import meta


@dataclass
class NormMap:
    """A norm's sampled map and its two fits. Pairs are the tails' stratum first (`tails`
    of them: each token's largest |x|), then the uniform one; `token` is the token's index
    in its sequence (0: the first token), `sequence` counts over every call."""

    alpha: float  # of the tanh fit, per unit of x; NaN without a sample
    amplitude: float  # A of the tanh fit
    tanh_error: float  # relative RMS error of A·tanh(αx)
    line_error: float  # relative RMS error of βx
    slope: float  # β of the line
    tails: int
    x: np.ndarray  # (n,) the norm's input element
    y: np.ndarray  # (n,) ŷ = (x - c) / s, the output before the gain
    token: np.ndarray = field(metadata=meta(dtype="int64"))
    sequence: np.ndarray = field(metadata=meta(dtype="int64"))
    head: np.ndarray = field(metadata=meta(dtype="int64"))  # 0 where the norm has no heads
    dim: np.ndarray = field(metadata=meta(dtype="int64"))
