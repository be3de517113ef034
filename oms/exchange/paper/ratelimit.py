"""Deribit-style rate limits, enforced: a credit pool for ordinary requests and a per-tier
token bucket for matching-engine requests (docs.deribit.com/articles/rate-limits). A request
the account cannot pay for now is answered 10028 ``too_many_requests``."""

from __future__ import annotations

from oms.ratelimit import TokenBucket

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


class RateLimiter:
    """Both of an account's budgets."""

    __slots__ = ("credits", "matching")

    def __init__(self, tier: int) -> None:
        rate, burst = MATCHING_TIERS.get(tier, MATCHING_TIERS[DEFAULT_TIER])
        self.credits = TokenBucket(CREDITS_REFILL_PER_S, CREDITS_MAX)
        self.matching = TokenBucket(rate, burst)

    def allow(self, matching_engine: bool) -> bool:
        """Charge one request; False means answer 10028 and drop the session."""
        if matching_engine:
            return self.matching.take(1.0)
        return self.credits.take(CREDITS_COST)
