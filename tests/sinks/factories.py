"""Records for sink tests: order events with snapshots, execution reports, ticks."""

from __future__ import annotations

from oms.schemas import (
    Direction,
    ExecutionReport,
    Fill,
    MarketTick,
    OrderEvent,
    OrderEventType,
    OrderRecord,
    OrderStatus,
    OrderType,
    ReportSource,
    Topic,
)
from oms.settings import Settings
from oms.sinks.batch import Batch, Message, TickSampler

T0 = 1_790_000_000_000  # fixed epoch ms so assertions don't depend on the clock

LIFECYCLE = [
    (OrderEventType.ACCEPTED, OrderStatus.PENDING, 0.0),
    (OrderEventType.SUBMITTED, OrderStatus.SUBMITTED, 0.0),
    (OrderEventType.OPEN, OrderStatus.OPEN, 0.0),
    (OrderEventType.PARTIALLY_FILLED, OrderStatus.PARTIALLY_FILLED, 10.0),
    (OrderEventType.FILLED, OrderStatus.FILLED, 20.0),
]


def order_event(
    order_id: str,
    version: int,
    status: OrderStatus,
    event_type: OrderEventType,
    *,
    account_id: str = "acct-1",
    instrument: str = "BTC-PERPETUAL",
    filled: float = 0.0,
    created_at: int = T0,
) -> OrderEvent:
    """An event whose snapshot is the order at ``version``."""
    snapshot = OrderRecord(
        order_id=order_id,
        request_id=f"req-{order_id}",
        account_id=account_id,
        instrument_name=instrument,
        direction=Direction.BUY,
        order_type=OrderType.LIMIT,
        amount=20.0,
        price=50_000.0,
        status=status,
        filled_amount=filled,
        average_price=50_000.0 if filled else None,
        metadata={"strategy": "t"},
        created_at=created_at,
        updated_at=created_at + version,
        version=version,
    )
    return OrderEvent(
        event_id=f"{order_id}:{version}",
        event_type=event_type,
        order_id=order_id,
        account_id=account_id,
        instrument_name=instrument,
        status=status,
        filled_amount=filled,
        version=version,
        timestamp=created_at + version,
        order=snapshot,
    )


def lifecycle(order_id: str, **kwargs: object) -> list[OrderEvent]:
    """accepted -> submitted -> open -> partially filled -> filled, versions 1..5."""
    return [
        order_event(order_id, v, status, etype, filled=filled, **kwargs)  # type: ignore[arg-type]
        for v, (etype, status, filled) in enumerate(LIFECYCLE, start=1)
    ]


def fill_report(
    order_id: str,
    trade_ids: list[str],
    *,
    source: ReportSource = ReportSource.SUBSCRIPTION,
    account_id: str = "acct-1",
) -> ExecutionReport:
    """A report carrying one 10-unit fill per trade id."""
    return ExecutionReport(
        report_id=f"{order_id}:{source.value}:{'-'.join(trade_ids)}",
        order_id=order_id,
        account_id=account_id,
        source=source,
        instrument_name="BTC-PERPETUAL",
        direction=Direction.BUY,
        filled_amount=10.0 * len(trade_ids),
        exchange_timestamp=T0,
        fills=[
            Fill(trade_id=t, amount=10.0, price=50_000.0, fee=0.01, timestamp=T0 + i)
            for i, t in enumerate(trade_ids)
        ],
    )


def tick(instrument: str, ts: int, price: float = 50_000.0) -> MarketTick:
    return MarketTick(instrument_name=instrument, timestamp=ts, last_price=price, received_at=ts)


def batch(settings: Settings, records: list[tuple[Topic, bytes]], *, start: int = 0) -> Batch:
    """A batch of records on partition 0 at consecutive offsets from ``start``."""
    b = Batch.for_settings(settings, TickSampler(settings.sink.tick_sample_ms))
    for i, (topic, value) in enumerate(records):
        b.add(Message(settings.topic(topic.value), 0, start + i, value))
    return b
