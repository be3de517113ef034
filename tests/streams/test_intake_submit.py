"""Intake applies the domain's one decision: typed parameters parsed from ``metadata`` once,
then the execution strategy, recorded with its reason on the order's first event."""

from __future__ import annotations

from typing import Any

from oms.schemas import (
    OrderEvent,
    OrderEventType,
    OrderRecord,
    OrderRequest,
    OrderStatus,
    ReasonCode,
)
from oms.schemas.commands import CommandOrigin, OrderCommand, OriginKind
from oms.settings import QueueSettings
from oms.streams.intake import IntakeContext, apply_command
from tests.orders.factories import BTC_PERPETUAL

PERP = BTC_PERPETUAL


class Executor:
    """Records what intake sends to the exchange."""

    def __init__(self) -> None:
        self.submitted: list[OrderRecord] = []

    async def submit(self, order: OrderRecord, *, check_label_first: bool) -> None:
        self.submitted.append(order)


async def _submit(**fields: Any) -> tuple[dict[str, OrderRecord], list[OrderEvent], Executor]:
    table: dict[str, OrderRecord] = {}
    events: list[OrderEvent] = []
    executor = Executor()

    async def emit(event: OrderEvent) -> None:
        events.append(event)

    async def nothing(*_: Any) -> None:
        return None

    ctx = IntakeContext(
        orders=table,
        emit=emit,
        dead_letter=nothing,
        source_topic="order-commands",
        executor=executor,  # type: ignore[arg-type]
        instrument=lambda name: PERP if name == PERP.instrument_name else None,
        account_known=lambda account: True,
        held=None,  # type: ignore[arg-type]
        queue_settings=QueueSettings(),
        on_fired=nothing,
        publish_trigger=nothing,
    )
    request = OrderRequest.model_validate(
        {
            "request_id": "r-1",
            "account_id": "acc",
            "instrument_name": PERP.instrument_name,
            "direction": "buy",
            "amount": 30,
            "order_type": "market",
            **fields,
        }
    )
    command = OrderCommand(
        origin=CommandOrigin(kind=OriginKind.EXTERNAL, source="0:1"), request=request
    )
    await apply_command(ctx, command, replayed=False)
    return table, events, executor


async def test_a_twap_parent_is_worked_not_sent() -> None:
    table, events, executor = await _submit(
        metadata={"algo": "twap", "twap_duration": 6, "twap_slices": 3}
    )
    [event] = events
    assert event.event_type is OrderEventType.OPEN
    assert event.details["strategy"] == "sliced" and event.details["algo"] == "twap"
    assert "3 slices" in event.details["execution_reason"]
    assert executor.submitted == []
    # The record keeps the wire keys, and the lot the timer slices by.
    metadata = table[event.order_id].metadata
    assert (metadata["twap_slices"], metadata["twap_duration"], metadata["twap_lot"]) == (3, 6, 10)


async def test_a_bad_parameter_rejects_the_order_naming_it() -> None:
    table, events, executor = await _submit(
        metadata={"algo": "twap", "twap_duration": 6, "twap_slices": "three"}
    )
    [event] = events
    assert event.event_type is OrderEventType.REJECTED
    assert event.reason_code is ReasonCode.SCHEMA_INVALID
    assert event.message is not None and "metadata.twap_slices" in event.message
    assert table[event.order_id].status is OrderStatus.REJECTED and executor.submitted == []


async def test_an_immediate_order_is_sent_with_its_strategy_and_reason() -> None:
    _, events, executor = await _submit()
    [event] = events
    assert event.event_type is OrderEventType.SUBMITTED
    assert event.details["strategy"] == event.details["execution_strategy"] == "immediate"
    assert event.details["execution_reason"]
    assert [order.order_id for order in executor.submitted] == [event.order_id]
