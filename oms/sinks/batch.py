"""A batch of consumed messages turned into table rows, with what to commit after insert."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import orjson
import pydantic
import structlog

from oms.schemas import (
    DeadLetter,
    ExecutionReport,
    MarketTick,
    MetricsSample,
    NotificationRecord,
    OrderEvent,
    PositionRecord,
    Topic,
)
from oms.settings import Settings
from oms.sinks.clickhouse import rows as R

log = structlog.get_logger(__name__)

# Topics the sink stores, in the order their tables are flushed.
SINK_TOPICS: tuple[Topic, ...] = (
    Topic.ORDER_EVENTS,
    Topic.EXECUTION_REPORTS,
    Topic.MARKET_TICKS,
    Topic.DEAD_LETTERS,
    Topic.POSITIONS,
    Topic.NOTIFICATIONS,
    Topic.METRICS,
)


class Message(NamedTuple):
    """The parts of a Kafka record the sink needs (a tuple: one is built per record)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


class TickSampler:
    """Keeps at most one tick per instrument per ``sample_ms`` period (the first one seen).

    Periods are aligned to the epoch, so the kept row's ``bucket`` is the same however the
    stream is cut; ticks older than the last kept period are dropped.
    """

    def __init__(self, sample_ms: int) -> None:
        self.sample_ms = sample_ms
        self._last: dict[str, int] = {}

    def bucket(self, tick: MarketTick) -> int | None:
        """Start of the tick's period if it is kept, else None."""
        period = self.sample_ms
        start = tick.timestamp - tick.timestamp % period if period else tick.timestamp
        last = self._last.get(tick.instrument_name)
        if last is not None and start <= last:
            return None
        self._last[tick.instrument_name] = start
        return start


@dataclass
class Batch:
    """Rows per table plus the Kafka positions they came from."""

    topics: dict[str, Topic]
    sampler: TickSampler
    rows: dict[str, list[R.Row]] = field(default_factory=dict)
    # table -> (topic, partition) -> [first offset, last offset] that produced its rows
    ranges: dict[str, dict[tuple[str, int], list[int]]] = field(default_factory=dict)
    # (topic, partition) -> next offset to commit once every row is inserted
    commit: dict[tuple[str, int], int] = field(default_factory=dict)
    messages: int = 0
    malformed: int = 0
    sampled_out: int = 0
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def for_settings(cls, settings: Settings, sampler: TickSampler) -> Batch:
        return cls(topics={settings.topic(t.value): t for t in SINK_TOPICS}, sampler=sampler)

    def __len__(self) -> int:
        return self.messages

    def age(self) -> float:
        return time.monotonic() - self.started

    def add(self, msg: Message) -> None:
        """Turn one message into rows; malformed ones are counted, logged and skipped."""
        if not self.messages:
            self.started = time.monotonic()
        self.messages += 1
        key = (msg.topic, msg.partition)
        self.commit[key] = max(self.commit.get(key, 0), msg.offset + 1)
        topic = self.topics.get(msg.topic)
        if topic is None:
            return
        try:
            produced = self._rows(topic, msg)
        except (pydantic.ValidationError, orjson.JSONDecodeError, ValueError, TypeError) as exc:
            self.malformed += 1
            log.warning(
                "sink.malformed_message",
                topic=msg.topic,
                partition=msg.partition,
                offset=msg.offset,
                error=str(exc).splitlines()[0][:300],
            )
            return
        for table, table_rows in produced:
            if not table_rows:
                continue
            self.rows.setdefault(table, []).extend(table_rows)
            span = self.ranges.setdefault(table, {}).setdefault(key, [msg.offset, msg.offset])
            span[0] = min(span[0], msg.offset)
            span[1] = max(span[1], msg.offset)

    def _rows(self, topic: Topic, msg: Message) -> list[tuple[str, list[R.Row]]]:
        if msg.value is None:
            raise ValueError("empty message")
        value = msg.value
        # Hot path: one branch per topic, the busiest first.
        if topic is Topic.POSITIONS:
            return [("position_changes", [R.position_row(PositionRecord.from_bytes(value))])]
        if topic is Topic.EXECUTION_REPORTS:
            return [("executions", R.execution_rows(ExecutionReport.from_bytes(value)))]
        if topic is Topic.ORDER_EVENTS:
            return self._order_event(OrderEvent.from_bytes(value), msg)
        if topic is Topic.MARKET_TICKS:
            return self._tick(MarketTick.from_bytes(value))
        if topic is Topic.DEAD_LETTERS:
            letter = DeadLetter.from_bytes(value)
            return [("dead_letters", [R.dead_letter_row(letter, msg.partition, msg.offset)])]
        if topic is Topic.NOTIFICATIONS:
            record = NotificationRecord.from_bytes(value)
            return [("notifications", [R.notification_row(record, msg.offset)])]
        if topic is Topic.METRICS:
            return [("metrics", R.metric_rows(MetricsSample.from_bytes(value)))]
        raise ValueError(f"no table for topic {topic.value}")

    @staticmethod
    def _order_event(event: OrderEvent, msg: Message) -> list[tuple[str, list[R.Row]]]:
        out = [("order_events", [R.order_event_row(event, msg.partition, msg.offset)])]
        if event.order is not None:
            out.append(("orders", [R.order_row(event.order, event.event_id)]))
        return out

    def _tick(self, tick: MarketTick) -> list[tuple[str, list[R.Row]]]:
        bucket = self.sampler.bucket(tick)
        if bucket is None:
            self.sampled_out += 1
            return []
        return [("market_ticks", [R.tick_row(tick, bucket)])]

    def token(self, table: str) -> str:
        """``insert_deduplication_token`` for this table's rows: the exact source ranges, so a
        retry of this batch is recognised and a different batch never is."""
        spans = sorted(self.ranges.get(table, {}).items())
        text = table + "|" + ",".join(f"{t}:{p}:{a}-{b}" for (t, p), (a, b) in spans)
        return f"{table}:{hashlib.blake2b(text.encode(), digest_size=16).hexdigest()}"
