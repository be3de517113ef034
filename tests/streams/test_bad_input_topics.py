"""Every input topic of every service survives a tombstone, an empty value and bytes that are
not JSON: each goes to the dead letters with its reason, once per consumer group that reads
the topic, the valid message after it is processed, and nothing restarts.

One stack for the module, as real processes: the paper exchange, two workers (so a topic
every worker reads must still give one dead letter, not two), the position keeper, the
notifier and the sink. Each test publishes its bad messages and a valid one and waits for
their effects; the last test checks the whole dead-letter topic: exactly the letters the
tests expected, one each, none for a legitimate tombstone and none about a dead letter.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from oms.client import OrderClient
from oms.kafka.admin import ensure_topics
from oms.positions.keeper import FILLS_TOPIC
from oms.positions.state import ReportBundle
from oms.risk.controls import current_controls
from oms.schemas import (
    DeadLetter,
    Direction,
    ExecutionReport,
    Fill,
    MarketTick,
    MetricsSample,
    NotificationRecord,
    OrderEvent,
    OrderEventType,
    OrderRecord,
    OrderStatus,
    OrderType,
    PositionRecord,
    ReasonCode,
    ReportSource,
    Topic,
    now_ms,
)
from oms.schemas.conditions import OrderTrigger, TriggerKind
from oms.schemas.notify_settings import NotificationAck, NotificationSettings
from oms.schemas.risk import AccountControls, TradingState
from oms.settings import Settings
from oms_dev.devstack.net import free_port
from oms_dev.harness import (
    OmsServices,
    isolated_settings,
    wait_http_ok,
    worker_ready,
    write_account_secrets,
)

pytestmark = pytest.mark.kafka

ACCOUNTS = ["tomb-a", "tomb-b"]
PARTITIONS = 4
INSTRUMENT = "BTC-PERPETUAL"
# What every test publishes before its valid message, and the reason each must get.
BAD: list[tuple[bytes | None, ReasonCode]] = [
    (None, ReasonCode.TOMBSTONE),
    (b"", ReasonCode.EMPTY_PAYLOAD),
    (b"\xff{not json", ReasonCode.MALFORMED_JSON),
]
# On a compacted topic a tombstone with a key is a deletion: only the other two are bad.
BAD_BUT_TOMBSTONE = BAD[1:]

# (consumer, source topic, partition, offset): the consumer is the dead letter's error prefix.
LetterKey = tuple[str, str, int, int]


class DeadLetterWatch:
    """Reads the dead-letter topic from its beginning for the whole module."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.letters: list[DeadLetter] = []
        self.unreadable = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        tps = [TopicPartition(self.topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        self._task = asyncio.create_task(self._run(consumer))

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        try:
            async for message in consumer:
                try:
                    self.letters.append(DeadLetter.from_bytes(message.value or b""))
                except ValueError:  # pydantic's ValidationError included
                    self.unreadable += 1
        finally:
            await consumer.stop()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def by_key(self) -> Counter[tuple[LetterKey, ReasonCode]]:
        return Counter(
            (
                (
                    letter.error.split(":", 1)[0],
                    letter.source_topic,
                    letter.source_partition or 0,
                    letter.source_offset or 0,
                ),
                letter.reason_code,
            )
            for letter in self.letters
        )


@dataclass
class Stack:
    settings: Settings
    services: OmsServices
    worker_ports: list[int]
    producer: AIOKafkaProducer
    watch: DeadLetterWatch
    http: aiohttp.ClientSession
    # Every dead letter the tests made a reason for, with its reason.
    expected: dict[LetterKey, ReasonCode] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    # Bad messages the tests put on the dead-letter topic itself.
    bad_letters_sent: int = 0
    agent_starts: dict[str, int] = field(default_factory=dict)

    def topic(self, topic: Topic | str) -> str:
        return self.settings.topic(topic.value if isinstance(topic, Topic) else topic)

    async def send(self, topic: str, key: str | None, value: bytes | None) -> tuple[int, int]:
        """Publish raw bytes (None: a tombstone); returns (partition, offset)."""
        meta = await self.producer.send_and_wait(
            topic, value=value, key=key.encode() if key is not None else None
        )
        return meta.partition, meta.offset

    async def send_bad(
        self,
        topic: str,
        key: str | None,
        consumers: Iterable[str],
        bad: Iterable[tuple[bytes | None, ReasonCode]] = BAD,
    ) -> list[LetterKey]:
        """Publish ``bad`` and expect one dead letter per message from each consumer."""
        consumers = list(consumers)
        sent: list[LetterKey] = []
        for value, reason in bad:
            partition, offset = await self.send(topic, key, value)
            for consumer in consumers:
                letter = (consumer, topic, partition, offset)
                self.expected[letter] = reason
                sent.append(letter)
        return sent

    async def letters_arrived(self, keys: list[LetterKey]) -> None:
        """Wait until the dead letters of ``keys`` are on the topic, with their reasons."""
        await until(lambda: _have(self, keys), what=f"dead letters {keys}")

    async def json(self, url: str) -> Any:
        async with self.http.get(url) as resp:
            resp.raise_for_status()
            return await resp.json(content_type=None)

    async def workers(self) -> list[dict[str, Any]]:
        return [await self.json(f"http://127.0.0.1:{p}/stats") for p in self.worker_ports]

    async def keeper(self) -> dict[str, Any]:
        return await self.json(f"http://127.0.0.1:{self.settings.positions.web_port}/stats")

    async def notifier(self) -> dict[str, Any]:
        return await self.json(f"http://127.0.0.1:{self.settings.notify.web_port}/stats")

    async def sink(self) -> dict[str, Any]:
        return await self.json(f"http://127.0.0.1:{self.settings.sink.query_port}/health")

    async def current_agent_starts(self) -> dict[str, int]:
        starts = {}
        for i, stats in enumerate(await self.workers()):
            for agent in ("order_state", "release"):
                starts[f"worker-{i}.{agent}"] = stats[agent].get("agent_starts", 0)
        starts["positions.apply"] = (await self.keeper())["keeper"].get("apply_starts", 0)
        return starts

    async def assert_nothing_restarted(self) -> None:
        """Same processes, each started once, and no agent restarted by Faust."""
        for name, service in self.services.processes.items():
            assert service.alive, f"{name} died:\n{service.tail()}"
            assert service.proc is not None and service.proc.pid == self.pids[name]
            assert service.starts == 1
        assert await self.current_agent_starts() == self.agent_starts


def _have(stack: Stack, keys: list[LetterKey]) -> bool:
    seen = stack.watch.by_key()
    return all((key, stack.expected[key]) in seen for key in keys)


async def until(
    condition: Callable[[], bool | Awaitable[bool]], *, what: str, within: float = 30.0
) -> None:
    """Poll ``condition`` (plain or async) until it holds."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def stack_settings(tmp: Path, bootstrap: str) -> Settings:
    settings = isolated_settings(tmp, bootstrap, ACCOUNTS, partitions=PARTITIONS, label="tomb")
    return settings.model_copy(
        update={
            "worker": settings.worker.model_copy(update={"recovery_check_interval_s": 0.5}),
            "sink": settings.sink.model_copy(update={"flush_interval_s": 0.2}),
            "positions": settings.positions.model_copy(update={"reconcile": False}),
        }
    )


async def assignment_settled(stack: Stack) -> bool:
    """Each request partition owned by exactly one worker, as each worker last rebuilt."""
    owned = [stats["queue"]["partitions"] for stats in await stack.workers()]
    flat = [p for parts in owned for p in parts]
    return sorted(flat) == list(range(PARTITIONS)) and all(owned)


@pytest.fixture(scope="module")
async def stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    settings = stack_settings(tmp_path_factory.mktemp("tombstones"), kafka_bootstrap)
    write_account_secrets(settings.resolved_secrets_file, ACCOUNTS)
    await ensure_topics(settings)
    services = OmsServices(settings, settings.data_dir / "logs")
    services.add_paper_exchange("--accounts-file", str(settings.resolved_secrets_file))
    ports = [settings.worker.web_port, free_port()]
    for index, port in enumerate(ports):
        services.add_worker(index, port)
    services.add_position_keeper()
    services.add_notifier()
    services.add_sink()
    services.start_all()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    watch = DeadLetterWatch(kafka_bootstrap, settings.topic(Topic.DEAD_LETTERS.value))
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
    stack = Stack(settings, services, ports, producer, watch, http)
    try:
        await producer.start()
        await watch.start()
        for port in ports:
            await worker_ready(port, within=120)
        await wait_http_ok(
            f"http://127.0.0.1:{settings.positions.web_port}/health", 120, lambda b: b["ready"]
        )
        await wait_http_ok(
            f"http://127.0.0.1:{settings.notify.web_port}/health", 60, lambda b: b["ready"]
        )
        await wait_http_ok(f"http://127.0.0.1:{settings.sink.query_port}/health", 60)

        async def feeds_ready() -> bool:
            return all(
                s["tick_feed"]["ready"] and s["risk_feeds"]["ready"] for s in await stack.workers()
            )

        await until(feeds_ready, what="the workers' tick and risk feeds", within=60)
        await until(lambda: assignment_settled(stack), what="a settled assignment", within=60)
        stack.pids = {n: s.proc.pid for n, s in services.processes.items() if s.proc is not None}
        stack.agent_starts = await stack.current_agent_starts()
        yield stack
    except BaseException:
        print(services.diagnostics())
        raise
    finally:
        await watch.stop()
        await producer.stop()
        await http.close()
        services.stop_all()


def summed(stats: list[dict[str, Any]], section: str, counter: str) -> int:
    return sum(int(s[section].get(counter, 0)) for s in stats)


# -- the order worker's agents -------------------------------------------------------------


async def test_execution_reports(stack: Stack) -> None:
    """order_state dead-letters and goes on; the keeper's router skips them (the worker
    reports them) and the sink records its own letter."""
    topic = stack.topic(Topic.EXECUTION_REPORTS)
    before_workers, before_keeper = await stack.workers(), await stack.keeper()
    keys = await stack.send_bad(topic, "o-tomb-report", ["worker", "sink"])
    valid = ExecutionReport(
        report_id="o-tomb-report:rpc:1",
        order_id="o-tomb-report",
        account_id="tomb-a",
        source=ReportSource.RPC,
        instrument_name=INSTRUMENT,
    )
    await stack.send(topic, "o-tomb-report", valid.to_bytes())
    await stack.letters_arrived(keys)
    unknown = summed(before_workers, "order_state", "reports_unknown_order")

    async def valid_applied() -> bool:
        return summed(await stack.workers(), "order_state", "reports_unknown_order") > unknown

    await until(valid_applied, what="the valid report, after the bad ones")
    skipped = before_keeper["route"].get("skipped", 0)

    async def routed() -> bool:
        return int((await stack.keeper())["route"].get("skipped", 0)) >= skipped + 4

    await until(routed, what="the keeper's router past them")
    assert (await stack.keeper())["route"].get("errors", 0) == before_keeper["route"].get(
        "errors", 0
    )
    await stack.assert_nothing_restarted()


async def test_order_triggers(stack: Stack) -> None:
    """release dead-letters (a create trigger without its request too) and goes on."""
    topic = stack.topic(Topic.ORDER_TRIGGERS)
    before = summed(await stack.workers(), "release", "triggers_unknown_order")
    create = OrderTrigger(order_id="o-tomb-trigger", kind=TriggerKind.CREATE, reason="link")
    keys = await stack.send_bad(
        topic,
        "o-tomb-trigger",
        ["worker"],
        [*BAD, (create.to_bytes(), ReasonCode.SCHEMA_INVALID)],
    )
    valid = OrderTrigger(order_id="o-tomb-trigger", kind=TriggerKind.RELEASE, reason="test")
    await stack.send(topic, "o-tomb-trigger", valid.to_bytes())
    await stack.letters_arrived(keys)

    async def valid_applied() -> bool:
        return summed(await stack.workers(), "release", "triggers_unknown_order") > before

    await until(valid_applied, what="the valid trigger, after the bad ones")
    await stack.assert_nothing_restarted()


# -- topics every worker reads -------------------------------------------------------------


async def test_market_ticks(stack: Stack) -> None:
    """Every worker skips and counts them; one dead letter per tick from the workers (the
    partition's owner), one from the sink."""
    topic = stack.topic(Topic.MARKET_TICKS)
    before = await stack.workers()
    keys = await stack.send_bad(topic, INSTRUMENT, ["worker", "sink"])
    tick = MarketTick(instrument_name=INSTRUMENT, timestamp=now_ms(), mark_price=50_000.0)
    await stack.send(topic, INSTRUMENT, tick.to_bytes())
    await stack.letters_arrived(keys)

    async def every_worker_read_all() -> bool:
        now = await stack.workers()
        return all(
            n["tick_feed"]["received"] > b["tick_feed"]["received"]
            and n["tick_feed"]["invalid"] >= b["tick_feed"]["invalid"] + 3
            # One tick consumer per worker, feeding the one market cache risk reads marks from.
            and n["market"]["applied"] > b["market"]["applied"]
            and n["tick_feed"]["invalid_reasons"].get("empty_payload", 0)
            > b["tick_feed"]["invalid_reasons"].get("empty_payload", 0)
            for n, b in zip(now, before, strict=True)
        )

    await until(every_worker_read_all, what="both workers' tick feeds and caches past them")
    after = await stack.workers()
    reasons = [w["tick_feed"]["invalid_reasons"] for w in after]
    assert all(r.get("tombstone", 0) >= 1 and r.get("malformed_json", 0) >= 1 for r in reasons)
    await stack.assert_nothing_restarted()


async def test_positions(stack: Stack) -> None:
    """Read by every worker's risk feed, by the notifier and by the sink: one letter each."""
    topic = stack.topic(Topic.POSITIONS)
    before_workers, before_notifier = await stack.workers(), await stack.notifier()
    key = f"tomb-b|{INSTRUMENT}"
    keys = await stack.send_bad(topic, key, ["worker", "notifier", "sink"])
    record = PositionRecord(
        record_id=f"{key}:trade:t-tomb", account_id="tomb-b", instrument_name=INSTRUMENT, size=10
    )
    await stack.send(topic, key, record.to_bytes())
    await stack.letters_arrived(keys)

    async def read_by_all() -> bool:
        workers, notifier = await stack.workers(), await stack.notifier()
        return all(
            n["risk_feeds"].get("positions", 0) > b["risk_feeds"].get("positions", 0)
            for n, b in zip(workers, before_workers, strict=True)
        ) and notifier["counters"].get("positions", 0) > before_notifier["counters"].get(
            "positions", 0
        )

    await until(read_by_all, what="the valid position record, after the bad ones")
    await stack.assert_nothing_restarted()


async def test_risk_controls(stack: Stack) -> None:
    """Bad controls are dead-lettered once and the previous ones stay in force; a tombstone
    deletes the account's controls on every worker (and for `oms risk`), as compaction
    will, and is not dead-lettered."""
    topic = stack.topic(Topic.RISK_CONTROLS)
    halted = AccountControls(account_id="tomb-a", trading_state=TradingState.HALTED, version=1)
    before = await stack.workers()
    await stack.send(topic, "tomb-a", halted.to_bytes())

    async def every_worker_applied(counter: str, base: list[dict[str, Any]]) -> bool:
        return all(
            n["risk_feeds"].get(counter, 0) > b["risk_feeds"].get(counter, 0)
            for n, b in zip(await stack.workers(), base, strict=True)
        )

    await until(lambda: every_worker_applied("controls", before), what="the halt")
    keys = await stack.send_bad(topic, "tomb-a", ["worker"], BAD_BUT_TOMBSTONE)
    await stack.letters_arrived(keys)
    letters = [x for x in stack.watch.letters if x.source_topic == topic]
    assert all("previous ones stay in force" in x.error for x in letters)

    async with OrderClient("tomb-a", settings=stack.settings) as client:
        still_halted = await submit_and_decide(client)
        assert still_halted.event_type is OrderEventType.REJECTED
        assert still_halted.reason_code is ReasonCode.TRADING_HALTED
        before = await stack.workers()
        await stack.send(topic, "tomb-a", None)
        await until(lambda: every_worker_applied("controls:deleted", before), what="deletion")
        resumed = await submit_and_decide(client)
        assert resumed.event_type is OrderEventType.SUBMITTED, resumed
    assert "tomb-a" not in await current_controls(stack.settings)
    await stack.assert_nothing_restarted()


async def submit_and_decide(client: OrderClient) -> OrderEvent:
    """Submit a resting buy and wait for intake's decision (submitted or rejected)."""
    order_id = await client.submit_advanced_order(INSTRUMENT, 10, "buy", price=1_000.0)
    return await client.wait_for_event(
        order_id,
        lambda e: e.event_type in (OrderEventType.SUBMITTED, OrderEventType.REJECTED),
        timeout=30,
    )


# -- the position keeper -------------------------------------------------------------------


async def test_positions_fills(stack: Stack) -> None:
    """The keeper's internal repartition topic: dead-lettered, the next bundle applied."""
    topic = stack.settings.topic(FILLS_TOPIC)
    key = f"tomb-a|{INSTRUMENT}"
    before = (await stack.keeper())["ledger"]["applied"]
    keys = await stack.send_bad(topic, key, ["positions"])
    report = ExecutionReport(
        report_id="o-tomb-fill:subscription:t-tomb-1",
        order_id="o-tomb-fill",
        account_id="tomb-a",
        source=ReportSource.SUBSCRIPTION,
        instrument_name=INSTRUMENT,
        direction=Direction.BUY,
        filled_amount=10.0,
        fills=[Fill(trade_id="t-tomb-1", amount=10.0, price=50_000.0, timestamp=now_ms())],
    )
    await stack.send(topic, key, ReportBundle(reports=[report]).to_bytes())
    await stack.letters_arrived(keys)

    async def applied() -> bool:
        return int((await stack.keeper())["ledger"]["applied"]) > before

    await until(applied, what="the valid bundle, after the bad ones")
    await stack.assert_nothing_restarted()


# -- the notifier --------------------------------------------------------------------------


async def test_order_events(stack: Stack) -> None:
    topic = stack.topic(Topic.ORDER_EVENTS)
    before = (await stack.notifier())["counters"].get("events", 0)
    keys = await stack.send_bad(topic, "o-tomb-event", ["notifier", "sink"])
    event = OrderEvent(
        event_id="o-tomb-event:1:accepted",
        event_type=OrderEventType.ACCEPTED,
        order_id="o-tomb-event",
        account_id="tomb-b",
    )
    await stack.send(topic, "o-tomb-event", event.to_bytes())
    await stack.letters_arrived(keys)

    async def notified() -> bool:
        return int((await stack.notifier())["counters"].get("events", 0)) > before

    await until(notified, what="the valid event, after the bad ones")
    await stack.assert_nothing_restarted()


async def test_notification_settings(stack: Stack) -> None:
    """Compacted, keyed by account: a tombstone deletes the account's settings."""
    topic = stack.topic(Topic.NOTIFICATION_SETTINGS)
    keys = await stack.send_bad(
        topic,
        "tomb-n",
        ["notifier"],
        [
            *BAD_BUT_TOMBSTONE,
            (b'{"account_id": "tomb-n", "channels": 5}', ReasonCode.INVALID_SETTINGS),
        ],
    )
    await stack.send(topic, "tomb-n", NotificationSettings(account_id="tomb-n").to_bytes())
    await stack.letters_arrived(keys)

    async def known() -> bool:
        return "tomb-n" in (await stack.notifier())["accounts"]

    await until(known, what="the valid settings, after the bad ones")
    await stack.send(topic, "tomb-n", None)

    async def deleted() -> bool:
        stats = await stack.notifier()
        return (
            "tomb-n" not in stats["accounts"] and stats["counters"].get("settings_deleted", 0) > 0
        )

    await until(deleted, what="the settings deleted by their tombstone")
    await stack.assert_nothing_restarted()


async def test_notification_acks(stack: Stack) -> None:
    """Compacted, keyed by alert id: a tombstone prunes the acknowledgement."""
    topic = stack.topic(Topic.NOTIFICATION_ACKS)
    keys = await stack.send_bad(topic, "alert-tomb", ["notifier"], BAD_BUT_TOMBSTONE)
    await stack.send(topic, "alert-tomb", NotificationAck(alert_id="alert-tomb").to_bytes())
    await stack.send(topic, "alert-tomb", None)
    await stack.letters_arrived(keys)

    async def applied_then_pruned() -> bool:
        counters = (await stack.notifier())["counters"]
        return counters.get("acks_applied", 0) > 0 and counters.get("acks_pruned", 0) > 0

    await until(applied_then_pruned, what="the valid ack, then its pruning")
    await stack.assert_nothing_restarted()


# -- topics only the sink reads ------------------------------------------------------------


@pytest.mark.parametrize("topic", [Topic.NOTIFICATIONS, Topic.METRICS])
async def test_sink_only_topics(stack: Stack, topic: Topic) -> None:
    name = stack.topic(topic)
    valid: NotificationRecord | MetricsSample = (
        NotificationRecord(
            notification_id="n-tomb", account_id="tomb-b", notification_type="test", channel="c"
        )
        if topic is Topic.NOTIFICATIONS
        else MetricsSample(worker="tomb", values={"x": 1.0})
    )
    table = "notifications" if topic is Topic.NOTIFICATIONS else "metrics"
    before = (await stack.sink())["rows"].get(table, 0)
    keys = await stack.send_bad(name, "tomb", ["sink"])
    await stack.send(name, "tomb", valid.to_bytes())
    await stack.letters_arrived(keys)

    async def stored() -> bool:
        return int((await stack.sink())["rows"].get(table, 0)) > before

    await until(stored, what=f"the valid {table} row, after the bad ones")
    await stack.assert_nothing_restarted()


async def test_bad_dead_letters_are_counted_never_sent_back(stack: Stack) -> None:
    before = (await stack.sink())["malformed"]
    await stack.send_bad(stack.topic(Topic.DEAD_LETTERS), "tomb", [])
    stack.bad_letters_sent += len(BAD)

    async def counted() -> bool:
        return int((await stack.sink())["malformed"]) >= before + len(BAD)

    await until(counted, what="the sink past the bad dead letters")
    # That none came back is checked with everything else by the last test.
    await stack.assert_nothing_restarted()


# -- the orders changelog, read by every worker's risk feed ------------------------------


async def test_orders_changelog(stack: Stack) -> None:
    """The risk feeds read the orders table's changelog: a tombstone is Faust's deletion
    (the order is forgotten, no dead letter), anything else unreadable is dead-lettered.
    Last before the final check: should a rebalance make a worker recover the partition
    from this changelog, how Faust's own recovery takes these bytes is not what this file
    tests, so nothing else runs after them."""
    topic = f"{stack.settings.worker.app_id}-orders-changelog"
    order = OrderRecord(
        order_id="o-tomb-changelog",
        request_id="r-tomb-changelog",
        account_id="tomb-b",
        instrument_name=INSTRUMENT,
        direction=Direction.BUY,
        order_type=OrderType.LIMIT,
        amount=10.0,
        price=1_000.0,
        status=OrderStatus.OPEN,
    )
    before = await stack.workers()
    keys = await stack.send_bad(topic, order.order_id, ["worker"], BAD_BUT_TOMBSTONE)
    await stack.send(topic, order.order_id, order.to_bytes())
    await stack.send(topic, order.order_id, None)
    await stack.letters_arrived(keys)

    async def read_by_all() -> bool:
        return all(
            n["risk_feeds"].get("orders:deleted", 0) > b["risk_feeds"].get("orders:deleted", 0)
            and n["risk_feeds"].get("orders:malformed_json", 0)
            > b["risk_feeds"].get("orders:malformed_json", 0)
            for n, b in zip(await stack.workers(), before, strict=True)
        )

    await until(read_by_all, what="both risk feeds past them, to the deletion")
    await stack.assert_nothing_restarted()


# -- the whole dead-letter topic -----------------------------------------------------------


async def test_one_dead_letter_per_bad_message_and_consumer_group(stack: Stack) -> None:
    """Exactly the dead letters the tests expected, each once: the non-owning worker sent
    none, a legitimate tombstone none, a bad dead letter none; and nothing restarted."""
    probe = AIOKafkaConsumer(bootstrap_servers=stack.settings.kafka.bootstrap)
    await probe.start()
    try:
        tps = [TopicPartition(stack.watch.topic, p) for p in range(PARTITIONS)]
        ends = await probe.end_offsets(tps)
    finally:
        await probe.stop()
    total = sum(ends.values())
    await until(lambda: len(stack.watch.letters) + stack.watch.unreadable >= total, what="all")
    assert stack.watch.unreadable == stack.bad_letters_sent
    seen = stack.watch.by_key()
    expected = Counter(stack.expected.items())
    assert seen == expected, {
        "missing": sorted(map(str, expected - seen)),
        "unexpected": sorted(map(str, seen - expected)),
    }
    await stack.assert_nothing_restarted()
