"""The Faust patches: each is applied, refuses library versions it was not written for, and
fixes what it is there for; the app check and the stall healer refuse what they cannot take."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from aiokafka.consumer.fetcher import OffsetResetStrategy
from faust.topics import Topic as FaustTopic
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.producer import ProducerBuffer
from faust.types import TP
from intervaltree import IntervalTree

from oms.kafka import faust_patches
from oms.kafka.faust_patches import (
    AIOKAFKA_VERSION,
    COMMIT_HEAD,
    FAUST_STREAMING_VERSION,
    LIVELOCK_CHECK,
    OFFSET_JUMP,
    PATCHES,
    PRODUCER_FLUSH,
    SEEK_LOG_START,
    FaustPatch,
    FaustPatchError,
    StallHealer,
    apply_faust_patches,
    check_app,
    deliver,
    faust_patches_applied,
    fetch_position,
    seek_to_committed_or_log_start,
)
from oms.kafka.faust_worker import declared_compacted_topics, new_faust_app
from oms.schemas import Topic
from oms.settings import Settings

PATCH_NAMES = [patch.name for patch in PATCHES]


def _versions(faust_version: str, aiokafka_version: str) -> Any:
    seen = {"faust-streaming": faust_version, "aiokafka": aiokafka_version}
    return lambda distribution: seen[distribution]


# -- every patch ------------------------------------------------------------------------


def test_the_pins_are_the_versions_installed() -> None:
    # The patches run against what is installed: the test suite must see the pinned versions.
    assert faust_patches.installed_version("faust-streaming") == FAUST_STREAMING_VERSION
    assert faust_patches.installed_version("aiokafka") == AIOKAFKA_VERSION
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert f'"faust-streaming=={FAUST_STREAMING_VERSION}"' in pyproject
    assert f'"aiokafka=={AIOKAFKA_VERSION}"' in pyproject


@pytest.mark.parametrize("patch", PATCHES, ids=PATCH_NAMES)
def test_each_patch_is_applied(patch: FaustPatch) -> None:
    apply_faust_patches()
    assert patch.applied
    for owner, attribute, _ in patch.replacements:
        assert getattr(owner.__dict__[attribute], "__oms_faust_patch__", None) == patch.name


@pytest.mark.parametrize("patch", PATCHES, ids=PATCH_NAMES)
@pytest.mark.parametrize(
    ("faust_version", "aiokafka_version"),
    [("0.15.4", AIOKAFKA_VERSION), (FAUST_STREAMING_VERSION, "0.13.0")],
    ids=["other-faust", "other-aiokafka"],
)
def test_each_patch_refuses_other_versions(
    patch: FaustPatch, faust_version: str, aiokafka_version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        faust_patches, "installed_version", _versions(faust_version, aiokafka_version)
    )
    with pytest.raises(FaustPatchError) as refused:
        patch.apply()
    message = str(refused.value)
    assert patch.name in message
    assert f"faust-streaming=={faust_version}" in message
    assert f"aiokafka=={aiokafka_version}" in message
    assert f"faust-streaming=={FAUST_STREAMING_VERSION}" in message


def test_a_patch_refuses_a_method_that_is_gone() -> None:
    # A fresh patch of a method faust no longer has: adding it would silently change nothing.
    patch = FaustPatch("renamed upstream", ((Consumer, "_no_such_method", lambda f: f),))
    with pytest.raises(FaustPatchError, match=r"renamed upstream.*_no_such_method"):
        patch.apply()
    assert not hasattr(Consumer, "_no_such_method")


def test_apply_is_idempotent() -> None:
    apply_faust_patches()
    methods = [
        owner.__dict__[attribute] for patch in PATCHES for owner, attribute, _ in patch.replacements
    ]
    apply_faust_patches()
    for patch in PATCHES:
        patch.apply()  # each one too: never wrapped twice
    assert methods == [
        owner.__dict__[attribute] for patch in PATCHES for owner, attribute, _ in patch.replacements
    ]


def test_applied_only_once_every_patch_is(monkeypatch: pytest.MonkeyPatch) -> None:
    apply_faust_patches()
    # The last patch undone (restored after the test): the process is not patched.
    monkeypatch.setattr(AIOKafkaConsumerThread, "verify_event_path", lambda self, now, tp: None)
    assert not faust_patches_applied()
    # Refused (each patch checks the versions first): still not patched.
    monkeypatch.setattr(faust_patches, "installed_version", _versions("0.16.0", "0.14.0"))
    with pytest.raises(FaustPatchError):
        apply_faust_patches()
    assert not faust_patches_applied() and not LIVELOCK_CHECK.applied
    monkeypatch.undo()
    monkeypatch.setattr(AIOKafkaConsumerThread, "verify_event_path", lambda self, now, tp: None)
    apply_faust_patches()
    assert faust_patches_applied() and LIVELOCK_CHECK.applied


# -- 1. producer flush ------------------------------------------------------------------


class SlowChannel:
    """A channel whose publish takes longer than Faust's 0.1 s flush patience."""

    def __init__(self) -> None:
        self.published: list[int] = []

    async def publish_message(self, fut: Any, wait: bool = False) -> None:
        await asyncio.sleep(0.25)
        self.published.append(fut.n)


