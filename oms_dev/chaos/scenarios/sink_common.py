"""What the ClickHouse sink chaos scenarios (4: sink-kill, 5: disk-error) share.

* the stack: the paper stack of :func:`oms_dev.chaos.flow.start_paper` (on its own broker or a
  shared one with a unique topic prefix) plus a sink process whose logs are JSON; the order
  flow and its audit are the suite's (:class:`oms_dev.chaos.flow.PacedFlow`);
* the check that matters for a sink: every record of the run read back from the Kafka
  topics and compared, key by key, with the rows in ClickHouse (raw and after ``FINAL``);
* the result: :func:`oms_dev.chaos.verdict.make_result`, with that comparison and the
  scenario's own checks deciding too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from oms.kafka.security import KafkaConnection
from oms.schemas import (
    DeadLetter,
    ExecutionReport,
    NotificationRecord,
    OrderEvent,
    PositionRecord,
    Topic,
)
from oms.settings import Settings
from oms.sinks.errors import QueryError
from oms.sinks.query import run_query
from oms_dev.chaos.config import ChaosConfig
from oms_dev.chaos.flow import ChaosStack, FlowConfig, start_paper
from oms_dev.chaos.verdict import make_result, order_counts
from oms_dev.harness import ServiceProcess, wait_http_ok

# Topics whose every record must end up as rows (ticks are sampled, metrics are not
# produced here): topic -> tables it feeds.
COMPARED_TOPICS: tuple[Topic, ...] = (
    Topic.ORDER_EVENTS,
    Topic.EXECUTION_REPORTS,
    Topic.DEAD_LETTERS,
    Topic.POSITIONS,
    Topic.NOTIFICATIONS,
)
# table -> SQL expression of a row's identity (the ReplacingMergeTree key the sink relies on)
TABLE_KEYS: dict[str, str] = {
    "order_events": "event_id",
    "orders": "order_id",
    "executions": "(order_id, trade_id)",
    "dead_letters": "(kafka_partition, kafka_offset)",
    "position_changes": "record_id",
    "notifications": "(notification_id, channel, attempt)",
}

Key = Any


@dataclass
class SinkScenarioConfig:
    """What the sink scenarios configure alike: the paced flow, the sink's batching, how
    long to wait. With ``quick``, the fields still at their defaults take the scenario's
    ``QUICK`` values."""

    QUICK: ClassVar[dict[str, Any]] = {}

    orders: int = 400
    rate: float = 8.0  # orders per second: the flow spans the faults
    batch_size: int = 200
    flush_interval_s: float = 0.5
    accounts: int = 10
    partitions: int = 4
    auto_cancel_s: float = 4.0
    timeout_s: float = 180.0  # for every order to reach a terminal state
    catch_up_s: float = 120.0  # for the sink to commit everything after the last fault
    bootstrap: str | None = None
    quick: bool = False

    def __post_init__(self) -> None:
        if not self.quick:
            return
        for f in dataclasses.fields(self):
            if f.name in self.QUICK and getattr(self, f.name) == f.default:
                setattr(self, f.name, self.QUICK[f.name])

    @classmethod
    def for_suite(cls, suite: ChaosConfig) -> Self:
        """The scenario as the suite runs it: full or ``--quick`` size, its order count."""
        config = cls(quick=suite.quick, bootstrap=suite.bootstrap)
        if suite.orders:
            config.orders = suite.orders
        return config

    def flow_config(self) -> FlowConfig:
        """The paced order flow of the run."""
        return FlowConfig(
            orders=self.orders,
            rate=self.rate,
            accounts=self.accounts,
            auto_cancel_s=self.auto_cancel_s,
            partitions=self.partitions,
            timeout_s=self.timeout_s,
            bootstrap=self.bootstrap,
        )


@dataclass
class SinkStack:
    """The paper stack and a (not yet started) sink, for one scenario run."""

    stack: ChaosStack
    sink: ServiceProcess

    @property
    def settings(self) -> Settings:
        return self.stack.settings

    @property
    def base(self) -> Path:
        return self.stack.base

    @property
    def health_url(self) -> str:
        sink = self.settings.sink
        return f"http://{sink.query_host}:{sink.query_port}/health"

    async def health(self) -> dict[str, Any] | None:
        """The sink's ``/health`` body, or None if it does not answer."""
        try:
            timeout = aiohttp.ClientTimeout(total=2)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(self.health_url) as resp,
            ):
                return dict(await resp.json()) if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def start_sink(self, within: float = 90.0) -> None:
        """Start the sink and wait for its endpoint."""
        self.sink.start()
        await wait_http_ok(self.health_url, within)

    async def wait_flushing(self, within: float = 60.0) -> dict[str, Any]:
        """Wait until the sink has inserted a batch (it has joined the group and consumes)."""
        deadline = time.monotonic() + within
        first = await self.health()
        start = (first or {}).get("flushes", 0)
        while time.monotonic() < deadline:
            health = await self.health()
            if health and health.get("flushes", 0) > start:
                return health
            await asyncio.sleep(0.1)
        raise TimeoutError(f"sink flushed nothing within {within}s:\n{self.sink.tail()}")

    async def stop(self) -> None:
        await self.stack.stop()


