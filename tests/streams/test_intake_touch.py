"""Intake records the touch at placement (the worker's market cache's newest tick) in a new
limit order's metadata, for the fill statistics of ``oms tune``; a client cannot set it."""

from __future__ import annotations

from typing import Any

from oms.schemas import MarketTick, OrderEvent, OrderRecord, OrderRequest
from oms.schemas.commands import CommandOrigin, OrderCommand, OriginKind
from oms.settings import QueueSettings
from oms.streams.intake import IntakeContext, apply_command
from tests.orders.factories import BTC_PERPETUAL

PERP = BTC_PERPETUAL
TICK = MarketTick(
    instrument_name=PERP.instrument_name,
    timestamp=1_790_000_000_000,
    best_bid_price=50_000.0,
    best_bid_amount=1_200.0,
    best_ask_price=50_010.0,
    best_ask_amount=800.0,
)


class Executor:
    def __init__(self) -> None:
        self.submitted: list[OrderRecord] = []

    async def submit(self, order: OrderRecord, *, check_label_first: bool) -> None:
        self.submitted.append(order)


async def _submit(ticks: dict[str, MarketTick], **fields: Any) -> OrderRecord:
    table: dict[str, OrderRecord] = {}
    events: list[OrderEvent] = []

    async def emit(event: OrderEvent) -> None:
        events.append(event)

    async def nothing(*_: Any) -> None:
        return None

    ctx = IntakeContext(
        orders=table,
        emit=emit,
        dead_letter=nothing,
        source_topic="order-commands",
        executor=Executor(),  # type: ignore[arg-type]
        instrument=lambda name: PERP if name == PERP.instrument_name else None,
        account_known=lambda account: True,
        held=None,  # type: ignore[arg-type]
        queue_settings=QueueSettings(),
        on_fired=nothing,
        publish_trigger=nothing,
        touch=ticks.get,
    )
    request = OrderRequest.model_validate(
        {
            "request_id": "r-1",
            "account_id": "acc",
            "instrument_name": PERP.instrument_name,
            "direction": "buy",
            "amount": 30,
            **fields,
        }
    )
    origin = CommandOrigin(kind=OriginKind.EXTERNAL, source="0:1")
    await apply_command(ctx, OrderCommand(origin=origin, request=request), replayed=False)
    [order] = table.values()
    return order


async def test_a_limit_order_records_the_touch_and_tick_it_was_placed_at() -> None:
    forged = {"touch_bid": 1.0, "tick_size": 99.0, "note": "kept"}
    order = await _submit(
        {PERP.instrument_name: TICK},
        order_type="limit",
        price=49_990.0,
        post_only=True,
        metadata=forged,
    )
    assert order.metadata == {
        "note": "kept",
        "touch_bid": 50_000.0,
        "touch_ask": 50_010.0,
        "touch_bid_amount": 1_200.0,
        "touch_ask_amount": 800.0,
        "touch_at": TICK.timestamp,
        "tick_size": PERP.tick_size,
    }


async def test_without_a_tick_a_clients_touch_keys_are_dropped_and_market_orders_get_none() -> None:
    limit = await _submit(
        {}, order_type="limit", price=49_990.0, metadata={"touch_bid": 1.0, "note": "kept"}
    )
    assert limit.metadata == {"note": "kept"}
    market = await _submit({PERP.instrument_name: TICK}, order_type="market")
    assert market.metadata == {}


async def test_a_limit_order_no_statistic_reads_carries_no_touch() -> None:
    # Neither post-only nor an algorithm's child: the fill and slippage statistics never
    # read it, so its records do not carry the keys (a client's are still dropped).
    order = await _submit(
        {PERP.instrument_name: TICK},
        order_type="limit",
        price=49_990.0,
        metadata={"touch_bid": 1.0, "note": "kept"},
    )
    assert order.metadata == {"note": "kept"}