async def test_flush_waits_for_every_buffered_message() -> None:
    apply_faust_patches()
    assert PRODUCER_FLUSH.applied
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


# -- 2. commit head ---------------------------------------------------------------------


def _offsets(committed: int | None, acked: list[int]) -> Any:
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
    apply_faust_patches()
    assert COMMIT_HEAD.applied
    # 15 is the next offset to read (committed) and was never processed; 16 was.
    assert Consumer._new_offset(_offsets(15, [16]), "tp") is None  # type: ignore[arg-type]
    assert Consumer._new_offset(_offsets(0, [1, 2]), "tp") is None  # type: ignore[arg-type]
    # The ordinary cases are unchanged.
    assert Consumer._new_offset(_offsets(15, [15, 16, 17]), "tp") == 18  # type: ignore[arg-type]
    assert Consumer._new_offset(_offsets(None, [3, 4]), "tp") == 5  # type: ignore[arg-type]
    assert Consumer._new_offset(_offsets(15, [15, 16, 18]), "tp") == 17  # type: ignore[arg-type]


# -- 3. offset jumps --------------------------------------------------------------------


async def test_an_offset_jump_is_not_counted_as_processed() -> None:
    apply_faust_patches()
    assert OFFSET_JUMP.applied
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


def _app(tmp_path: Path, **overrides: Any) -> tuple[faust.App, Settings]:
    settings = Settings(data_dir=tmp_path)
    app_id = f"check-{uuid.uuid4().hex[:8]}"
    return new_faust_app(settings, app_id, settings.worker.web_port, **overrides), settings


async def _drain(stream: Any) -> None:
    async for _ in stream:
        pass


def test_an_agent_on_a_compacted_topic_is_refused(tmp_path: Path) -> None:
    app, settings = _app(tmp_path)
    settings_topic = settings.topic(Topic.NOTIFICATION_SETTINGS)
    app.agent(app.topic(settings.topic(Topic.ORDER_EVENTS)), name="events")(_drain)
    compacted = declared_compacted_topics(app, settings)
    assert settings_topic in compacted
    check_app(app, compacted_topics=compacted)  # no agent on a compacted topic yet
    app.agent(app.topic(settings_topic), name="settings_reader")(_drain)
    with pytest.raises(FaustPatchError, match=r"settings_reader.*notification-settings"):
        check_app(app, compacted_topics=declared_compacted_topics(app, settings))


def test_an_agent_on_a_table_changelog_is_refused(tmp_path: Path) -> None:
    app, settings = _app(tmp_path)
    table = app.Table("seen", default=None, partitions=settings.kafka.partitions)
    changelog = table.changelog_topic.get_topic_name()
    app.agent(app.topic(changelog), name="changelog_reader")(_drain)
    with pytest.raises(FaustPatchError, match="changelog_reader"):
        check_app(app, compacted_topics=declared_compacted_topics(app, settings))


