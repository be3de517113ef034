"""Server-mode ClickHouse (``OMS_CLICKHOUSE_URL`` set): several sink processes share the work
as one Kafka consumer group, each inserting the rows of the partitions it owns.

There is no ClickHouse server here, so the ClickHouse side is a fake writer that records what
each sink would insert (topic, partition, offsets); Kafka, the group, the rebalances and the
commit-on-revoke are real. Dedupe tokens are derived from those offset ranges, so disjoint
ranges mean distinct tokens (what the server relies on to drop a retried insert)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from oms.settings import Settings
from oms.sinks import service as service_module
from oms.sinks.service import SinkService

from .conftest import free_port
from .test_service_kafka import MakeSettings, order_traffic, produce, sink_settings

pytestmark = pytest.mark.kafka

# Where each sink's inserts would go: (topic, partition) -> [(first, last offset, sink)].
Written = dict[tuple[str, int], list[tuple[int, int, str]]]


class FakeServer:
    """Stands in for the ClickHouse server: records every batch a sink inserts."""

    def __init__(self) -> None:
        self.written: Written = defaultdict(list)
        self.tokens: list[tuple[str, str]] = []  # (table, dedupe token) per insert
        self.inserts: list[str] = []  # which sink made each insert, in order
        self.owner: dict[int, str] = {}  # id(AsyncClickHouse) -> sink name

    async def write_batch(self, ch: Any, batch: Any) -> dict[str, int]:
        name = self.owner.get(id(ch), "?")
        spans: dict[tuple[str, int], list[int]] = {}
        for table, ranges in batch.ranges.items():
            self.tokens.append((table, batch.token(table)))
            for key, (first, last) in ranges.items():
                span = spans.setdefault(key, [first, last])
                span[0], span[1] = min(span[0], first), max(span[1], last)
        for key, (first, last) in spans.items():
            self.written[key].append((first, last, name))
        self.inserts.append(name)
        return {table: len(rows) for table, rows in batch.rows.items()}

    def offsets(self, topic: str) -> dict[int, list[tuple[int, str]]]:
        """Per partition of ``topic``: every offset written, with the sink that wrote it."""
        out: dict[int, list[tuple[int, str]]] = defaultdict(list)
        for (t, partition), spans in self.written.items():
            if t == topic:
                for first, last, name in spans:
                    out[partition] += [(o, name) for o in range(first, last + 1)]
        return out


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    server = FakeServer()
    monkeypatch.setattr(service_module, "open_client", lambda settings, **kw: object())
    monkeypatch.setattr(service_module, "apply_migrations", lambda client, sink: [])
    monkeypatch.setattr(service_module, "sync_position_retention", lambda client, *days: None)
    monkeypatch.setattr(service_module, "sync_desk_access", lambda client, desks, tokens: 0)
    monkeypatch.setattr(service_module, "write_batch", server.write_batch)
    return server


async def until(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


async def start_sink(settings: Settings, name: str, server: FakeServer) -> tuple[SinkService, Any]:
    # One endpoint port per process, as two sinks on one host would be configured.
    own = settings.model_copy(
        update={"sink": settings.sink.model_copy(update={"query_port": free_port()})}
    )
    sink = SinkService(own)
    task = asyncio.create_task(sink.run())
    await asyncio.wait_for(sink.ready.wait(), 60)
    assert sink._ch is not None
    server.owner[id(sink._ch)] = name
    return sink, task


async def test_two_server_mode_sinks_split_the_partitions(
    make_settings: MakeSettings, kafka_io: Any, fake_server: FakeServer
) -> None:
    base = await sink_settings(make_settings, batch_size=20, flush_interval_s=0.1)
    settings = base.model_copy(update={"clickhouse_url": "http://clickhouse.invalid:8123"})
    assert not settings.embedded_clickhouse  # server mode: no chDB lock is taken
    a, task_a = await start_sink(settings, "a", fake_server)
    b, task_b = await start_sink(settings, "b", fake_server)
    assert a.group_id == b.group_id
    try:
        assert a._consumer is not None and b._consumer is not None
        await until(
            lambda: bool(a._consumer.assignment()) and bool(b._consumer.assignment()),  # type: ignore[union-attr]
            60,
            "both sinks own partitions",
        )
        owned_a = a._consumer.assignment()
        owned_b = b._consumer.assignment()
        assert not owned_a & owned_b

        n = 40
        await produce(kafka_io, settings, order_traffic("s", n))
        events = settings.topic("order-events")
        await until(
            lambda: sum(len(v) for v in fake_server.offsets(events).values()) >= 5 * n,
            60,
            f"every event written: {dict(fake_server.written)}",
        )
        # Both did part of the work, each only its own partitions, every offset exactly once.
        writers = {name for spans in fake_server.written.values() for *_, name in spans}
        assert writers == {"a", "b"}
        for (topic, partition), spans in fake_server.written.items():
            names = {name for *_, name in spans}
            mine = owned_a if names == {"a"} else owned_b
            assert len(names) == 1 and (topic, partition) in mine, (topic, partition, spans)
        for partition, written in fake_server.offsets(events).items():
            offsets = sorted(o for o, _ in written)
            assert offsets == list(range(len(offsets))), (partition, offsets)
        assert sum(len(v) for v in fake_server.offsets(events).values()) == 5 * n

        # One sink leaves (graceful: it flushes and commits); the other takes everything over.
        a.request_stop()
        await asyncio.wait_for(task_a, 30)
        before = len(fake_server.inserts)
        await produce(kafka_io, settings, order_traffic("t", n))
        await until(
            lambda: sum(len(v) for v in fake_server.offsets(events).values()) >= 10 * n,
            60,
            "the remaining sink writes the rest",
        )
        assert set(fake_server.inserts[before:]) == {"b"}
        for partition, written in fake_server.offsets(events).items():
            offsets = sorted(o for o, _ in written)
            assert offsets == list(range(len(offsets))), (partition, offsets)  # none twice
        assert len(set(fake_server.tokens)) == len(fake_server.tokens)
    finally:
        for sink, task in ((a, task_a), (b, task_b)):
            sink.request_stop()
            if not task.done():
                await asyncio.wait_for(task, 30)
