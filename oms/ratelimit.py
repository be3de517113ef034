"""The one token bucket: ``capacity`` tokens, refilled at ``rate`` tokens per second.

Every rate limit of the system is one of these, in one of two ways of spending:

* *enforcing* (:meth:`TokenBucket.take`): a request is allowed only if its tokens are there
  now; the paper exchange answers Deribit's 10028 ``too_many_requests`` otherwise.
* *pacing* (:meth:`TokenBucket.acquire`): a request reserves its tokens at once, going into
  debt if need be, and sleeps exactly until they exist. Waiters are served in the order they
  came (each one's debt is behind the previous one's) with one sleep each, no polling. The
  Deribit client paces itself this way so it never provokes a 10028, and so does a
  notification channel with a per-minute provider limit.

A cost may be any positive amount (Deribit charges credits per request, e.g. 500 of a pool of
50,000 refilled at 10,000 per second); :meth:`TokenBucket.per_period` builds the "N per
period" kind (20 messages per minute).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

Clock = Callable[[], float]


class TokenBucket:
    """A token bucket that starts full. ``clock`` (seconds, monotonic) is injectable for
    tests; it defaults to :func:`time.monotonic`."""

    __slots__ = ("_clock", "_last", "_tokens", "capacity", "rate", "wait_seconds", "waits")

    def __init__(self, rate: float, capacity: float, *, clock: Clock = time.monotonic) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError("rate and capacity must be positive")
        self.rate = float(rate)
        self.capacity = float(capacity)
        self._clock = clock
        self._tokens = float(capacity)
        self._last = clock()
        # Pacing statistics: acquisitions that had to wait, and how long they waited in all.
        self.waits = 0
        self.wait_seconds = 0.0

    @classmethod
    def per_period(
        cls, count: float, period_s: float, *, clock: Clock = time.monotonic
    ) -> TokenBucket:
        """``count`` tokens per ``period_s`` seconds, with a burst of ``count``."""
        return cls(count / period_s, count, clock=clock)

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate}, capacity={self.capacity})"

    def _refill(self) -> float:
        now = self._clock()
        tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._tokens = tokens
        self._last = now
        return tokens

    @property
    def available(self) -> float:
        """Tokens available now (negative while reserved tokens are still being waited for)."""
        return self._refill()

    # -- enforcing

    def take(self, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if they are all there now; otherwise spend nothing."""
        tokens = self._refill()
        if tokens < cost:
            return False
        self._tokens = tokens - cost
        return True

    # -- pacing

    def delay_for(self, cost: float = 1.0) -> float:
        """How long a reservation of ``cost`` would have to wait now, without reserving."""
        tokens = self._refill() - cost
        return 0.0 if tokens >= 0 else -tokens / self.rate

    def reserve(self, cost: float = 1.0) -> float:
        """Take ``cost`` tokens now, into debt if need be; return how long to wait before
        they really exist."""
        tokens = self._refill() - cost
        self._tokens = tokens
        return 0.0 if tokens >= 0 else -tokens / self.rate

    def refund(self, cost: float = 1.0) -> None:
        """Give back a reservation whose request was never sent."""
        self._tokens = min(self.capacity, self._refill() + cost)

    def debit(self, cost: float = 1.0) -> None:
        """Charge a request that must go out now regardless (heartbeat replies, auth)."""
        self._tokens = self._refill() - cost

    def drain(self) -> None:
        """Spend everything there is now (the other side said we are over its limit); debts
        of waiting reservations stay."""
        self._tokens = min(self._refill(), 0.0)

    async def acquire(self, cost: float = 1.0, max_wait: float | None = None) -> bool:
        """Wait until ``cost`` tokens are ours. False, with nothing reserved, if that would
        take longer than ``max_wait`` seconds. A cancelled wait gives its tokens back."""
        if max_wait is not None and self.delay_for(cost) > max_wait:
            return False
        delay = self.reserve(cost)
        if delay > 0.0:
            self.waits += 1
            self.wait_seconds += delay
            try:
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                self.refund(cost)
                raise
        return True
