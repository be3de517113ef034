"""The unacknowledged sweep: orders sent but never acknowledged are looked up by label.

What bounds it: each order is handed to ``reconcile`` (the executor's label lookup, then a send
only if the exchange never had it), and every outcome of that is a report that moves the order
out of pending/submitted: found (open, filled, ...), sent (the exchange's answer), refused
(rejected) or failed ``submit_attempts`` times (rejected as retries_exhausted, or needs_review
under the manual strategy). An order is swept again only when a pass got no answer at all (the
label lookup itself kept failing: exchange unreachable or refusing us), so it then costs one
lookup per ``recovery_check_interval_s`` and never a second send. Acknowledged orders the
exchange lost are not the sweep's: :mod:`oms.lifecycle.reconcile` resolves them.

It never scans the table: every write of an order is noted (:meth:`UnacknowledgedSweep.note`),
and an order still unacknowledged ``submit_timeout_s`` after its last change is due.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from oms.orders.indexes import DeadlineIndex
from oms.schemas import OrderRecord, OrderStatus, now_ms

log = structlog.get_logger(__name__)

UNACKNOWLEDGED = frozenset({OrderStatus.PENDING, OrderStatus.SUBMITTED})


class UnacknowledgedSweep:
    """The unacknowledged orders of the owned partitions, by when their lookup is due."""

    def __init__(
        self,
        *,
        submit_timeout_s: float,
        interval_s: float,
        order_of: Callable[[str], OrderRecord | None],
        owns: Callable[[str], bool],
        is_inflight: Callable[[str], bool],
        reconcile: Callable[[OrderRecord], Awaitable[object]],
    ) -> None:
        self._timeout_ms = int(submit_timeout_s * 1000)
        self._interval_ms = int(interval_s * 1000)
        self._order_of = order_of
        self._owns = owns
        self._is_inflight = is_inflight
        self._reconcile = reconcile
        self._due: DeadlineIndex[str] = DeadlineIndex()

    def __len__(self) -> int:
        return len(self._due)

    def note(self, order_id: str, order: OrderRecord | None) -> None:
        if order is not None and order.status in UNACKNOWLEDGED:
            self._due.schedule(order_id, order.updated_at + self._timeout_ms)
        else:
            self._due.discard(order_id)

    def clear(self) -> None:
        self._due.clear()

    async def run_once(self, now: int | None = None) -> int:
        """Reconcile the orders that are due; returns how many."""
        now = now if now is not None else now_ms()
        swept = 0
        for order_id in self._due.pop_due(now):
            order = self._order_of(order_id)
            if order is None or order.status not in UNACKNOWLEDGED or not self._owns(order_id):
                continue  # a write (or the rebuild) follows it again if need be
            if order.updated_at + self._timeout_ms > now:
                self.note(order_id, order)
                continue
            # Looked at again next round if no answer has changed it by then.
            self._due.schedule(order_id, now + self._interval_ms)
            if self._is_inflight(order_id):
                continue
            swept += 1
            log.info("worker.reconcile", order_id=order_id, status=order.status.value)
            await self._reconcile(order)
        return swept