def test_the_threaded_producer_is_refused(tmp_path: Path) -> None:
    # Its messages never pass ProducerBuffer._send_pending, so the patched flush would hang.
    app, _ = _app(tmp_path, producer_threaded=True)
    with pytest.raises(FaustPatchError, match="threaded producer"):
        check_app(app, compacted_topics=())


async def test_the_worker_consumer_waits_at_most_the_short_fetch_wait(tmp_path: Path) -> None:
    # Faust hard-codes 1.5 s; a fetch naming only quiet partitions held that long starved
    # every agent of a busy worker.
    apply_faust_patches()
    app, _ = _app(tmp_path)
    thread = app.consumer._thread  # the aiokafka consumer thread the worker runs
    consumer = thread._create_worker_consumer(app.transport)
    assert consumer._fetch_max_wait_ms == faust_patches.FETCH_MAX_WAIT_MS < 1500


def test_the_order_worker_and_the_position_keeper_pass_the_check(tmp_path: Path) -> None:
    from oms.positions.keeper import PositionKeeper
    from oms.streams.worker import OrderWorker

    settings = Settings(data_dir=tmp_path)
    worker = OrderWorker(settings).app
    keeper = PositionKeeper(settings)
    extra = {keeper.fills_topic: settings.kafka.partitions}
    assert worker.agents and keeper.app.agents
    check_app(worker, compacted_topics=declared_compacted_topics(worker, settings))
    check_app(keeper.app, compacted_topics=declared_compacted_topics(keeper.app, settings, extra))


# -- 4. seek of never-committed partitions ----------------------------------------------


async def test_never_committed_input_partitions_are_reset_to_their_log_start() -> None:
    apply_faust_patches()
    assert SEEK_LOG_START.applied
    committed = {
        TP("in", 0): 5,  # committed: aiokafka's seek is enough
        TP("in", 1): None,  # never committed
        TP("in", 2): 0,  # 0 is never a real commit (aiokafka ignores it)
        TP("app-orders-changelog", 0): None,  # Faust's recovery seeks changelogs itself
        TP("no-acks", 0): None,  # not an agent's input
    }
    resets: list[tuple[list[Any], int]] = []
    consumer = SimpleNamespace(
        seek_to_committed=lambda: asyncio.sleep(0, committed),
        _fetcher=SimpleNamespace(
            request_offset_reset=lambda tps, strategy: resets.append((tps, strategy))
        ),
    )
    faust_side = SimpleNamespace(_is_changelog_tp=lambda tp: tp.topic.endswith("-changelog"))
    app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: topic == "in"))
    assert await seek_to_committed_or_log_start(consumer, faust_side, app) == committed
    assert resets == [([TP("in", 1), TP("in", 2)], OffsetResetStrategy.EARLIEST)]


