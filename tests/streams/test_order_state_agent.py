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
