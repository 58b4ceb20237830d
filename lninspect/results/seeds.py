"""A quantity measured once per seed: every seed's value, the mean and a 95% interval.

The interval is Student's t interval for the mean over n seeds,

    mean ± t(0.975, n - 1) · s / sqrt(n),  s the sample standard deviation (n - 1 in it),

the range that holds the mean of the seeds' distribution with 95% confidence if the seeds'
values are roughly normal. With one seed (no spread to estimate) it is NaN. Seeds whose value
is NaN (a training run that diverged before it) are left out, and n counts the others.
Derived quantities (a ratio, a slope) are computed per seed first, then summarized the same
way, so that their interval carries the pairing of the seeds (both placements of a seed share
weights and tokens).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from lninspect.results.codec import meta

CONFIDENCE = 0.95
# t(0.975, df) for df = 1 .. 30 (standard tables); beyond, the Cornish-Fisher expansion.
T_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
Z_975 = 1.959964


def t_quantile(df: int) -> float:
    """t(0.975, df): the factor of the 95% interval's half-width; NaN for df < 1."""
    if df < 1:
        return math.nan
    if df <= len(T_975):
        return T_975[df - 1]
    z = Z_975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass
class OverSeeds:
    """`values` has one row per seed; `mean`, `low`, `high` the shape of a row."""

    values: np.ndarray = field(metadata=meta(dtype="float64"))  # (seeds, ...)
    mean: np.ndarray = field(metadata=meta(dtype="float64"))
    low: np.ndarray = field(metadata=meta(dtype="float64"))  # the 95% interval's ends
    high: np.ndarray = field(metadata=meta(dtype="float64"))

    @classmethod
    def of(cls, values: np.ndarray | list[float] | list[np.ndarray]) -> OverSeeds:
        """Summarize values stacked along axis 0 (one row per seed), NaN rows left out."""
        values = np.asarray(values, dtype=np.float64)
        with warnings.catch_warnings():  # all-NaN columns give NaN, quietly
            warnings.simplefilter("ignore", RuntimeWarning)
            count = np.sum(np.isfinite(values), axis=0)
            mean = np.nanmean(values, axis=0)
            spread = np.nanstd(values, axis=0, ddof=1) if len(values) > 1 else np.nan * mean
            half = np.vectorize(t_quantile, otypes=[float])(count - 1) * spread / np.sqrt(count)
        return cls(values=values, mean=mean, low=mean - half, high=mean + half)

    def at(self, index: int | tuple[int, ...] = ()) -> tuple[float, float, float]:
        """(mean, low, high) at `index` of a row: () for a scalar quantity."""
        return float(self.mean[index]), float(self.low[index]), float(self.high[index])

    @property
    def half_width(self) -> np.ndarray:
        """The interval's half-width (it is symmetric about the mean)."""
        return (self.high - self.low) / 2