async def test_a_never_committed_partition_is_sought_back_to_its_log_start(
    kafka_bootstrap: str,
) -> None:
    """Fix 4, through a real broker: records fetched for a partition that has no committed
    offset, then dropped (as Faust drops them on a rebalance), are fetched again after the
    seek to the committed offsets. Plain aiokafka leaves the position past them."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

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
                await seek_to_committed_or_log_start(consumer, faust_side, app)
                # The reset is pending: Faust's livelock check must skip, not crash the worker.
                apply_faust_patches()
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


# -- 5. livelock check ------------------------------------------------------------------


def test_the_livelock_check_skips_a_partition_without_a_fetch_position(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    apply_faust_patches()
    assert LIVELOCK_CHECK.applied
    checked: list[Any] = []
    # Faust's own check stood in for by a recorder (the patch wraps what it finds).
    monkeypatch.setattr(
        AIOKafkaConsumerThread, "verify_event_path", lambda self, now, tp: checked.append(tp)
    )
    LIVELOCK_CHECK.apply()
    states: dict[Any, Any] = {}
    assignment = SimpleNamespace(state_value=states.get)
    subscription = SimpleNamespace(assignment=assignment)
    consumer = SimpleNamespace(
        _fetcher=SimpleNamespace(_subscriptions=SimpleNamespace(subscription=subscription))
    )
    thread = SimpleNamespace(_ensure_consumer=lambda: consumer)
    tp = TP("in", 0)
    verify = AIOKafkaConsumerThread.verify_event_path
    states[("in", 0)] = SimpleNamespace(has_valid_position=False)  # a reset is pending
    assert verify(thread, 0.0, tp) is None  # type: ignore[arg-type]
    subscription.assignment = None  # between assignments
    assert verify(thread, 0.0, tp) is None  # type: ignore[arg-type]
    assert checked == []
    subscription.assignment = assignment
    states[("in", 0)] = SimpleNamespace(has_valid_position=True)
    verify(thread, 0.0, tp)  # type: ignore[arg-type]
    assert checked == [tp]


# -- delivery ---------------------------------------------------------------------------


class FakeDrainer:
    """What ``deliver`` uses of Faust's consumer: its flow-suspension event and wait_first."""

    def __init__(self) -> None:
        self.suspend_flow = asyncio.Event()
        self.raced = 0

    async def wait_first(self, *coros: Any) -> None:
        self.raced += 1
        tasks = [asyncio.ensure_future(c) for c in coros]
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def test_a_delivery_that_does_not_wait_runs_at_once_without_a_task() -> None:
    consumer, delivered = FakeDrainer(), []

    async def put_into_a_buffer_with_room() -> None:
        delivered.append("m")

    tasks_before = len(asyncio.all_tasks())
    await deliver(consumer, put_into_a_buffer_with_room())
    assert delivered == ["m"] and consumer.raced == 0
    assert len(asyncio.all_tasks()) == tasks_before


async def test_a_delivery_that_waits_finishes_when_the_buffer_has_room() -> None:
    consumer, room, delivered = FakeDrainer(), asyncio.get_running_loop().create_future(), []

    async def put_into_a_full_buffer() -> None:
        delivered.append(await room)
        await asyncio.sleep(0)  # and any later waits too
        delivered.append("done")

    delivery = asyncio.ensure_future(deliver(consumer, put_into_a_full_buffer()))
    await asyncio.sleep(0.01)
    assert not delivery.done() and consumer.raced == 1
    room.set_result("room")
    await asyncio.wait_for(delivery, 1)
    assert delivered == ["room", "done"]


async def test_a_waiting_delivery_is_abandoned_when_a_rebalance_suspends_the_flow() -> None:
    consumer, cancelled = FakeDrainer(), []

    async def put_into_a_buffer_that_stays_full() -> None:
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    delivery = asyncio.ensure_future(deliver(consumer, put_into_a_buffer_that_stays_full()))
    await asyncio.sleep(0.01)
    consumer.suspend_flow.set()
    await asyncio.wait_for(delivery, 1)
    assert cancelled == [True]


async def test_a_table_write_gets_the_running_producer_without_yielding() -> None:
    apply_faust_patches()
    producer = SimpleNamespace(state="running")
    started: list[bool] = []

    async def maybe_start_producer() -> Any:
        started.append(True)
        return producer

    app = SimpleNamespace(producer=producer, in_transaction=False)
    app.maybe_start_producer = maybe_start_producer
    topic = SimpleNamespace(app=app)
    getting = FaustTopic._get_producer(topic)  # type: ignore[arg-type]
    with pytest.raises(StopIteration) as done:
        getting.send(None)  # no turn of the event loop: done in one step
    assert done.value.value is producer and started == []
    producer.state = "init"  # not running yet: Faust starts it
    assert await FaustTopic._get_producer(topic) is producer and started == [True]  # type: ignore[arg-type]


# -- the stall healer -------------------------------------------------------------------


def _healer(consumer: Any) -> StallHealer:
    return StallHealer(
        lambda: consumer, {"in"}, stall_s=5.0, queued=lambda topic: False, position_of=_position
    )


