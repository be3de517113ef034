"""``oms bench notify``: order events through the notifier (Kafka, rules, grouping) to the
console channel, against a raw Kafka consume of the same events in the same run.

The events (fills, partial fills, rejections, cancels over 100 accounts and 4 instruments)
are produced first; then the notifier starts and the clock runs from its first fetched batch
to the moment every event is committed (routed into a group whose state is flushed to its
compacted topic). ``messages_sent`` counts the digests the console channel then delivered.
Baseline: a plain aiokafka consumer reading the same topic from the start, no parsing.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from oms.kafka.admin import ensure_topics
from oms.kafka.security import as_connection
from oms.notify.channels import ConsoleChannel
from oms.notify.service import Notifier
from oms.notify.settings_io import build_settings, publish_settings
from oms.schemas import Direction, OrderEvent, OrderEventType, OrderStatus, Topic
from oms.settings import Settings
from oms_dev.devstack.kafka import KafkaBroker
from oms_dev.harness import isolated_settings

TYPES = (
    (OrderEventType.FILLED, OrderStatus.FILLED),
    (OrderEventType.PARTIALLY_FILLED, OrderStatus.PARTIALLY_FILLED),
    (OrderEventType.CANCELLED, OrderStatus.CANCELLED),
    (OrderEventType.REJECTED, OrderStatus.REJECTED),
)
INSTRUMENTS = ("BTC-PERPETUAL", "ETH-PERPETUAL", "BTC-27DEC26", "ETH-27DEC26")


@dataclass
class NotifyBenchConfig:
    events: int = 50_000
    accounts: int = 100
    partitions: int = 8
    group_wait_s: float = 1.0
    bootstrap: str | None = None  # an existing broker; None starts one
    timeout_s: float = 300.0


def make_events(n: int, accounts: int, run: str) -> list[OrderEvent]:
    events = []
    for i in range(n):
        event_type, status = TYPES[i % len(TYPES)]
        order_id = f"o-{run}-{i}"
        events.append(
            OrderEvent(
                event_id=f"{order_id}:2:{event_type.value}", event_type=event_type,
                order_id=order_id, account_id=f"bench-{i % accounts}",
                instrument_name=INSTRUMENTS[(i // len(TYPES)) % len(INSTRUMENTS)],
                status=status, direction=Direction.BUY if i % 2 else Direction.SELL,
                amount=10.0 * (1 + i % 50), price=60_000.0, filled_amount=10.0,
                average_price=60_000.0, version=2,
            )
        )  # fmt: skip
    return events


async def _produce(bootstrap: str, topic: str, events: list[OrderEvent]) -> None:
    producer = AIOKafkaProducer(**as_connection(bootstrap).aiokafka(), linger_ms=20, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(topic, e.to_bytes(), key=e.order_id.encode()) for e in events
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def raw_consume_rate(bootstrap: str, topic: str, n: int) -> float:
    """Messages/s of a plain consumer group reading ``n`` messages from the start."""
    consumer = AIOKafkaConsumer(
        topic, **as_connection(bootstrap).aiokafka(), group_id=f"raw-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest", enable_auto_commit=False,
        fetch_max_bytes=16 * 1024 * 1024, max_poll_records=2_000,
    )  # fmt: skip
    await consumer.start()
    try:
        got = 0
        start: float | None = None
        while got < n:
            batch = await consumer.getmany(timeout_ms=500, max_records=2_000)
            if batch and start is None:
                start = time.perf_counter()
            got += sum(len(m) for m in batch.values())
        assert start is not None
        return n / (time.perf_counter() - start)
    finally:
        await consumer.stop()


async def _run(
    config: NotifyBenchConfig, bootstrap: str, base: Path, status: Callable[[str], None]
) -> dict[str, Any]:
    settings: Settings = isolated_settings(
        base, bootstrap, ["demo"], partitions=config.partitions, label="nbench"
    )
    settings = settings.model_copy(
        update={"notify": settings.notify.model_copy(update={"web_port": 0})}
    )
    await ensure_topics(settings)
    status(f"storing settings of {config.accounts} accounts")
    rule = {
        "name": "digest",
        "event_types": ["filled", "partially_filled", "cancelled", "rejected"],
        "group_by": ["event_type", "instrument_name"],
        "group_wait_s": config.group_wait_s,
    }
    for a in range(config.accounts):
        await publish_settings(
            settings, build_settings(f"bench-{a}", channels=["console"], rules=[rule])
        )
    topic = settings.topic(Topic.ORDER_EVENTS)
    events = make_events(config.events, config.accounts, uuid.uuid4().hex[:6])
    status(f"producing {config.events} order events")
    await _produce(bootstrap, topic, events)
    console = ConsoleChannel("console", quiet=True)
    notifier = Notifier(settings, console=console, web_port=0, monitor=False)
    status("notifier consuming")
    await notifier.start()
    try:
        deadline = time.monotonic() + config.timeout_s
        # Polled: the figures are the notifier's own counters (no event to wait on).
        while notifier.counters["consumed"] == 0 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        t0 = time.perf_counter()
        while notifier.counters["committed"] < config.events and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - t0
        committed = notifier.counters["committed"]
        status("waiting for the digests")
        while (notifier.pendings or notifier.inflight) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        stats = notifier.stats()
    finally:
        await notifier.stop()
    status("raw Kafka consume of the same events")
    baseline = await raw_consume_rate(bootstrap, topic, config.events)
    rate = committed / elapsed if elapsed > 0 else 0.0
    return {
        "events": config.events,
        "events_committed": committed,
        "seconds": round(elapsed, 3),
        "events_per_s": round(rate, 1),
        "messages_sent": console.sent,
        "notices": stats["counters"].get("notices", 0),
        "success_rate": stats["delivery"]["success_rate"],
        "accounts": config.accounts,
        "partitions": config.partitions,
        "baseline_raw_consume_per_s": round(baseline, 1),
        "ratio": round(rate / baseline, 3) if baseline else None,
    }


async def run_notify_bench(
    config: NotifyBenchConfig, on_status: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the benchmark and return its figures."""
    base = Path(tempfile.mkdtemp(prefix="oms-bench-notify-"))
    if config.bootstrap:
        return await _run(config, config.bootstrap, base, on_status)
    broker = KafkaBroker.isolated(base / "kafka", partitions=config.partitions)
    on_status("starting Kafka")
    await broker.astart(die_with_parent=True)
    try:
        return await _run(config, broker.bootstrap, base, on_status)
    finally:
        await broker.astop()


def dumps(result: dict[str, Any]) -> str:
    return orjson.dumps(result).decode()
