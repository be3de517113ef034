"""Indexes of a worker's orders: which are due, which are in a status, without a scan.

A worker's timers (auto-cancel, partial-fill grace, re-checks of quiet orders, unacknowledged
sweeps, TWAP slices, the purge of ended orders) each keep one :class:`DeadlineIndex` of the
orders they follow, keyed by order id. The code path that writes an order tells every index
(:class:`OrderObserver`), and a timer's pass pops only the keys whose deadline has come: its
cost follows the orders due, not the orders in the table.

Entries are replaced and removed lazily: the heap keeps superseded entries, which are skipped
when they reach the top (an entry counts only while it is its key's current one), and the heap
is compacted once the stale entries outnumber the live ones. :class:`OrdersInStatus` is the
set of orders in some statuses (those the exchange may hold, say), for the passes that must
look at every one of them (a reconciliation after a reconnect).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Iterator
from typing import Generic, Protocol, TypeVar

from oms.schemas import OrderRecord, OrderStatus

K = TypeVar("K", bound=Hashable)

# Stale heap entries tolerated beyond the live ones before the heap is rebuilt.
_SLACK = 64


class OrderObserver(Protocol):
    """What follows the order table: told of every write (``order`` None: the order left
    the table), emptied before it is rebuilt from the table."""

    def note(self, order_id: str, order: OrderRecord | None) -> None: ...

    def clear(self) -> None: ...


class DeadlineIndex(Generic[K]):
    """Keys with one deadline each (ms), taken in deadline order."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, K]] = []
        self._current: dict[K, tuple[int, int]] = {}  # key -> (deadline, sequence)
        self._sequence = itertools.count()

    def __len__(self) -> int:
        return len(self._current)

    def __contains__(self, key: object) -> bool:
        return key in self._current

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._current))

    def deadline(self, key: K) -> int | None:
        """The key's deadline, or None if it has none."""
        current = self._current.get(key)
        return current[0] if current is not None else None

    def schedule(self, key: K, at: int) -> None:
        """Set (or move) the key's deadline."""
        current = self._current.get(key)
        if current is not None and current[0] == at:
            return
        sequence = next(self._sequence)
        self._current[key] = (at, sequence)
        heapq.heappush(self._heap, (at, sequence, key))
        self._compact_if_stale()

    def discard(self, key: K) -> None:
        """Forget the key (its heap entry is skipped when it comes up)."""
        if self._current.pop(key, None) is not None:
            self._compact_if_stale()

    def clear(self) -> None:
        self._heap.clear()
        self._current.clear()

    def next_deadline(self) -> int | None:
        """The earliest deadline, or None when empty."""
        heap = self._heap
        while heap:
            at, sequence, key = heap[0]
            if self._current.get(key, (0, -1))[1] == sequence:
                return at
            heapq.heappop(heap)
        return None

    def pop_due(self, now: int, limit: int | None = None) -> list[K]:
        """The keys due by ``now`` (deadline <= now), earliest first, at most ``limit``;
        they leave the index (whoever handles them schedules them again if need be)."""
        due: list[K] = []
        heap, current = self._heap, self._current
        while heap and heap[0][0] <= now and (limit is None or len(due) < limit):
            _, sequence, key = heapq.heappop(heap)
            if current.get(key, (0, -1))[1] != sequence:
                continue  # superseded or discarded
            del current[key]
            due.append(key)
        return due

    def _compact_if_stale(self) -> None:
        if len(self._heap) > 2 * len(self._current) + _SLACK:
            self._heap = [(at, sequence, key) for key, (at, sequence) in self._current.items()]
            heapq.heapify(self._heap)


class OrdersInStatus:
    """The ids of the orders whose status is one of ``statuses`` (an :class:`OrderObserver`)."""

    def __init__(self, statuses: frozenset[OrderStatus]) -> None:
        self._statuses = statuses
        self._ids: set[str] = set()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._ids

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._ids))

    def note(self, order_id: str, order: OrderRecord | None) -> None:
        if order is not None and order.status in self._statuses:
            self._ids.add(order_id)
        else:
            self._ids.discard(order_id)

    def clear(self) -> None:
        self._ids.clear()
