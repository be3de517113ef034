"""Confidence intervals for means and for differences of means (Welch's t), in pure Python.

Student's t quantiles come from its distribution function, written with the regularized
incomplete beta function (continued fraction, as in Numerical Recipes' ``betacf``) and
inverted by bisection: exact to about 1e-9, for any real number of degrees of freedom, as
Welch's approximation needs. No scipy: the project does not carry it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95
_EPS = 1e-15
_TINY = 1e-300


def _beta_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), for 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` (> 0, not necessarily whole) degrees of freedom."""
    tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (0 < p < 1)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        mid = (low + high) / 2.0
        if t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low < 1e-12 * max(1.0, high):
            break
    return (low + high) / 2.0


@dataclass(frozen=True)
class Estimate:
    """A sample mean with its confidence interval (None with fewer than two values)."""

    n: int
    mean: float | None
    low: float | None
    high: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return {"n": self.n, "mean": self.mean, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class Difference:
    """mean(b) - mean(a) with Welch's confidence interval; ``significant`` when the interval
    excludes 0 (None: too few values on a side to tell)."""

    difference: float | None
    low: float | None
    high: float | None
    df: float | None
    significant: bool | None

    @property
    def verdict(self) -> str:
        """What the interval says, in words."""
        if self.significant is None:
            return "too few values"
        return "significant" if self.significant else "not yet significant"

    def as_dict(self) -> dict[str, float | bool | str | None]:
        return {
            "difference": self.difference,
            "low": self.low,
            "high": self.high,
            "df": self.df,
            "significant": self.significant,
            "verdict": self.verdict,
        }


def _mean_var(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, var


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """The mean of ``values`` and its t interval (n - 1 degrees of freedom)."""
    n = len(values)
    if n == 0:
        return Estimate(0, None, None, None)
    mean, var = _mean_var(values)
    if n < 2:
        return Estimate(n, mean, None, None)
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * math.sqrt(var / n)
    return Estimate(n, mean, mean - half, mean + half)


def welch(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Difference:
    """mean(b) - mean(a) and its Welch interval: the standard error of two samples of unequal
    variances, with Welch-Satterthwaite degrees of freedom."""
    if len(a) < 2 or len(b) < 2:
        diff = _mean_var(b)[0] - _mean_var(a)[0] if a and b else None
        return Difference(diff, None, None, None, None)
    mean_a, var_a = _mean_var(a)
    mean_b, var_b = _mean_var(b)
    diff = mean_b - mean_a
    qa, qb = var_a / len(a), var_b / len(b)
    se2 = qa + qb
    if se2 == 0.0:
        # Both samples constant: the difference is exact.
        return Difference(diff, diff, diff, None, diff != 0.0)
    df = se2 * se2 / (qa * qa / (len(a) - 1) + qb * qb / (len(b) - 1))
    half = t_quantile(0.5 + confidence / 2.0, df) * math.sqrt(se2)
    low, high = diff - half, diff + half
    return Difference(diff, low, high, df, not (low <= 0.0 <= high))
