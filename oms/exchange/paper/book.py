"""A price-time priority limit order book for one instrument.

Prices are kept as integer tick counts so level lookups never suffer float drift. Both
sides keep a sorted list of level keys with the best level first (bids store ``-ticks``).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterator

from oms.exchange.paper.orders import Order


class Side:
    """One side of the book: levels keyed by (signed) tick, FIFO within a level."""

    __slots__ = ("keys", "levels", "sign")

    def __init__(self, is_bid: bool) -> None:
        self.sign = -1 if is_bid else 1
        self.keys: list[int] = []
        self.levels: dict[int, deque[Order]] = {}

    def add(self, ticks: int, order: Order) -> None:
        key = self.sign * ticks
        level = self.levels.get(key)
        if level is None:
            level = self.levels[key] = deque()
            insort(self.keys, key)
        level.append(order)

    def remove(self, ticks: int, order: Order) -> bool:
        key = self.sign * ticks
        level = self.levels.get(key)
        if level is None:
            return False
        try:
            level.remove(order)
        except ValueError:
            return False
        if not level:
            self._drop(key)
        return True

    def _drop(self, key: int) -> None:
        del self.levels[key]
        i = bisect_left(self.keys, key)
        if i < len(self.keys) and self.keys[i] == key:
            del self.keys[i]

    def best_ticks(self) -> int | None:
        return self.sign * self.keys[0] if self.keys else None

    def best_level(self) -> deque[Order] | None:
        return self.levels[self.keys[0]] if self.keys else None

    def pop_best_if_empty(self) -> None:
        if self.keys and not self.levels[self.keys[0]]:
            self._drop(self.keys[0])

    def depth(self, n: int) -> Iterator[tuple[int, float]]:
        """(ticks, total remaining amount) for the best ``n`` levels."""
        for key in self.keys[:n]:
            yield self.sign * key, sum(o.amount - o.filled for o in self.levels[key])

    def crossing_amount(self, limit_ticks: int, taker_is_buy: bool, cap: float) -> float:
        """Remaining amount resting at prices a taker with ``limit_ticks`` would trade at."""
        total = 0.0
        for key in self.keys:
            ticks = self.sign * key
            if (ticks > limit_ticks) if taker_is_buy else (ticks < limit_ticks):
                break
            total += sum(o.amount - o.filled for o in self.levels[key])
            if total >= cap:
                break
        return total


class Book:
    """Both sides of one instrument's book."""

    __slots__ = ("asks", "bids")

    def __init__(self) -> None:
        self.bids = Side(is_bid=True)
        self.asks = Side(is_bid=False)

    def side(self, is_buy: bool) -> Side:
        return self.bids if is_buy else self.asks

    def opposite(self, is_buy: bool) -> Side:
        return self.asks if is_buy else self.bids
