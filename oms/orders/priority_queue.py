"""Where queued orders wait for their turn: priority queues per account, with statistics.

This is an in-memory index. The durable copy of every queued order is its record in the
changelog-backed ``orders`` table (status ``queued``, priority, ``queued_at``); after a crash or
a rebalance the worker rebuilds these queues from the table (:mod:`oms.streams.held_orders`).
Items rebuilt that way are *uncertain*: the previous owner may have sent them just before it
died, so the executor looks them up by label before sending.

One heap per account, because Deribit meters each sub-account separately: a throttled account
must not hold back the others, and within an account a high-priority order overtakes every
normal and low one still waiting. Order: priority, then arrival (``queued_at``, then the order
in which this worker queued them).
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from oms.schemas import OrderRecord, Priority

# How far back the dequeue rate looks.
RATE_WINDOW_S = 60.0


@dataclass(slots=True)
class QueuedItem:
    order_id: str
    account_id: str
    priority: Priority
    queued_at: int
    uncertain: bool
    live: bool = True


class PriorityQueues:
    """Per-account heaps ordered by (priority, arrival); O(log n) push and pop."""

    def __init__(self, levels: Iterable[str], *, reduce_only_as_high: bool = False) -> None:
        self._rank = {Priority(level): i for i, level in enumerate(levels)}
        self._reduce_only_as_high = reduce_only_as_high
        self._heaps: dict[str, list[tuple[int, int, int, QueuedItem]]] = {}
        # Ties within a millisecond keep the order in which intake saw them.
        self._arrival = itertools.count()
        self._items: dict[str, QueuedItem] = {}
        self._depth: dict[Priority, int] = dict.fromkeys(self._rank, 0)
        self._dequeued_at: deque[float] = deque()
        self.enqueued_total = 0
        self.dequeued_total = 0
        self.rejected_total = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._items

    def effective_priority(self, order: OrderRecord) -> Priority:
        """The queue an order waits in (``reduce_only`` may count as high)."""
        if self._reduce_only_as_high and order.reduce_only:
            return Priority.HIGH
        return order.priority

    def push(self, order: OrderRecord, *, uncertain: bool = False) -> bool:
        """Queue an order; False if it is already queued."""
        if order.order_id in self._items:
            return False
        priority = self.effective_priority(order)
        queued_at = order.queued_at or order.updated_at
        item = QueuedItem(order.order_id, order.account_id, priority, queued_at, uncertain)
        heap = self._heaps.setdefault(order.account_id, [])
        heapq.heappush(heap, (self._rank[priority], queued_at, next(self._arrival), item))
        self._items[order.order_id] = item
        self._depth[priority] += 1
        self.enqueued_total += 1
        return True

    def pop(self, account_id: str) -> QueuedItem | None:
        """The account's next order, or None."""
        heap = self._heaps.get(account_id)
        while heap:
            item = heapq.heappop(heap)[3]
            if item.live:
                self._forget(item)
                self.dequeued_total += 1
                self._dequeued_at.append(time.monotonic())
                if not heap:
                    del self._heaps[account_id]
                return item
        self._heaps.pop(account_id, None)
        return None

    def remove(self, order_id: str) -> QueuedItem | None:
        """Take an order out (cancelled, or its partition moved away). O(1), lazy."""
        item = self._items.get(order_id)
        if item is None:
            return None
        item.live = False
        self._forget(item)
        return item

    def accounts(self) -> list[str]:
        """Accounts with queued orders."""
        return [account for account, heap in self._heaps.items() if heap]

    def order_ids(self) -> list[str]:
        return list(self._items)

    def depth(self) -> int:
        return len(self._items)

    def _forget(self, item: QueuedItem) -> None:
        del self._items[item.order_id]
        self._depth[item.priority] -= 1

    def statistics(self, now_ms: int) -> dict[str, Any]:
        """Depth and oldest age per priority, and rates (``get_queue_statistics``)."""
        oldest: dict[Priority, int] = {}
        for item in self._items.values():
            current = oldest.get(item.priority)
            if current is None or item.queued_at < current:
                oldest[item.priority] = item.queued_at
        cutoff = time.monotonic() - RATE_WINDOW_S
        while self._dequeued_at and self._dequeued_at[0] < cutoff:
            self._dequeued_at.popleft()
        return {
            "depth": {p.value: n for p, n in self._depth.items()},
            "total_depth": len(self._items),
            "oldest_age_ms": {
                p.value: (max(0, now_ms - oldest[p]) if p in oldest else None) for p in self._rank
            },
            "enqueued_total": self.enqueued_total,
            "dequeued_total": self.dequeued_total,
            "dequeue_rate_per_s": round(len(self._dequeued_at) / RATE_WINDOW_S, 3),
            "rejected_total": self.rejected_total,
            "accounts": len(self.accounts()),
        }
