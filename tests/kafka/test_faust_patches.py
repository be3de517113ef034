"""Faust's producer buffer flush must not return while table writes are still buffered."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace
from typing import Any

from faust.transport.producer import ProducerBuffer

from oms.kafka import faust_patches


class SlowChannel:
    """A channel whose publish takes longer than Faust's 0.1 s flush patience."""

    def __init__(self) -> None:
        self.published: list[int] = []

    async def publish_message(self, fut: Any, wait: bool = False) -> None:
        await asyncio.sleep(0.25)
        self.published.append(fut.n)


async def test_flush_waits_for_every_buffered_message() -> None:
    faust_patches.install()
    buffer = ProducerBuffer()
    buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))  # type: ignore[assignment]
    channel = SlowChannel()
    await buffer.start()
    try:
        for n in range(4):
            buffer.put(SimpleNamespace(n=n, message=SimpleNamespace(channel=channel)))  # type: ignore[arg-type]
        await buffer.flush()
        # Unpatched, flush returned after the first 0.1 s without progress, with 3 pending.
        assert channel.published == [0, 1, 2, 3]
        assert buffer.size == 0
    finally:
        await buffer.stop()


async def test_install_is_idempotent() -> None:
    faust_patches.install()
    flush = ProducerBuffer.flush
    faust_patches.install()
    assert ProducerBuffer.flush is flush


def _offsets(committed: int | None, acked: list[int]) -> Any:
    from collections import defaultdict

    from intervaltree import IntervalTree

    state = SimpleNamespace(
        _acked=defaultdict(list),
        _acked_index=defaultdict(set),
        _committed_offset=defaultdict(lambda: None),
        _gap=defaultdict(IntervalTree),
    )
    state._acked["tp"] = list(acked)
    state._acked_index["tp"] = set(acked)
    state._committed_offset["tp"] = committed
    return state


def test_commit_never_skips_an_unprocessed_head() -> None:
    from faust.transport.consumer import Consumer

    faust_patches.install()
    # 15 is the next offset to read (committed) and was never processed; 16 was.
    assert Consumer._new_offset(_offsets(15, [16]), "tp") is None  # type: ignore[arg-type]
    assert Consumer._new_offset(_offsets(0, [1, 2]), "tp") is None  # type: ignore[arg-type]
    # The ordinary cases are unchanged.
    assert Consumer._new_offset(_offsets(15, [15, 16, 17]), "tp") == 18  # type: ignore[arg-type]
    assert Consumer._new_offset(_offsets(None, [3, 4]), "tp") == 5  # type: ignore[arg-type]
    assert Consumer._new_offset(_offsets(15, [15, 16, 18]), "tp") == 17  # type: ignore[arg-type]


class FakeConsumer:
    def __init__(self) -> None:
        from faust.types import TP

        self.tp = TP("in", 0)
        self.other = TP("elsewhere", 0)
        self._acked = {self.tp: [16, 17], self.other: [5]}
        self._committed_offset = {self.tp: 15, self.other: 3}
        self.sought: list[tuple[Any, int]] = []
        self.highwaters: dict[Any, int] = {}

    def assignment(self) -> set[Any]:
        return {self.tp, self.other}  # type: ignore[arg-type]

    async def seek(self, tp: Any, offset: int) -> None:
        self.sought.append((tp, offset))

    def highwater(self, tp: Any) -> int:
        return self.highwaters.get(tp, 0)


async def test_stalled_input_partition_is_read_again_from_its_committed_offset() -> None:
    consumer = FakeConsumer()
    healer = faust_patches.StallHealer(lambda: consumer, {"in"}, stall_s=5.0)
    assert healer.stalled(now=100.0) == []  # first seen
    assert healer.stalled(now=104.0) == []
    due = healer.stalled(now=105.0)
    assert due == [(consumer.tp, 15)]  # only the input topic, after the stall time
    await healer.heal(*due[0])
    assert consumer.sought == [(consumer.tp, 15)] and healer.healed == 1
    consumer._acked[consumer.tp] = [15, 16, 17]  # the dropped message came back
    assert healer.stalled(now=200.0) == []


