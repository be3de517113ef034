"""Client-side model of Deribit's credit-based rate limits, so we never provoke 10028.

Deribit meters each sub-account with two pools (docs.deribit.com/articles/rate-limits; default
figures quoted in NOTES.md): non-matching-engine requests draw ``credits_cost`` credits from a pool
of ``credits_max`` refilled at ``credits_refill_per_s``; matching-engine requests (order entry and
cancels) are limited to ``matching_rate_per_s`` with a burst of ``matching_burst``. Running out
earns a 10028 and a terminated session, so :meth:`RateLimiter.acquire` waits *before* sending.

Both pools are :class:`~oms.ratelimit.TokenBucket` objects used for pacing: they reserve on
acquire and may go into debt, so each waiter sleeps exactly until its own credits exist, which
keeps FIFO order and costs one sleep per throttled request (no polling loop).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from oms.ratelimit import Clock, TokenBucket
from oms.settings import ExchangeSettings

# Requests the matching engine executes; everything else is metered by credits.
MATCHING_ENGINE_METHODS: frozenset[str] = frozenset(
    {
        "private/buy",
        "private/sell",
        "private/edit",
        "private/edit_by_label",
        "private/cancel",
        "private/cancel_by_label",
        "private/cancel_all",
        "private/cancel_all_by_currency",
        "private/cancel_all_by_currency_pair",
        "private/cancel_all_by_instrument",
        "private/cancel_all_by_kind_or_type",
        "private/cancel_quotes",
        "private/close_position",
        "private/mass_quote",
    }
)


def is_matching_engine(method: str) -> bool:
    """Whether ``method`` is metered by the matching-engine pool."""
    return method in MATCHING_ENGINE_METHODS


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """One sub-account tier's limits."""

    credits_max: int = 50_000
    credits_refill_per_s: int = 10_000
    credits_cost: int = 500
    matching_rate_per_s: float = 5.0
    matching_burst: int = 20
    # Share of each budget we leave unused: network jitter can bunch requests we spaced evenly,
    # and Deribit's bucket (not ours) decides. 0 paces at exactly the configured limits.
    headroom: float = 0.1

    @classmethod
    def from_settings(cls, settings: ExchangeSettings, headroom: float = 0.1) -> RateLimitConfig:
        """The limits configured in :class:`~oms.settings.ExchangeSettings`."""
        return cls(
            credits_max=settings.credits_max,
            credits_refill_per_s=settings.credits_refill_per_s,
            credits_cost=settings.credits_cost,
            matching_rate_per_s=settings.matching_rate_per_s,
            matching_burst=settings.matching_burst,
            headroom=headroom,
        )

    def scaled(self, value: float) -> float:
        """``value`` less the headroom (never below one request's worth)."""
        return max(value * (1.0 - self.headroom), 1e-9)


class RateLimiter:
    """Both Deribit pools of one sub-account.

    Deribit meters the sub-account, not the connection: clients of the same account (e.g. the
    order executor and the user-data gateway) should share one instance.
    """

    def __init__(self, config: RateLimitConfig, *, clock: Clock = time.monotonic) -> None:
        self.config = config
        self.credits = TokenBucket(
            config.scaled(config.credits_refill_per_s),
            max(config.scaled(config.credits_max), config.credits_cost),
            clock=clock,
        )
        self.matching = TokenBucket(
            config.scaled(config.matching_rate_per_s),
            max(config.scaled(config.matching_burst), 1.0),
            clock=clock,
        )

    @property
    def waits(self) -> int:
        """Requests that waited for credits."""
        return self.credits.waits + self.matching.waits

    @property
    def wait_seconds(self) -> float:
        """Time requests spent waiting for credits, in all."""
        return self.credits.wait_seconds + self.matching.wait_seconds

    def _bucket(self, method: str) -> tuple[TokenBucket, float]:
        if method in MATCHING_ENGINE_METHODS:
            return self.matching, 1.0
        return self.credits, float(self.config.credits_cost)

    def delay_for(self, method: str) -> float:
        """How long a request of ``method`` would wait right now."""
        bucket, cost = self._bucket(method)
        return bucket.delay_for(cost)

    async def acquire(self, method: str, max_wait: float | None = None) -> bool:
        """Wait until ``method`` may be sent; False (nothing reserved) if that exceeds max_wait."""
        bucket, cost = self._bucket(method)
        return await bucket.acquire(cost, max_wait)

    def debit(self, method: str) -> None:
        """Charge ``method`` without waiting (for replies Deribit must get on time)."""
        bucket, cost = self._bucket(method)
        bucket.debit(cost)
