"""Held orders rebuilt from the table after a takeover."""

from __future__ import annotations

from oms.conditions.engine import TriggerEngine
from oms.orders.priority_queue import PriorityQueues
from oms.schemas import OrderStatus
from oms.streams.held_orders import HeldOrders
from tests.orders.factories import order_record


def test_a_queued_order_with_an_accepted_cancel_is_not_queued_again() -> None:
    """Its cancel was accepted before the takeover: dispatching it would send an order the
    client cancelled. The sweep of unanswered cancels ends it instead."""
    queues = PriorityQueues(["high", "normal", "low"])
    held = HeldOrders(TriggerEngine(lambda *_: None), queues, on_change=lambda: None)
    orders = [
        ("q-1", order_record(OrderStatus.QUEUED, order_id="q-1")),
        ("q-2", order_record(OrderStatus.QUEUED, order_id="q-2", cancel_request_id="c-2")),
    ]
    result, fired = held.rebuild(orders, owns=lambda _: True, now_ms=0, busy=lambda _: False)
    assert result.queued == 1 and fired == []
    assert "q-1" in held.queues and "q-2" not in held.queues
