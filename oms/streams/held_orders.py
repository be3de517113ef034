"""Where waiting and queued orders are held in memory, and how they are rebuilt.

Two indexes over the durable ``orders`` table of the partitions this worker owns:

* the trigger engine, for ``waiting`` orders (delayed or conditional);
* the priority queues, for ``queued`` orders.

The agents add to them as they write the table; after a rebalance (or a restart) ``rebuild``
reloads them from the table, so nothing held is lost when a worker dies. The table stays the
only source of truth: these indexes are never written back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import structlog
from pydantic import ValidationError

from oms.conditions.engine import Fired, TriggerEngine
from oms.orders.priority_queue import PriorityQueues
from oms.schemas import OrderRecord, OrderStatus
from oms.schemas.conditions import parse_condition

log = structlog.get_logger(__name__)


class Withdrawal(StrEnum):
    """What taking an order out of the held indexes means for a cancel."""

    NOT_HELD = "not_held"  # not here (e.g. already dispatched): cancel at the exchange
    SAFE = "safe"  # never sent: cancel in the table
    UNCERTAIN = "uncertain"  # rebuilt after a takeover: look up by label before deciding


@dataclass
class RebuildResult:
    waiting: int = 0
    queued: int = 0
    dropped: int = 0


class HeldOrders:
    """The engine and the queues, for the partitions this worker owns. ``on_change`` is
    called whenever something was held or rebuilt (it wakes the dispatcher and the clock)."""

    def __init__(
        self, engine: TriggerEngine, queues: PriorityQueues, on_change: Callable[[], None]
    ) -> None:
        self.engine = engine
        self.queues = queues
        self._on_change = on_change

    def hold(self, order: OrderRecord, now_ms: int) -> Fired | None:
        """Start watching a waiting order; returns a :class:`Fired` if it is due already.
        A linked child still waiting for its parent's fill is not watched (its parent's
        facts release it)."""
        if order.links and order.links.get("hold"):
            return None
        conditions = [parse_condition(c) for c in order.conditions]
        fired = self.engine.add(
            order.order_id,
            conditions,
            match_any=order.condition_match == "any",
            now_ms=now_ms,
            release_at=order.release_at,
            expire_at=order.expire_at,
        )
        self._on_change()
        return fired

    def enqueue(self, order: OrderRecord, *, uncertain: bool = False) -> None:
        if self.queues.push(order, uncertain=uncertain):
            self._on_change()

    def withdraw(self, order: OrderRecord) -> Withdrawal:
        """Take an order out before a cancel (or an amend of a held order)."""
        if order.status is OrderStatus.WAITING:
            # Waiting orders are released only through the table: never sent, always safe.
            self.engine.remove(order.order_id)
            return Withdrawal.SAFE
        item = self.queues.remove(order.order_id)
        if item is None:
            return Withdrawal.NOT_HELD
        return Withdrawal.UNCERTAIN if item.uncertain else Withdrawal.SAFE

    def rebuild(
        self,
        orders: Iterable[tuple[str, OrderRecord | None]],
        owns: Callable[[str], bool],
        now_ms: int,
        busy: Callable[[str], bool],
    ) -> tuple[RebuildResult, list[Fired]]:
        """Reload held orders of owned partitions from the table; drop the others.

        ``busy(order_id)``: a command of this order is in flight here (already dispatched),
        so it must not be queued again.
        """
        result = RebuildResult()
        fired: list[Fired] = []
        for order_id in list(self.engine.order_ids()):
            if not owns(order_id):
                self.engine.remove(order_id)
                result.dropped += 1
        for order_id in self.queues.order_ids():
            if not owns(order_id):
                self.queues.remove(order_id)
                result.dropped += 1
        for order_id, order in orders:
            if order is None or not owns(order_id):
                continue
            if order.status is OrderStatus.WAITING and order_id not in self.engine:
                try:
                    due = self.hold(order, now_ms)
                except (ValidationError, ValueError) as exc:
                    # Stored before a schema change, or corrupted: never crash the worker.
                    log.error("held.bad_conditions", order_id=order_id, error=str(exc))
                    continue
                result.waiting += 1
                if due is not None:
                    fired.append(due)
            elif (
                order.status is OrderStatus.QUEUED
                and order_id not in self.queues
                and not busy(order_id)
                # A cancel was accepted for it: never dispatched again; the sweep of
                # unanswered cancels ends it (oms.streams.sweep).
                and order.cancel_request_id is None
            ):
                self.queues.push(order, uncertain=True)
                result.queued += 1
        self._on_change()
        return result, fired

    def statistics(self, now_ms: int) -> dict[str, Any]:
        stats = self.queues.statistics(now_ms)
        stats["waiting"] = len(self.engine)
        stats["ticks_seen"] = self.engine.ticks
        stats["triggered_total"] = self.engine.fired
        return stats
