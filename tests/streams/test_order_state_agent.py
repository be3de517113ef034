"""The order-state agent's handling of undecodable reports (no Kafka needed)."""

from __future__ import annotations

from oms.schemas import DeadLetter, OrderEvent, ReasonCode
from oms.streams.context import AgentContext
from oms.streams.order_state import handle_report


async def test_undecodable_report_is_dead_lettered_with_its_reason() -> None:
    letters: list[DeadLetter] = []
    events: list[OrderEvent] = []

    async def dead_letter(letter: DeadLetter) -> None:
        letters.append(letter)

    async def emit(event: OrderEvent) -> None:
        events.append(event)

    ctx = AgentContext(orders={}, emit=emit, dead_letter=dead_letter, source_topic="reports")
    for raw in (None, b"", b"{broken", b'{"order_id": 5}'):
        await handle_report(ctx, raw, key=b"k", partition=3, offset=7)
    assert [d.reason_code for d in letters] == [
        ReasonCode.TOMBSTONE,
        ReasonCode.EMPTY_PAYLOAD,
        ReasonCode.MALFORMED_JSON,
        ReasonCode.SCHEMA_INVALID,
    ]
    assert letters[0].payload == "" and letters[0].payload_size == 0
    assert letters[2].payload == "{broken" and letters[2].source_partition == 3
    assert all(d.source_topic == "reports" and d.error.startswith("worker: ") for d in letters)
    assert ctx.counters["dead_letters"] == 4 and events == []


async def test_a_lost_order_is_cancelled_with_its_emergency_and_a_replay_raises_it_again() -> (
    None
):
    from oms.lifecycle.reconcile import lost_report
    from oms.schemas import OrderEventType, OrderStatus
    from oms.streams.order_state import OrderStateContext
    from tests.orders.factories import order_record

    events: list[OrderEvent] = []

    async def emit(event: OrderEvent) -> None:
        events.append(event)

    async def nothing(*args: object) -> None:
        return None

    order = order_record(OrderStatus.OPEN, exchange_order_id="BTC-7")
    ctx = OrderStateContext(
        orders={order.order_id: order}, emit=emit, dead_letter=nothing,
        source_topic="reports", publish_trigger=nothing,
    )  # fmt: skip
    raw = lost_report(order, 3).to_bytes()
    await handle_report(ctx, raw, key=b"o-1", partition=0, offset=1)
    cancelled, alert = events
    assert cancelled.event_type is OrderEventType.CANCELLED
    assert cancelled.reason_code is ReasonCode.LOST_AT_VENUE
    assert alert.event_type is OrderEventType.SYSTEM_ERROR
    assert alert.details["alert_id"] == "lost_at_venue:o-1"
    assert ctx.orders["o-1"].status is OrderStatus.CANCELLED

    # A successor replaying the report re-announces both (same ids: consumers dedupe).
    events.clear()
    await handle_report(ctx, raw, key=b"o-1", partition=0, offset=1, replayed=True)
    assert [e.event_id for e in events] == [cancelled.event_id, alert.event_id]