def _position(consumer: Any, tp: Any) -> int | None:
    position: int | None = consumer.position(tp)
    return position


class FakeConsumer:
    def __init__(self) -> None:
        self.tp = TP("in", 0)
        self.other = TP("elsewhere", 0)
        self._acked = {self.tp: [16, 17], self.other: [5]}
        self._committed_offset = {self.tp: 15, self.other: 3}
        self._unacked_messages: list[Any] = []
        self.sought: list[tuple[Any, int]] = []
        # The Kafka consumer's fetch position: the next offset it hands out.
        self.positions: dict[Any, int] = {self.tp: 18, self.other: 6}
        self.resetting: set[Any] = set()

    def assignment(self) -> set[Any]:
        return {self.tp, self.other}  # type: ignore[arg-type]

    async def seek(self, tp: Any, offset: int) -> None:
        self.sought.append((tp, offset))
        self.positions[tp] = offset

    def position(self, tp: Any) -> int | None:
        return None if tp in self.resetting else self.positions[tp]


async def test_stalled_input_partition_is_read_again_from_its_committed_offset() -> None:
    consumer = FakeConsumer()
    healer = _healer(consumer)
    assert healer.stalled(now=100.0) == []  # first seen
    assert healer.stalled(now=104.0) == []
    due = healer.stalled(now=105.0)
    assert due == [(consumer.tp, 15)]  # only the input topic, after the stall time
    await healer.heal(*due[0])
    assert consumer.sought == [(consumer.tp, 15)] and healer.healed == 1
    consumer._acked[consumer.tp] = [15, 16, 17]  # the dropped message came back
    assert healer.stalled(now=200.0) == []


def test_a_dropped_last_message_is_read_again() -> None:
    # Offsets 15 to 17 were fetched (position 18) but never delivered, and nothing came after
    # them: no acknowledged offset reveals the hole, only the fetch position past the commit.
    consumer = FakeConsumer()
    consumer._acked = {consumer.tp: [], consumer.other: []}
    in_flight = SimpleNamespace(tp=consumer.tp, acked=False)
    consumer._unacked_messages = [in_flight]
    healer = _healer(consumer)
    # Still being processed (queued in the stream or in the agent): not a stall.
    assert healer.stalled(now=100.0) == [] and healer.stalled(now=110.0) == []
    in_flight.acked = True
    assert healer.stalled(now=111.0) == []  # first seen
    assert healer.stalled(now=116.0) == [(consumer.tp, 15)]
    # Right after a seek to the committed offset: nothing fetched yet, not a stall.
    consumer.positions[consumer.tp] = 15
    assert healer.stalled(now=120.0) == [] and healer.stalled(now=130.0) == []
    # Processed and committed: the position is the committed offset.
    consumer.positions[consumer.tp] = 18
    consumer._committed_offset[consumer.tp] = 18
    assert healer.stalled(now=200.0) == [] and healer.stalled(now=210.0) == []


def test_records_dropped_after_a_takeover_are_read_again() -> None:
    # A partition taken over from a killed worker: the consumer fetched it to its end (the
    # records were dropped by Faust around the rebalance, before they counted as read), and
    # Faust's read offset, left from an earlier ownership, lies below the commit.
    consumer = FakeConsumer()
    consumer._acked = {consumer.tp: [], consumer.other: []}
    consumer._read_offset = {consumer.tp: 2}  # type: ignore[attr-defined]
    consumer._committed_offset[consumer.tp] = 4
    consumer.positions[consumer.tp] = 17
    healer = _healer(consumer)
    assert healer.stalled(now=100.0) == []
    assert healer.stalled(now=105.0) == [(consumer.tp, 4)]


def test_a_partition_being_reset_is_no_sign() -> None:
    consumer = FakeConsumer()
    consumer._acked = {consumer.tp: [], consumer.other: []}
    consumer.resetting.add(consumer.tp)
    healer = _healer(consumer)
    assert healer.stalled(now=100.0) == [] and healer.stalled(now=110.0) == []
    consumer.resetting.clear()
    assert healer.stalled(now=111.0) == []  # first seen only now
    assert healer.stalled(now=116.0) == [(consumer.tp, 15)]


