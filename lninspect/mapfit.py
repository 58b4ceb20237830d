"""The fits of a norm's sampled map ŷ(x) (lninspect.hooks.normmap draws the sample): a line
ŷ ≈ βx and Zhu et al. (2025)'s ŷ ≈ A·tanh(αx), least squares in float64 (docs/metrics.md).

For a fixed α the best A is closed form, A = Σ ŷ t / Σ t² with t = tanh(αx), and the
residual is Σ ŷ² - (Σ ŷ t)² / Σ t²; α is searched on a log grid of GRID points over
ALPHA_DECADES decades above 10^-3 / max|x| (where tanh(αx) is a line to 10^-7), in one
array over every k-th pair (COARSE_POINTS of them), then refined over every pair by
golden-section search within BRACKET grid steps of the grid's best.
An α at the grid's lower end means no S: a line fits as well (A·α is then the slope). Errors
are relative RMS: sqrt(Σ residual² / Σ ŷ²). No torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lninspect.results.normmap import NormMap

GRID = 57  # log-spaced α of the coarse search (8 per decade), evaluated at once
ALPHA_DECADES = 7.0  # the grid spans 1e-3 / max|x| .. 1e4 / max|x|
COARSE_POINTS = 512  # the grid brackets α on every k-th pair, at most this many (np.tanh is
# the cost: 57 x 4096 of them took 10 ms a norm)
BRACKET = 2  # grid steps on either side of the grid's best: where the golden section looks
REFINE_STEPS = 60  # golden-section steps at most: the bracket shrinks by 0.618 each
TOLERANCE = 1e-5  # of log10 α: the search stops there (α to 2.3e-5 relative)


@dataclass(frozen=True)
class Fit:
    alpha: float
    amplitude: float
    tanh_error: float
    line_error: float
    slope: float


def fit_map(x: np.ndarray, y: np.ndarray) -> Fit:
    """Both fits of ŷ over x (float64); NaN where the sample is empty or ŷ is all 0."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    energy = float(y @ y)
    top = float(np.abs(x).max()) if x.size else 0.0
    if energy == 0 or top == 0:
        return Fit(math.nan, math.nan, math.nan, math.nan, math.nan)
    slope = float(x @ y) / float(x @ x)
    line = float(((y - slope * x) ** 2).sum())
    alpha = best_alpha(x, y, top)
    amplitude, residual = amplitude_and_residual(x, y, alpha)
    return Fit(
        alpha=alpha,
        amplitude=amplitude,
        tanh_error=math.sqrt(max(residual, 0.0) / energy),
        line_error=math.sqrt(line / energy),
        slope=slope,
    )


def amplitude_and_residual(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[float, float]:
    """The best A for this α and the residual sum of squares of A·tanh(αx)."""
    t = np.tanh(alpha * x)
    tt, yt = float(t @ t), float(y @ t)
    if tt == 0:
        return 0.0, float(y @ y)
    amplitude = yt / tt
    return amplitude, float(((y - amplitude * t) ** 2).sum())


def best_alpha(x: np.ndarray, y: np.ndarray, top: float) -> float:
    """The α of least residual: the grid's best, refined between its neighbours."""
    logs = np.linspace(-3.0, -3.0 + ALPHA_DECADES, GRID) - math.log10(top)
    step = max(1, math.ceil(x.size / COARSE_POINTS))
    xs, ys = x[::step], y[::step]
    t = np.tanh(np.outer(10.0**logs, xs))  # (GRID, pairs / step)
    residuals = float(ys @ ys) - (t @ ys) ** 2 / np.maximum((t * t).sum(1), np.finfo(float).tiny)
    best = int(np.argmin(residuals))
    low, high = logs[max(best - BRACKET, 0)], logs[min(best + BRACKET, GRID - 1)]
    found = _golden(lambda g: amplitude_and_residual(x, y, 10.0**g)[1], float(low), float(high))
    return float(10.0**found)


def _golden(f: Callable[[float], float], low: float, high: float) -> float:
    """The minimum of a unimodal f on [low, high] by golden-section search."""
    ratio = (math.sqrt(5) - 1) / 2
    a, b = low, high
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(REFINE_STEPS):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
        if b - a < TOLERANCE:
            break
    return (a + b) / 2


def norm_map(pairs: dict[str, np.ndarray], tails: int) -> NormMap:
    """The NormMap of the kept pairs (keys finite) of one norm: `tails` slots of the tails'
    stratum first, then the uniform ones (lninspect.hooks.normmap.MapSampler.tensors)."""
    kept = np.isfinite(pairs["keys"])
    order = np.concatenate([np.flatnonzero(kept[:tails]), tails + np.flatnonzero(kept[tails:])])
    take = {k: np.asarray(v)[order] for k, v in pairs.items() if k != "keys"}
    fit = fit_map(take["x"], take["y"])
    return NormMap(
        alpha=fit.alpha,
        amplitude=fit.amplitude,
        tanh_error=fit.tanh_error,
        line_error=fit.line_error,
        slope=fit.slope,
        tails=int(kept[:tails].sum()),
        x=take["x"].astype(np.float32),
        y=take["y"].astype(np.float32),
        token=take["token"].astype(np.int64),
        sequence=take["sequence"].astype(np.int64),
        head=take["head"].astype(np.int64),
        dim=take["dim"].astype(np.int64),
    )
