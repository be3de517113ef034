"""Token bucket for providers with a per-destination rate (WeCom: 20 messages/min/robot)."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """``capacity`` tokens refilled at ``capacity / period_s`` per second."""

    def __init__(self, capacity: int, period_s: float = 60.0) -> None:
        self.capacity = float(capacity)
        self.rate = capacity / period_s
        self.tokens = float(capacity)
        self.updated = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def drain(self) -> None:
        """Empty the bucket (the provider said we are over its limit)."""
        self._refill()
        self.tokens = 0.0

    async def acquire(self, max_wait_s: float) -> bool:
        """Take one token, waiting up to ``max_wait_s``; False if none came in time."""
        async with self._lock:  # FIFO: waiters are served in order
            self._refill()
            if self.tokens < 1:
                wait = (1 - self.tokens) / self.rate
                if wait > max_wait_s:
                    return False
                await asyncio.sleep(wait)
                self._refill()
            self.tokens -= 1
            return True