async def open_stack(
    flow: FlowConfig,
    *,
    batch_size: int,
    flush_interval_s: float,
    on_status: Callable[[str], None],
    sink_command_prefix: Sequence[str] = (),
) -> SinkStack:
    """A paper stack (started) and a sink (added, not started) batching as given, run
    through ``sink_command_prefix`` when it starts."""

    def tune(settings: Settings) -> Settings:
        sink = settings.sink.model_copy(
            update={"batch_size": batch_size, "flush_interval_s": flush_interval_s}
        )
        return settings.model_copy(update={"sink": sink})

    stack = await start_paper(flow, on_status, tune)
    sink = stack.services.add(
        "sink", ["sink"], command_prefix=sink_command_prefix, OMS_LOG_JSON="true"
    )
    return SinkStack(stack, sink)


# -- ClickHouse compared with Kafka


async def _end_offsets(settings: Settings, topics: list[str]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(**KafkaConnection.from_settings(settings).aiokafka())
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(settings.kafka.partitions)]
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def committed_offsets(
    settings: Settings, group: str, tps: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """The group's committed offsets (0 where nothing is committed)."""
    consumer = AIOKafkaConsumer(
        **KafkaConnection.from_settings(settings).aiokafka(group_id=group, enable_auto_commit=False)
    )
    await consumer.start()
    try:
        return {tp: (await consumer.committed(tp)) or 0 for tp in tps}
    finally:
        await consumer.stop()


async def wait_caught_up(
    settings: Settings, group: str, ends: dict[TopicPartition, int], within: float
) -> tuple[bool, int]:
    """Wait until ``group`` committed at least ``ends``; returns (caught up, lag left)."""
    deadline = time.monotonic() + within
    lag = sum(ends.values())
    while True:
        committed = await committed_offsets(settings, group, list(ends))
        lag = sum(max(0, end - committed[tp]) for tp, end in ends.items())
        if lag == 0:
            return True, 0
        if time.monotonic() > deadline:
            return False, lag
        await asyncio.sleep(0.5)


async def _read_topic(
    settings: Settings, topic: str, ends: dict[TopicPartition, int]
) -> list[tuple[int, int, bytes | None]]:
    """Every record of ``topic`` below ``ends``: (partition, offset, value)."""
    tps = [tp for tp in ends if tp.topic == topic and ends[tp] > 0]
    if not tps:
        return []
    consumer = AIOKafkaConsumer(
        **KafkaConnection.from_settings(settings).aiokafka(
            enable_auto_commit=False, isolation_level="read_committed"
        )
    )
    await consumer.start()
    out: list[tuple[int, int, bytes | None]] = []
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        left = {tp: ends[tp] for tp in tps}
        deadline = time.monotonic() + 60
        while left and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for tp, records in batch.items():
                out.extend(
                    (tp.partition, r.offset, r.value) for r in records if r.offset < ends[tp]
                )
            # Positions, not offsets seen: transaction markers leave gaps at the end.
            for tp in list(left):
                if await consumer.position(tp) >= left[tp]:
                    del left[tp]
        if left:
            raise TimeoutError(f"could not read {topic} to its end: {left}")
    finally:
        await consumer.stop()
    return out


def _expected_rows(topic: Topic, records: list[tuple[int, int, bytes | None]]) -> dict[str, Any]:
    """Keys each table should hold for these records (orders: key -> highest version)."""
    keys: dict[str, dict[Key, int]] = {}
    malformed = 0

    def put(table: str, key: Key, version: int = 0) -> None:
        table_keys = keys.setdefault(table, {})
        table_keys[key] = max(version, table_keys.get(key, version))

    for partition, offset, value in records:
        try:
            if value is None:
                raise ValueError("empty")
            if topic is Topic.ORDER_EVENTS:
                event = OrderEvent.from_bytes(value)
                put("order_events", event.event_id)
                if event.order is not None:
                    put("orders", event.order_id, event.order.version)
            elif topic is Topic.EXECUTION_REPORTS:
                report = ExecutionReport.from_bytes(value)
                keys.setdefault("executions", {})
                for fill in report.fills:
                    put("executions", (report.order_id, fill.trade_id))
            elif topic is Topic.DEAD_LETTERS:
                DeadLetter.from_bytes(value)
                put("dead_letters", (partition, offset))
            elif topic is Topic.POSITIONS:
                put("position_changes", PositionRecord.from_bytes(value).record_id)
            elif topic is Topic.NOTIFICATIONS:
                n = NotificationRecord.from_bytes(value)
                put("notifications", (n.notification_id, n.channel, n.attempt))
        except (ValueError, TypeError):  # pydantic errors are ValueErrors
            malformed += 1
    return {"keys": keys, "malformed": malformed}


def _key(row: list[Any]) -> Key:
    return row[0] if len(row) == 1 else tuple(row)


async def readable_tables(settings: Settings) -> dict[str, str]:
    """Tables whose ``SELECT count() FROM t FINAL`` fails, with the error (a broken part)."""
    errors: dict[str, str] = {}
    for table in TABLE_KEYS:
        try:
            await run_query(settings, f"SELECT count() FROM {table} FINAL")
        except QueryError as exc:
            errors[table] = str(exc)[:500]
    return errors


async def _table_rows(settings: Settings, table: str) -> dict[str, Any]:
    key = TABLE_KEYS[table]
    cols = key.strip("()")
    version = ", version" if table == "orders" else ""
    raw = (await run_query(settings, f"SELECT count(), uniqExact({cols}) FROM {table}")).rows[0]
    final = (await run_query(settings, f"SELECT {cols}{version} FROM {table} FINAL")).rows
    if table == "orders":
        keys = [row[0] for row in final]
        versions = {row[0]: int(row[1]) for row in final}
    else:
        keys = [_key(row) for row in final]
        versions = {}
    return {"raw": int(raw[0]), "raw_distinct": int(raw[1]), "final": keys, "versions": versions}


async def compare_clickhouse_with_kafka(
    settings: Settings, group: str, catch_up_s: float
) -> dict[str, Any]:
    """Wait for the sink to commit everything produced so far, then compare every compared
    topic's records with the table rows: per table the rows expected (distinct keys), rows
    in ClickHouse raw and after ``FINAL``, missing, extra, duplicates after ``FINAL``
    (and for ``orders``, snapshots older than the newest produced)."""
    topics = [settings.topic(t.value) for t in COMPARED_TOPICS]
    ends = await _end_offsets(settings, topics)
    t0 = time.monotonic()
    caught_up, lag = await wait_caught_up(settings, group, ends, catch_up_s)
    catch_up_seconds = round(time.monotonic() - t0, 1)
    tables: dict[str, dict[str, Any]] = {}
    found: dict[str, dict[str, Any]] = {}
    unreadable: dict[str, str] = {}
    for table in TABLE_KEYS:
        try:
            found[table] = await _table_rows(settings, table)
        except QueryError as exc:  # a corrupted part, say: a finding, not a crash
            unreadable[table] = str(exc)[:500]
            found[table] = {"raw": 0, "raw_distinct": 0, "final": [], "versions": {}}
    # Read after querying, to the newest end: a row in ClickHouse must come from Kafka.
    later = await _end_offsets(settings, topics)
    totals: Counter[str] = Counter()
    for topic in COMPARED_TOPICS:
        name = settings.topic(topic.value)
        records = await _read_topic(settings, name, later)
        in_snapshot = [r for r in records if r[1] < ends.get(TopicPartition(name, r[0]), 0)]
        expected = _expected_rows(topic, in_snapshot)
        everything = _expected_rows(topic, records)
        for table, keys in expected["keys"].items():
            rows = found[table]
            present = set(rows["final"])
            missing = [k for k in keys if k not in present]
            extra = [k for k in present if k not in everything["keys"].get(table, {})]
            dup_final = len(rows["final"]) - len(present)
            stale = [k for k in keys if k in rows["versions"] and rows["versions"][k] < keys[k]]
            entry = {
                "kafka_records": len(in_snapshot),
                "expected_rows": len(keys),
                "clickhouse_raw": rows["raw"],
                "clickhouse_final": len(rows["final"]),
                "duplicates_raw": rows["raw"] - rows["raw_distinct"],
                "duplicates_final": dup_final,
                "missing": len(missing),
                "extra": len(extra),
            }
            if table == "orders":
                entry["stale_version"] = len(stale)
            if expected["malformed"]:
                entry["kafka_malformed"] = expected["malformed"]
            if missing or extra or stale:
                entry["examples"] = {
                    "missing": [str(k) for k in missing[:5]],
                    "extra": [str(k) for k in extra[:5]],
                    "stale": [str(k) for k in stale[:5]],
                }
            tables[table] = entry
            totals["missing"] += len(missing) + len(stale)
            totals["extra"] += len(extra)
            totals["duplicates_final"] += dup_final
            totals["duplicates_raw"] += entry["duplicates_raw"]
    ok = caught_up and not (
        totals["missing"] or totals["extra"] or totals["duplicates_final"] or unreadable
    )
    return {
        "ok": ok,
        "caught_up": caught_up,
        "lag_left": lag,
        "catch_up_s": catch_up_seconds,
        "missing_rows": totals["missing"],
        "extra_rows": totals["extra"],
        "duplicates_after_final": totals["duplicates_final"],
        "duplicates_raw": totals["duplicates_raw"],
        "tables": tables,
        "unreadable_tables": unreadable,
    }


# -- the result every scenario returns


def sink_result(
    scenario: str,
    *,
    orders: dict[str, Any],
    requests: int,
    comparison: dict[str, Any],
    faults: dict[str, Any],
    seconds: float,
    checks: dict[str, bool],
    details: dict[str, Any],
) -> dict[str, Any]:
    """:func:`oms_dev.chaos.verdict.make_result` from the order audit
    (:meth:`oms_dev.chaos.flow.PacedFlow.audit`); the ClickHouse comparison and every
    scenario-specific check in ``checks`` must hold too (positions and notifications are
    not checked: no keeper, no notifier in this stack)."""
    failed = [name for name, held in checks.items() if not held]
    rows = (
        f"ClickHouse {comparison['missing_rows']} missing, {comparison['extra_rows']} extra, "
        f"{comparison['duplicates_after_final']} doubled after FINAL"
    )
    faults = {**faults, "summary": "; ".join(filter(None, [faults.get("summary"), rows]))}
    if not comparison.get("ok"):
        unreadable = len(comparison["unreadable_tables"])
        failed.insert(0, f"clickhouse_vs_kafka ({rows}, {unreadable} tables unreadable)")
    return make_result(
        scenario,
        requests=requests,
        **order_counts(orders),
        positions_mismatched=None,
        notifications_lost=None,
        notifications_doubled=None,
        faults=faults,
        seconds=seconds,
        details={
            **orders["details"],
            "checks": checks,
            "clickhouse_vs_kafka": comparison,
            **details,
        },
        extra_failure=f"failed: {', '.join(failed)}" if failed else None,
    )


def read_json_log(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a service log (other lines, e.g. chDB's own, are skipped)."""
    out: list[dict[str, Any]] = []
    if not path.exists():
        return out
    for line in path.read_bytes().splitlines():
        if line.startswith(b"{"):
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
    return out