async def test_a_backlog_waiting_in_the_stream_buffer_is_not_a_stall() -> None:
    # Offset 15 was fetched and delivered to the agent's buffer, where it waits behind other
    # partitions' messages: Faust tracks it only once the stream takes it, so nothing of the
    # partition is acknowledged or unacknowledged. Reading it again would deliver it twice.
    consumer = FakeConsumer()
    consumer._acked = {consumer.tp: [], consumer.other: []}
    waiting = {"in"}
    healer = StallHealer(
        lambda: consumer,
        {"in"},
        stall_s=5.0,
        queued=lambda topic: topic in waiting,
        position_of=_position,
    )
    assert [healer.stalled(now=100.0 + t) for t in range(0, 60, 5)] == [[]] * 12
    # The buffer is empty and the message never came: it was dropped after all.
    waiting.clear()
    assert healer.stalled(now=200.0) == []  # first seen
    assert healer.stalled(now=205.0) == [(consumer.tp, 15)]
    await healer.heal(consumer.tp, 15)
    # A dropped head with later messages processed is a stall whatever the buffer holds.
    consumer._acked[consumer.tp] = [16, 17]
    waiting.add("in")
    assert healer.stalled(now=300.0) == []
    assert healer.stalled(now=305.0) == [(consumer.tp, 15)]


@pytest.mark.parametrize("attribute", ["_committed_offset", "_unacked_messages", "_acked"])
def test_the_healer_refuses_a_faust_without_what_it_reads(
    attribute: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A rename upstream must stop the worker at start, not turn the healer off silently.
    monkeypatch.delitem(Consumer.__annotations__, attribute)
    with pytest.raises(FaustPatchError, match=attribute):
        StallHealer(FakeConsumer, {"in"}, queued=lambda topic: False, position_of=_position)


def test_the_healer_refuses_other_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faust_patches, "installed_version", _versions("0.15.4", "0.14.0"))
    with pytest.raises(FaustPatchError, match=r"stall healer.*faust-streaming==0\.15\.4"):
        StallHealer(FakeConsumer, {"in"}, queued=lambda topic: False, position_of=_position)


def test_a_hole_is_reported_at_once_without_waiting_for_the_stall_time() -> None:
    # What a reconciliation asks before it trusts the processed offsets: no stall time, no
    # state kept (the same partition is a stall for the healer only after stall_s).
    consumer = FakeConsumer()
    healer = _healer(consumer)
    assert healer.hole(consumer.tp)  # 15 dropped, 16 and 17 processed
    assert healer.stalled(now=100.0) == []
    consumer._acked[consumer.tp] = [15, 16, 17]
    assert not healer.hole(consumer.tp)
    consumer._acked[consumer.tp] = []
    consumer._committed_offset[consumer.tp] = 18  # all processed and committed
    assert not healer.hole(consumer.tp)


def test_the_fetch_position_is_read_without_the_consumer_thread() -> None:
    # The shape of faust's aiokafka consumer: Consumer._thread._consumer is the Kafka
    # consumer, whose subscription state holds each partition's position.
    tp = TP("in", 0)
    state = SimpleNamespace(has_valid_position=True, position=42)
    assignment = SimpleNamespace(state_value=lambda t: state if t == tp else None)
    kafka = SimpleNamespace(
        _subscription=SimpleNamespace(subscription=SimpleNamespace(assignment=assignment))
    )
    consumer = SimpleNamespace(_thread=SimpleNamespace(_consumer=kafka))
    assert fetch_position(consumer, tp) == 42
    assert fetch_position(consumer, TP("in", 1)) is None  # not assigned
    state.has_valid_position = False  # being reset
    assert fetch_position(consumer, tp) is None
    assert fetch_position(SimpleNamespace(_thread=None), tp) is None  # not started
