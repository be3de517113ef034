"""Welch's t intervals on samples small enough to check by hand.

Reference quantiles are Student's t table values (t_0.975: df 1 12.7062, df 2 4.3027,
df 4 2.7764, df 8 2.3060, df 30 2.0423) and closed forms (df 1: tan(pi (p - 1/2)); df 2:
(2p - 1) / sqrt(2p (1 - p))).
"""

from __future__ import annotations

import math

import pytest

from oms.sinks.statistics import mean_interval, t_cdf, t_quantile, welch

T_0975 = {1: 12.7062, 2: 4.3027, 4: 2.7764, 8: 2.3060, 30: 2.0423}


@pytest.mark.parametrize(("df", "expected"), sorted(T_0975.items()))
def test_t_quantiles_match_the_table(df: int, expected: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.995])
def test_t_quantiles_match_the_closed_forms(p: float) -> None:
    assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
    assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9)


def test_fractional_degrees_of_freedom_invert_and_lie_between_neighbours() -> None:
    q = t_quantile(0.975, 3.5)
    assert t_cdf(q, 3.5) == pytest.approx(0.975, abs=1e-10)
    assert t_quantile(0.975, 4) < q < t_quantile(0.975, 3)
    assert t_quantile(0.025, 3.5) == pytest.approx(-q)
    # Many degrees of freedom: the normal quantile.
    assert t_quantile(0.975, 1e7) == pytest.approx(1.959964, abs=1e-5)


def test_mean_interval_by_hand() -> None:
    # mean 3, sample variance 2.5, se sqrt(2.5 / 5), t(0.975, 4) = 2.7764
    est = mean_interval([1, 2, 3, 4, 5])
    half = 2.776445 * math.sqrt(0.5)
    assert (est.n, est.mean) == (5, 3.0)
    assert est.low == pytest.approx(3 - half, abs=1e-5)
    assert est.high == pytest.approx(3 + half, abs=1e-5)


def test_a_single_value_or_none_has_no_interval() -> None:
    assert mean_interval([]).mean is None
    one = mean_interval([4.0])
    assert (one.n, one.mean, one.low, one.high) == (1, 4.0, None, None)
    assert welch([1.0], [2.0, 3.0]).significant is None
    assert welch([1.0], [2.0, 3.0]).verdict == "too few values"


def test_a_clear_difference_is_significant() -> None:
    # diff 5, se sqrt(2.5/5 + 2.5/5) = 1, df = 1 / (0.5^2/4 + 0.5^2/4) = 8, t = 2.3060
    d = welch([1, 2, 3, 4, 5], [6, 7, 8, 9, 10])
    assert d.difference == 5.0 and d.df == pytest.approx(8.0)
    assert d.low == pytest.approx(5 - 2.306004, abs=1e-5)
    assert d.high == pytest.approx(5 + 2.306004, abs=1e-5)
    assert d.significant is True and d.verdict == "significant"


def test_a_small_difference_is_not_yet_significant() -> None:
    # diff 1, same spread: [1 - 2.306, 1 + 2.306] contains 0
    d = welch([1, 2, 3, 4, 5], [2, 3, 4, 5, 6])
    assert d.difference == 1.0
    assert d.low == pytest.approx(1 - 2.306004, abs=1e-5)
    assert d.significant is False and d.verdict == "not yet significant"


def test_unequal_variances_use_welch_satterthwaite() -> None:
    # a: mean 2, var 1, n 3; b: mean 25, var 500/3, n 4
    # se^2 = 1/3 + 125/3 = 42; df = 42^2 / ((1/3)^2 / 2 + (125/3)^2 / 3)
    d = welch([1, 2, 3], [10, 20, 30, 40])
    df = 42**2 / ((1 / 3) ** 2 / 2 + (125 / 3) ** 2 / 3)
    assert d.df == pytest.approx(df)
    half = t_quantile(0.975, df) * math.sqrt(42)
    assert (d.low, d.high) == (pytest.approx(23 - half), pytest.approx(23 + half))
    # About 3.05 degrees of freedom: the half-width lies between those of df 3 and df 4.
    assert 2.7764 * math.sqrt(42) < half < 3.1824 * math.sqrt(42)
    assert d.significant is True


def test_constant_samples_give_an_exact_difference() -> None:
    same = welch([1.0, 1.0, 1.0], [1.0, 1.0])
    assert (same.difference, same.low, same.high, same.significant) == (0.0, 0.0, 0.0, False)
    apart = welch([1.0, 1.0], [0.5, 0.5])
    assert apart.difference == -0.5 and apart.significant is True
