"""Helpers for tests and benchmarks that talk to a real broker.

``tests/conftest.py`` builds its fixtures from these; benchmarks import them directly.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from oms.kafka.reading import read_messages, topic_partitions
from oms.kafka.security import KafkaConnection, as_connection
from oms.settings import (
    ExchangeSettings,
    KafkaSettings,
    PaperExchangeSettings,
    PositionSettings,
    Settings,
    SinkSettings,
    WorkerSettings,
)
from oms_dev.devstack.net import free_port


def unique_suffix(label: str = "") -> str:
    """A short name part unique to this run: ``<label>-<8 hex>`` (label sanitised, cut to 40)."""
    clean = re.sub(r"[^a-zA-Z0-9]+", "-", label).strip("-").lower()[:40]
    tail = uuid.uuid4().hex[:8]
    return f"{clean}-{tail}" if clean else tail


def isolated_settings(
    bootstrap: str,
    data_dir: Path,
    *,
    label: str = "",
    partitions: int = 8,
    **overrides: Any,
) -> Settings:
    """Settings that share nothing with another test or a developer's stack.

    Unique topic prefix and Faust app id (so consumer groups and changelogs are private),
    free ports for the worker web server, the paper exchange and the sink's query endpoint,
    and its own data dir. ``overrides`` are top-level Settings fields.
    """
    suffix = unique_suffix(label)
    paper_port = free_port()
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "kafka": KafkaSettings(
            bootstrap=bootstrap, topic_prefix=f"t.{suffix}.", partitions=partitions
        ),
        "worker": WorkerSettings(app_id=f"oms-{suffix}", web_port=free_port()),
        "paper": PaperExchangeSettings(port=paper_port),
        "exchange": ExchangeSettings(url=f"ws://127.0.0.1:{paper_port}/ws/api/v2"),
        "sink": SinkSettings(query_port=free_port()),
        "positions": PositionSettings(web_port=free_port()),
        "secrets_file": data_dir / "secrets.json",
    }
    values.update(overrides)
    return Settings(**values)


def _dumps(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if hasattr(value, "model_dump_json"):  # pydantic models of oms.schemas
        return str(value.model_dump_json()).encode()
    return orjson.dumps(value)


def _key(key: str | bytes | None) -> bytes | None:
    return key.encode() if isinstance(key, str) else key


async def produce_json(
    kafka: KafkaConnection | str,
    topic: str,
    messages: Iterable[tuple[str | bytes | None, Any]],
) -> int:
    """Send ``(key, value)`` pairs as JSON (dicts or pydantic models); return the count.
    ``kafka``: a connection, or a plaintext broker's ``host:port``."""
    producer = AIOKafkaProducer(**as_connection(kafka).aiokafka(acks="all", linger_ms=5))
    await producer.start()
    n = 0
    try:
        futures = []
        for key, value in messages:
            futures.append(await producer.send(topic, _dumps(value), key=_key(key)))
            n += 1
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return n


async def consume_json(
    kafka: KafkaConnection | str,
    topic: str,
    count: int | None = None,
    *,
    timeout_s: float = 30.0,
    from_beginning: bool = True,
) -> list[tuple[str | None, Any]]:
    """Read ``(key, decoded JSON value)`` from every partition of a topic, without a group.

    Stops once at least ``count`` messages arrived (all of the last batch are returned;
    raises TimeoutError if fewer came within ``timeout_s``),
    or, with ``count=None``, returns whatever arrived by the time the topic is drained
    (everything up to the end offsets at call time).
    """
    consumer = AIOKafkaConsumer(
        **as_connection(kafka).aiokafka(
            enable_auto_commit=False,
            auto_offset_reset="earliest" if from_beginning else "latest",
        )
    )
    await consumer.start()
    out: list[tuple[str | None, Any]] = []
    try:
        deadline = time.monotonic() + timeout_s
        tps = await topic_partitions(consumer, topic, wait_s=timeout_s)
        if not tps:
            raise TimeoutError(f"topic {topic} not found")
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        end = await consumer.end_offsets(tps) if count is None else None
        while True:
            if count is not None and len(out) >= count:
                return out
            if end is not None and await _all_at_end(consumer, end):
                return out
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if count is None:
                    return out
                raise TimeoutError(f"{len(out)} of {count} messages from {topic} in {timeout_s}s")
            batch = await consumer.getmany(timeout_ms=int(min(remaining, 0.5) * 1000))
            for records in batch.values():
                for r in records:
                    key = r.key.decode() if r.key is not None else None
                    out.append((key, orjson.loads(r.value) if r.value is not None else None))
    finally:
        await consumer.stop()


async def _all_at_end(consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> bool:
    for tp, offset in end.items():
        if await consumer.position(tp) < offset:
            return False
    return True


@dataclass(frozen=True)
class TopicRecord:
    """One record as a reader of its topic sees it."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp: int


async def read_records(kafka: KafkaConnection | str, topic: str) -> list[TopicRecord]:
    """Every record of ``topic`` up to its end offsets now, with partition, headers and
    timestamp, in offset order within each partition (``[]`` when the topic is missing)."""
    return [
        TopicRecord(m.partition, m.offset, m.key, m.value, tuple(m.headers), m.timestamp)
        for m in await read_messages(kafka, topic)
    ]


async def wait_for_records(
    kafka: KafkaConnection | str,
    topic: str,
    done: Callable[[list[TopicRecord]], bool],
    *,
    within_s: float = 60.0,
    poll_s: float = 0.5,
) -> list[TopicRecord]:
    """The records of ``topic`` once ``done`` says they are complete; TimeoutError (saying how
    many there were) after ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        records = await read_records(kafka, topic)
        if done(records):
            return records
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topic}: {len(records)} records, not complete in {within_s}s")
        await asyncio.sleep(poll_s)
