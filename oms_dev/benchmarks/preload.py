"""A worker's table full of ended orders before it starts, for the benchmarks.

The orders are written as records of the ``orders`` table's changelog, exactly as a worker
writes them (JSON key, the record's JSON, the order's partition), and the worker restores them
when it starts: the state of a worker restarted after a day of trading. This is the fastest
honest way to get there. Publishing the same number of requests through the pipeline would
take longer than the retention of ended orders (at a few hundred orders/s, 200,000 take more
than ten minutes), so the first would leave the table before the last arrived.

Each is a filled limit order of 10 BTC-PERPETUAL that ended when it was written (so it stays
for the worker's whole ``terminal_retention_s``), with one trade, an exchange id and a few
versions behind it, like an order the worker filled itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import orjson
from aiokafka import AIOKafkaProducer

from oms.kafka.admin import ensure_topics
from oms.kafka.faust_worker import worker_topics
from oms.kafka.partitioning import partition_of
from oms.kafka.security import KafkaConnection
from oms.schemas import Direction, OrderRecord, OrderStatus, OrderType, derive_order_id, now_ms
from oms.settings import Settings
from oms.streams.app import create_app


def ended_order(account_id: str, request_id: str, at: int, index: int) -> OrderRecord:
    """A filled limit order as the worker records it."""
    order_id = derive_order_id(account_id, request_id)
    return OrderRecord(
        order_id=order_id,
        request_id=request_id,
        account_id=account_id,
        instrument_name="BTC-PERPETUAL",
        direction=Direction.BUY if index % 2 == 0 else Direction.SELL,
        order_type=OrderType.LIMIT,
        amount=10.0,
        price=50_000.0,
        status=OrderStatus.FILLED,
        exchange_order_id=f"PRELOAD-{index}",
        filled_amount=10.0,
        average_price=50_000.0,
        fee=0.0001,
        created_at=at,
        submitted_at=at,
        updated_at=at,
        exchange_updated_at=at,
        version=4,
        trade_ids=[f"preload-trade-{index}"],
    )


async def preload_ended_orders(
    settings: Settings,
    count: int,
    accounts: list[str],
    on_progress: Callable[[int], None] | None = None,
) -> str:
    """Write ``count`` ended orders to the worker's table changelog (before it starts);
    returns the changelog topic."""
    app = create_app(settings)
    topic: str = app.orders.changelog_topic.get_topic_name()
    await ensure_topics(settings, worker_topics(app.app, settings))
    partitions = settings.kafka.partitions
    producer = AIOKafkaProducer(
        **KafkaConnection.from_settings(settings).aiokafka(
            linger_ms=20, max_batch_size=1 << 20, acks="all"
        )
    )
    await producer.start()
    try:
        at = now_ms()
        run = uuid.uuid4().hex[:6]
        for i in range(count):
            order = ended_order(accounts[i % len(accounts)], f"preload-{run}-{i}", at, i)
            await producer.send(
                topic,
                order.to_bytes(),
                # Faust writes a table's str keys as JSON strings.
                key=orjson.dumps(order.order_id),
                partition=partition_of(order.order_id, partitions),
            )
            if on_progress is not None and i % 10_000 == 0:
                on_progress(i)
        await producer.flush()
    finally:
        await producer.stop()
    return topic
