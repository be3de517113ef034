"""The sink's confluent-kafka consumer against the real test broker: delivery, commits,
pause/resume, and a revoke that flushes and commits before its partitions move."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from oms.settings import Settings
from oms.sinks import service as service_module
from oms.sinks.batch import Message
from oms.sinks.consumer import Partition, SinkConsumer
from oms.sinks.service import SinkService

from .test_service_kafka import (
    MakeSettings,
    committed_lag,
    order_traffic,
    produce,
    sink_settings,
    wait_for_totals,
)

pytestmark = pytest.mark.kafka


async def no_revoke(partitions: list[Partition]) -> None:
    return None


async def consume_until(
    consumer: SinkConsumer, done: Callable[[list[Message]], bool], within: float = 60.0
) -> list[Message]:
    got: list[Message] = []
    deadline = time.monotonic() + within
    while not done(got):
        assert time.monotonic() < deadline, f"{len(got)} messages so far"
        got += await consumer.consume(100, 0.2)
    return got


async def test_delivers_every_message_and_resumes_after_the_commit(
    make_settings: MakeSettings, kafka_io: Any
) -> None:
    settings: Settings = await make_settings()
    topic = settings.topic("order-events")
    await kafka_io.produce(topic, [(f"k{i}", {"i": i}) for i in range(30)])
    group = f"test-consumer-{uuid.uuid4().hex[:6]}"

    first = SinkConsumer(settings.kafka.bootstrap, group, on_revoke=no_revoke)
    await first.start([topic])
    try:
        got = await consume_until(first, lambda got: len(got) >= 30)
        assert sorted(orjson.loads(m.value or b"")["i"] for m in got) == list(range(30))
        assert all(m.topic == topic for m in got)
        # Commit all but the last message of every partition.
        ends: dict[Partition, int] = {}
        for m in got:
            ends[(m.topic, m.partition)] = max(ends.get((m.topic, m.partition), 0), m.offset)
        await first.commit({tp: last for tp, last in ends.items()})
    finally:
        await first.close()

    # The next member of the group starts at the committed offsets: only the last ones.
    second = SinkConsumer(settings.kafka.bootstrap, group, on_revoke=no_revoke)
    await second.start([topic])
    try:
        again = await consume_until(second, lambda got: len(got) >= len(ends))
        await asyncio.sleep(1.0)
        again += await second.consume(100, 0.5)
        assert sorted((m.topic, m.partition, m.offset) for m in again) == sorted(
            (t, p, last) for (t, p), last in ends.items()
        )
    finally:
        await second.close()


async def test_paused_partitions_deliver_nothing_until_resumed(
    make_settings: MakeSettings, kafka_io: Any
) -> None:
    settings: Settings = await make_settings(partitions=2)
    topic = settings.topic("order-events")
    consumer = SinkConsumer(
        settings.kafka.bootstrap, f"test-pause-{uuid.uuid4().hex[:6]}", on_revoke=no_revoke
    )
    await consumer.start([topic])
    try:
        deadline = time.monotonic() + 60
        while len(consumer.assignment()) < 2:  # partitions come with consume calls
            assert time.monotonic() < deadline
            assert await consumer.consume(10, 0.2) == []
        await consumer.pause(consumer.assignment())
        assert consumer.paused() == {(topic, 0), (topic, 1)}
        await kafka_io.produce(topic, [(f"k{i}", {"i": i}) for i in range(10)])
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert await consumer.consume(10, 0.2) == []
        await consumer.resume(consumer.paused())
        assert consumer.paused() == set()
        got = await consume_until(consumer, lambda got: len(got) >= 10)
        assert sorted(orjson.loads(m.value or b"")["i"] for m in got) == list(range(10))
    finally:
        await consumer.close()


async def test_revoke_while_paused_behind_a_failing_insert_flushes_before_moving(
    make_settings: MakeSettings, kafka_io: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hardest rebalance: the sink is waiting, partitions paused, for an insert that
    keeps failing, and its consume loop holds the flush lock in the poll that brings the
    revoke. The revoke must wait for the insert, write the held batch, commit, and only then
    let the partitions go: the new member reads none of the messages the sink stored."""
    settings = await sink_settings(make_settings, batch_size=20)
    n = 20  # enough for a second full batch while the first keeps failing
    await produce(kafka_io, settings, order_traffic("v", n))
    revoking = asyncio.Event()
    revoked_while_paused: list[bool] = []
    real_revoked = SinkService._partitions_revoked

    async def revoked(self: SinkService, partitions: list[Partition]) -> None:
        revoked_while_paused.append(self._polling_paused)
        revoking.set()
        await real_revoked(self, partitions)

    written: set[tuple[str, int, int]] = set()
    real_write = service_module.write_batch

    async def write_after_revoke(ch: Any, batch: Any) -> dict[str, int]:
        if not revoking.is_set():
            raise ConnectionError("ClickHouse is down")
        sent = await real_write(ch, batch)
        for spans in batch.ranges.values():
            for (topic, partition), (first, last) in spans.items():
                written.update((topic, partition, o) for o in range(first, last + 1))
        return sent

    monkeypatch.setattr(SinkService, "_partitions_revoked", revoked)
    monkeypatch.setattr(service_module, "write_batch", write_after_revoke)
    service = SinkService(settings, retry_min_s=0.3, retry_max_s=0.3)
    task = asyncio.create_task(service.run())
    member = SinkConsumer(settings.kafka.bootstrap, service.group_id, on_revoke=no_revoke)
    try:
        deadline = time.monotonic() + 60
        while not (service._consumer and service._consumer.paused()):
            assert time.monotonic() < deadline, service.health()
            await asyncio.sleep(0.05)
        await member.start(service.topics)
        deadline = time.monotonic() + 60
        while not member.assignment():
            assert time.monotonic() < deadline, service.health()
            await member.consume(100, 0.2)
        assert revoked_while_paused and revoked_while_paused[0], revoked_while_paused
        stored_at_revoke = set(written)
        assert stored_at_revoke  # the failing batch and the held one went in first
        read = await member.consume(1_000, 2.0)
        read += await member.consume(1_000, 0.5)
        assert not {(m.topic, m.partition, m.offset) for m in read} & stored_at_revoke
        assert service.stats.commit_failures == 0
    finally:
        await member.close()  # its partitions go back to the sink, uncommitted
    try:
        await wait_for_totals(settings, n, service=service)
    finally:
        service.request_stop()
        await asyncio.wait_for(task, 30)
    assert await committed_lag(settings, service.group_id) == 0
