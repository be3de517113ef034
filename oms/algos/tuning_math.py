"""The statistics execution tuning reads from the order history, as pure math (no I/O).

The ClickHouse side (:mod:`oms.sinks.tuning`) counts; this module turns the counts into
rates with intervals. Three kinds of evidence:

* :class:`FillBucket`: passive orders of one instrument and hour of day placed at one distance
  from the touch (bps, positive = behind it, negative = inside the spread), how many of them
  filled within the horizon;
* :class:`RetryBucket`: retries of one error kind at one venue after one delay, how many
  succeeded;
* :class:`SliceBucket`: aggressive slices of one instrument at one size relative to the visible
  depth at the touch, their slippage against that touch (mean, variance).

Intervals: Wilson's score interval for a proportion (good for small samples and rates near
0 or 1, unlike the normal approximation), and a normal interval for a mean slippage (the
buckets a pick may use have at least ``min_samples`` values, so the t and normal quantiles
differ by little; the difference is noted in the README).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

# Two-sided 95%: the z quantile of the normal distribution.
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Rate:
    """A proportion with its Wilson interval."""

    n: int
    successes: int
    rate: float | None
    low: float | None
    high: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "n": self.n,
            "successes": self.successes,
            "rate": self.rate,
            "low": self.low,
            "high": self.high,
        }


def wilson(successes: int, n: int, z: float = Z95) -> Rate:
    """``successes`` out of ``n`` with Wilson's score interval (None for n = 0)."""
    if n <= 0:
        return Rate(0, 0, None, None, None)
    if not 0 <= successes <= n:
        raise ValueError(f"successes {successes} not within 0..{n}")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return Rate(n, successes, p, max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class MeanEstimate:
    """A mean with its normal confidence interval (None with fewer than two values)."""

    n: int
    mean: float | None
    low: float | None
    high: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return {"n": self.n, "mean": self.mean, "low": self.low, "high": self.high}


def mean_estimate(
    n: int, mean: float | None, variance: float | None, z: float = Z95
) -> MeanEstimate:
    """The interval of a mean from its count, mean and sample variance."""
    if n <= 0 or mean is None:
        return MeanEstimate(0, None, None, None)
    if n < 2 or variance is None or math.isnan(variance):
        return MeanEstimate(n, mean, None, None)
    half = z * math.sqrt(max(0.0, variance) / n)
    return MeanEstimate(n, mean, mean - half, mean + half)


@dataclass(frozen=True)
class FillBucket:
    """Passive orders placed ``offset_bps`` from the touch; ``filled`` of them filled within
    the horizon. ``hour``: UTC hour of placement."""

    instrument: str
    hour: int
    offset_bps: float
    orders: int
    filled: int
    tick_size: float | None = None


@dataclass(frozen=True)
class RetryBucket:
    """Retries of ``reason`` at ``venue`` sent ``delay_s`` after the failure; ``succeeded``
    of ``attempts`` went through."""

    venue: str
    reason: str
    delay_s: float
    attempts: int
    succeeded: int


@dataclass(frozen=True)
class SliceBucket:
    """Aggressive slices of ``instrument`` whose amount was about ``depth_ratio`` times the
    visible amount at the touch: their slippage against that touch (bps, + = worse), and the
    median visible amount at placement."""

    instrument: str
    depth_ratio: float
    slices: int
    mean_slippage_bps: float | None
    var_slippage_bps: float | None
    median_depth: float | None


def pooled_fills(buckets: Iterable[FillBucket]) -> dict[tuple[str, float], tuple[int, int]]:
    """Orders and fills per (instrument, offset), summed over the hours."""
    out: dict[tuple[str, float], tuple[int, int]] = {}
    for b in buckets:
        n, k = out.get((b.instrument, b.offset_bps), (0, 0))
        out[(b.instrument, b.offset_bps)] = (n + b.orders, k + b.filled)
    return out


def success_per_second(rate: Rate, delay_s: float) -> float | None:
    """Expected successes per second of waiting: the success rate over the delay (a retry
    sent at once is charged a millisecond, so it never divides by zero)."""
    if rate.rate is None:
        return None
    return rate.rate / max(delay_s, 0.001)


# The touch at placement, recorded by intake in a new order's metadata (from the worker's
# market cache) so the fill statistics know how far from it each order was placed.
TOUCH_BID_KEY = "touch_bid"
TOUCH_ASK_KEY = "touch_ask"
TOUCH_BID_AMOUNT_KEY = "touch_bid_amount"
TOUCH_ASK_AMOUNT_KEY = "touch_ask_amount"
TOUCH_AT_KEY = "touch_at"
TICK_SIZE_KEY = "tick_size"
TOUCH_KEYS = (
    TOUCH_BID_KEY, TOUCH_ASK_KEY, TOUCH_BID_AMOUNT_KEY, TOUCH_ASK_AMOUNT_KEY, TOUCH_AT_KEY,
    TICK_SIZE_KEY,
)  # fmt: skip


def touch_metadata(
    bid: float | None,
    ask: float | None,
    bid_amount: float | None,
    ask_amount: float | None,
    at: int | None,
    tick_size: float | None,
) -> dict[str, float | int]:
    """The touch keys for a new order's metadata (unknown values left out)."""
    values = (bid, ask, bid_amount, ask_amount, at, tick_size)
    return {key: value for key, value in zip(TOUCH_KEYS, values, strict=True) if value is not None}


# Retry outcomes, counted by the executor per venue, error kind and wait, sampled into the
# ClickHouse ``metrics`` table as cumulative counters named
# ``retry.<venue>.<reason>.<wait in ms>.<attempts|succeeded>``. Waits are jittered, so each is
# counted at the smallest of these (s) at or above it.
RETRY_METRIC_PREFIX = "retry."
DELAY_LADDER_S = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)


def delay_bucket(seconds: float) -> float:
    """The ladder step a wait is counted at (the last one for anything longer)."""
    return next((step for step in DELAY_LADDER_S if seconds <= step + 1e-9), DELAY_LADDER_S[-1])


def retry_metric_name(venue: str, reason: str, delay_s: float, kind: str) -> str:
    """The counter of retries (``kind`` ``attempts`` or ``succeeded``) of ``reason`` at
    ``venue`` after a wait counted at ``delay_s``."""
    clean = [part.replace(".", "_") for part in (venue, reason)]
    return f"{RETRY_METRIC_PREFIX}{clean[0]}.{clean[1]}.{round(delay_s * 1000)}.{kind}"
