"""The worker's tables queue their changelog writes and hand them to the producer in order,
each on its key's partition, at the latest when the producer is flushed (as Faust does
before committing input offsets); what they write is what Faust reads back on recovery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from oms.kafka.admin import ensure_topics
from oms.kafka.faust_worker import worker_topics
from oms.kafka.partitioning import partition_of
from oms.kafka.tables import KeyPartitionedTable
from oms.schemas import OrderRecord
from oms.settings import Settings
from oms.streams.app import OmsApp, create_app
from tests.conftest import MakeSettings
from tests.orders.factories import order_record


async def _changelog(settings: Settings, topic: str, expected: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.kafka.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        async with asyncio.timeout(30):
            while len(records) < expected:
                batch = await consumer.getmany(timeout_ms=500)
                for messages in batch.values():
                    records.extend(messages)
        return sorted(records, key=lambda m: (m.partition, m.offset))
    finally:
        await consumer.stop()


@pytest.fixture
async def worker_app(make_settings: MakeSettings) -> AsyncIterator[tuple[Settings, OmsApp]]:
    """The order worker's app, its changelogs created and its producer running."""
    settings = await make_settings()
    oms = create_app(settings)
    await ensure_topics(settings, worker_topics(oms.app, settings))
    assert isinstance(oms.orders, KeyPartitionedTable)
    await oms.app.producer.start()
    try:
        yield settings, oms
    finally:
        await oms.app.producer.stop()


async def test_writes_reach_the_changelog_in_order_on_their_key_s_partition_when_flushed(
    worker_app: tuple[Settings, OmsApp],
) -> None:
    settings, oms = worker_app
    table = oms.orders
    assert isinstance(table, KeyPartitionedTable)
    first = order_record(order_id="o-tables-1", amount=10.0)
    second = order_record(order_id="o-tables-2", amount=20.0)
    # Written from outside any agent, as a command's task records an exchange answer.
    table[first.order_id] = first
    table[first.order_id] = first.model_copy(update={"amount": 11.0, "version": 2})
    table[second.order_id] = second
    del table[first.order_id]
    assert table.changelog_queued == 4
    await oms.app.producer.flush()  # what Faust awaits before it commits input offsets
    assert table.changelog_queued == 0
    assert table.changelog_writes == 4

    records = await _changelog(settings, table.changelog_topic.get_topic_name(), 4)
    by_key: dict[str, list[Any]] = {}
    for message in records:
        by_key.setdefault(message.key.decode(), []).append(message)
    # Faust's key codec: the str key as JSON, which its recovery reads back.
    assert set(by_key) == {f'"{first.order_id}"', f'"{second.order_id}"'}
    firsts = by_key[f'"{first.order_id}"']
    assert {m.partition for m in firsts} == {
        partition_of(first.order_id, settings.kafka.partitions)
    }
    # Set, set again, deleted: in the order written, the last a tombstone.
    assert [OrderRecord.from_bytes(m.value).amount for m in firsts[:2]] == [10.0, 11.0]
    assert firsts[2].value is None
    (only,) = by_key[f'"{second.order_id}"']
    assert only.partition == partition_of(second.order_id, settings.kafka.partitions)
    assert OrderRecord.from_bytes(only.value) == second
    # Faust's own decoding, as when a worker restores the table from its changelog.
    serializers = oms.app.serializers
    assert serializers.loads_key(table.key_type, only.key, serializer=table.key_serializer) == (
        second.order_id
    )
    restored = serializers.loads_value(
        table.value_type, only.value, serializer=table.value_serializer
    )
    assert restored == second


async def test_a_running_table_hands_its_writes_over_without_waiting_for_a_flush(
    worker_app: tuple[Settings, OmsApp],
) -> None:
    settings, oms = worker_app
    table = oms.orders
    assert isinstance(table, KeyPartitionedTable)
    await table.start()
    try:
        record = order_record(order_id="o-tables-3")
        table[record.order_id] = record
        async with asyncio.timeout(10):
            while table.changelog_writes < 1:  # noqa: ASYNC110 - no event exists
                await asyncio.sleep(0.01)
        assert table.changelog_queued == 0
    finally:
        await table.stop()
    (message,) = await _changelog(settings, table.changelog_topic.get_topic_name(), 1)
    assert OrderRecord.from_bytes(message.value) == record
