"""Client-side model of Deribit's credit-based rate limits, so we never provoke 10028.

Deribit meters each sub-account with two pools (docs.deribit.com/articles/rate-limits; default
figures quoted in NOTES.md): non-matching-engine requests draw ``credits_cost`` credits from a pool
of ``credits_max`` refilled at ``credits_refill_per_s``; matching-engine requests (order entry and
cancels) are limited to ``matching_rate_per_s`` with a burst of ``matching_burst``. Running out
earns a 10028 and a terminated session, so :meth:`RateLimiter.acquire` waits *before* sending.

The buckets reserve on acquire and may go into debt: each waiter sleeps exactly until its own
credits exist, which keeps FIFO order and costs one sleep per throttled request (no polling loop).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

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


class TokenBucket:
    """A token bucket that reserves on acquire (the balance may go negative)."""

    __slots__ = ("_clock", "_last", "_tokens", "capacity", "rate")

    def __init__(
        self, rate: float, capacity: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError("rate and capacity must be positive")
        self.rate = float(rate)
        self.capacity = float(capacity)
        self._clock = clock
        self._tokens = float(capacity)
        self._last = clock()

    def _refill(self) -> float:
        now = self._clock()
        tokens = self._tokens + (now - self._last) * self.rate
        if tokens > self.capacity:
            tokens = self.capacity
        self._tokens = tokens
        self._last = now
        return tokens

    @property
    def available(self) -> float:
        """Tokens available now (negative while requests wait on reserved credits)."""
        return self._refill()

    def reserve(self, cost: float) -> float:
        """Take ``cost`` tokens now; return how long to wait before they really exist."""
        tokens = self._refill() - cost
        self._tokens = tokens
        return 0.0 if tokens >= 0 else -tokens / self.rate

    def delay_for(self, cost: float) -> float:
        """How long a reservation of ``cost`` would have to wait, without reserving."""
        tokens = self._refill() - cost
        return 0.0 if tokens >= 0 else -tokens / self.rate

    def refund(self, cost: float) -> None:
        """Give back a reservation whose request was never sent."""
        self._tokens = min(self.capacity, self._refill() + cost)

    def debit(self, cost: float) -> None:
        """Charge a request that must go out now regardless (heartbeat replies, auth)."""
        self._tokens = self._refill() - cost


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

    def __init__(
        self, config: RateLimitConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
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
        self.waits = 0
        self.wait_seconds = 0.0

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
        if max_wait is not None and bucket.delay_for(cost) > max_wait:
            return False
        delay = bucket.reserve(cost)
        if delay > 0.0:
            self.waits += 1
            self.wait_seconds += delay
            try:
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                bucket.refund(cost)
                raise
        return True

    def debit(self, method: str) -> None:
        """Charge ``method`` without waiting (for replies Deribit must get on time)."""
        bucket, cost = self._bucket(method)
        bucket.debit(cost)
