"""Deribit-style rate limits: a credit pool for ordinary requests and a per-tier token
bucket for matching-engine requests (docs.deribit.com/articles/rate-limits)."""

from __future__ import annotations

import time
from dataclasses import dataclass

# Non-matching-engine requests: pool size, refill per second, cost per request.
CREDITS_MAX = 50_000
CREDITS_REFILL_PER_S = 10_000
CREDITS_COST = 500

# Matching-engine requests per sub-account tier: (sustained requests/s, burst).
MATCHING_TIERS: dict[int, tuple[float, int]] = {
    1: (30.0, 100),
    2: (20.0, 50),
    3: (10.0, 30),
    4: (5.0, 20),
}
DEFAULT_TIER = 4


@dataclass(slots=True)
class TokenBucket:
    """A bucket of ``capacity`` tokens refilled at ``rate`` per second."""

    capacity: float
    rate: float
    tokens: float = -1.0
    stamp: float = 0.0

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.capacity
        self.stamp = time.monotonic()

    def take(self, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if available."""
        now = time.monotonic()
        tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens < cost:
            self.tokens = tokens
            return False
        self.tokens = tokens - cost
        return True


class RateLimiter:
    """Both of an account's budgets."""

    __slots__ = ("credits", "matching")

    def __init__(self, tier: int) -> None:
        rate, burst = MATCHING_TIERS.get(tier, MATCHING_TIERS[DEFAULT_TIER])
        self.credits = TokenBucket(CREDITS_MAX, CREDITS_REFILL_PER_S)
        self.matching = TokenBucket(burst, rate)

    def allow(self, matching_engine: bool) -> bool:
        """Charge one request; False means answer 10028 and drop the session."""
        if matching_engine:
            return self.matching.take(1.0)
        return self.credits.take(CREDITS_COST)