async def test_a_dropped_last_message_is_read_again() -> None:
    # Offset 15 was read (read offset 15) but never delivered, and nothing came after it:
    # no acknowledged offset reveals the hole, only the read offset past the commit does.
    consumer = FakeConsumer()
    consumer._acked = {consumer.tp: [], consumer.other: []}
    consumer._read_offset = {consumer.tp: 15, consumer.other: 2}  # type: ignore[attr-defined]
    consumer.highwaters = {consumer.tp: 18}
    in_flight = SimpleNamespace(tp=consumer.tp, acked=False)
    consumer._unacked_messages = [in_flight]  # type: ignore[attr-defined]
    healer = faust_patches.StallHealer(lambda: consumer, {"in"}, stall_s=5.0)
    # Still being processed (queued in the stream or in the agent): not a stall.
    assert healer.stalled(now=100.0) == [] and healer.stalled(now=110.0) == []
    in_flight.acked = True
    assert healer.stalled(now=111.0) == []  # first seen
    assert healer.stalled(now=116.0) == [(consumer.tp, 15)]
    # Right after a seek to the end (read offset = committed = highwater): idle, not a stall.
    consumer.highwaters[consumer.tp] = 15
    assert healer.stalled(now=120.0) == [] and healer.stalled(now=130.0) == []
    # Processed and committed: read offset 15, committed 16.
    consumer.highwaters[consumer.tp] = 18
    consumer._committed_offset[consumer.tp] = 16
    assert healer.stalled(now=200.0) == [] and healer.stalled(now=210.0) == []


async def test_an_offset_jump_is_not_counted_as_processed() -> None:
    from faust.transport.consumer import Consumer
    from faust.types import TP

    faust_patches.install()
    tp = TP("in", 0)
    # 7 processed, then the fetcher handed over 15 (8..14 skipped, e.g. stale records after
    # a rebalance's seek): Faust's own _add_gap made the next commit 17, losing 8..14.
    state = _offsets(7, [7, 15, 16])
    state._acked[tp] = state._acked.pop("tp")
    state._committed_offset[tp] = 7
    await Consumer._add_gap(state, tp, 8, 15)  # type: ignore[arg-type]
    assert not state._gap[tp]
    assert Consumer._new_offset(state, tp) == 8  # type: ignore[arg-type]
    # The head (8) is now unprocessed: no commit past it until it is read again.
    state._committed_offset[tp] = 8
    assert Consumer._new_offset(state, tp) is None  # type: ignore[arg-type]


async def test_a_never_committed_partition_is_sought_back_to_its_log_start(
    kafka_bootstrap: str,
) -> None:
    """Fix 4, through a real broker: records fetched for a partition that has no committed
    offset, then dropped (as Faust drops them on a rebalance), are fetched again after the
    seek to the committed offsets. Plain aiokafka leaves the position past them."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
    from faust.types import TP

    topic = f"fix4-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for n in range(3):
            await producer.send_and_wait(topic, f"r{n}".encode(), partition=0)
    finally:
        await producer.stop()

    faust_side = SimpleNamespace(_is_changelog_tp=lambda tp: tp.topic.endswith("-changelog"))
    app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: True))

    async def dropped_then_sought(fixed: bool) -> list[int]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=f"{topic}-{fixed}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            first = await consumer.getmany(timeout_ms=10_000)  # fetched, then "dropped"
            assert [r.offset for rs in first.values() for r in rs] == [0, 1, 2]
            if fixed:
                await faust_patches._seek_to_committed_or_log_start(consumer, faust_side, app)
                # The reset is pending: Faust's livelock check must skip, not crash the worker.
                faust_patches.install()
                thread = SimpleNamespace(
                    _ensure_consumer=lambda: consumer,
                    _verify_aiokafka_event_path=lambda now, tp: False,
                    consumer=SimpleNamespace(
                        app=SimpleNamespace(monitor=object(), topics=app.topics)
                    ),
                    time_started=0.0,
                )
                tp = TP(topic, 0)
                assert AIOKafkaConsumerThread.verify_event_path(thread, 0.0, tp) is None  # type: ignore[arg-type]
            else:
                await consumer.seek_to_committed()
            again = await consumer.getmany(timeout_ms=2_000)
            return [r.offset for rs in again.values() for r in rs]
        finally:
            await consumer.stop()

    assert await dropped_then_sought(fixed=False) == []  # the bug: nothing is read again
    assert await dropped_then_sought(fixed=True) == [0, 1, 2]
