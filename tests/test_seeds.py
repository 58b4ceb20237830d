"""Means and 95% intervals over seeds (lninspect.results.seeds), against the textbook formula."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lninspect.results.seeds import OverSeeds, t_quantile

# t(0.975, df) from published tables, beyond the ones the module stores.
PUBLISHED = {1: 12.706, 2: 4.303, 5: 2.571, 10: 2.228, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


@pytest.mark.parametrize("df, expected", sorted(PUBLISHED.items()))
def test_t_quantile_matches_the_tables(df: int, expected: float):
    assert t_quantile(df) == pytest.approx(expected, abs=1.5e-3)


def test_t_quantile_falls_towards_the_normal_and_is_nan_without_spread():
    values = [t_quantile(df) for df in range(1, 200)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    assert values[-1] == pytest.approx(1.972, abs=1e-3)  # t(0.975, 199)
    assert math.isnan(t_quantile(0))


def test_interval_is_the_t_interval_of_the_mean_per_column():
    values = np.array([[1.0, 10.0], [2.0, 14.0], [4.0, 12.0], [5.0, 20.0]])
    result = OverSeeds.of(values)
    for column in range(2):
        x = values[:, column]
        half = 3.182 * x.std(ddof=1) / math.sqrt(len(x))  # t(0.975, 3)
        assert result.at(column) == pytest.approx((x.mean(), x.mean() - half, x.mean() + half))
    np.testing.assert_allclose(result.half_width, (result.high - result.low) / 2)


def test_nan_seeds_are_left_out_and_one_seed_has_no_interval():
    result = OverSeeds.of([3.0, math.nan, 5.0])
    half = 12.706 * math.sqrt(2.0) / math.sqrt(2)  # two seeds left: s = sqrt(2)
    assert result.at() == pytest.approx((4.0, 4.0 - half, 4.0 + half))
    alone = OverSeeds.of([3.0])
    assert alone.at()[0] == 3.0 and math.isnan(alone.at()[1]) and math.isnan(alone.at()[2])
