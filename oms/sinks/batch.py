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
    MarketTick,
    MetricsSample,
    NotificationRecord,
    OrderEvent,
    Topic,
)
from oms.schemas.decode import EMPTY, TOMBSTONE, Undecodable, failure_of
from oms.settings import Settings
from oms.sinks.clickhouse import rows as R
from oms.sinks.staged import STAGED

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

# A batch is full when its tables hold ``batch_size`` rows each on average, or, whatever its
# rows (ticks sampled out, malformed messages), once it holds this many times ``batch_size``
# messages.
MESSAGES_PER_BATCH_FACTOR = 4


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
    # staging table -> the JSON messages ClickHouse turns into rows (oms.sinks.staged)
    raw: dict[str, list[bytes]] = field(default_factory=dict)
    # staging table -> rows those messages become in the real table
    raw_rows: dict[str, int] = field(default_factory=dict)
    # table or staging table -> (topic, partition) -> [first offset, last offset] that
    # produced its rows
    ranges: dict[str, dict[tuple[str, int], list[int]]] = field(default_factory=dict)
    # (topic, partition) -> next offset to commit once every row is inserted
    commit: dict[tuple[str, int], int] = field(default_factory=dict)
    messages: int = 0
    malformed: int = 0
    # Malformed messages, for the dead-letter topic before the batch is committed.
    dead_letters: list[DeadLetter] = field(default_factory=list)
    sampled_out: int = 0
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def for_settings(cls, settings: Settings, sampler: TickSampler) -> Batch:
        return cls(topics={settings.topic(t.value): t for t in SINK_TOPICS}, sampler=sampler)

    def __len__(self) -> int:
        return self.messages

    def age(self) -> float:
        return time.monotonic() - self.started

    def table_rows(self) -> list[int]:
        """Rows per table with rows in this batch (a staging table counts the rows its view
        writes)."""
        return [n for n in (*map(len, self.rows.values()), *self.raw_rows.values()) if n]

    def room(self, batch_size: int) -> int:
        """Messages to fetch before the batch may be full (at least 1)."""
        return max(1, self._left(batch_size))

    def full(self, batch_size: int) -> bool:
        """Its tables hold ``batch_size`` rows each on average, or it reached the message cap.

        ``batch_size`` is rows per insert: each table is one insert, and ClickHouse pays per
        insert and per part, so a batch of two busy topics' messages holds twice as many."""
        return self._left(batch_size) <= 0

    def _left(self, batch_size: int) -> int:
        """Rows still wanted for the average, or messages left under the cap: the fewer."""
        rows = self.table_rows()
        return min(
            batch_size * max(1, len(rows)) - sum(rows),
            MESSAGES_PER_BATCH_FACTOR * batch_size - self.messages,
        )

    def add(self, msg: Message) -> None:
        """Turn one message into rows; malformed ones are counted, logged and skipped."""
        if not self.messages:
            self.started = time.monotonic()
        self.messages += 1
        key = (msg.topic, msg.partition)
        offset = msg.offset
        if self.commit.get(key, 0) <= offset:
            self.commit[key] = offset + 1
        topic = self.topics.get(msg.topic)
        if topic is None:
            return
        value = msg.value
        if not value:
            # None of the topics the sink stores is compacted: a tombstone deletes nothing.
            self._malformed(topic, msg, TOMBSTONE if value is None else EMPTY)
            return
        staged = STAGED.get(topic)
        try:
            if staged is not None:
                # Hot path, kept flat: most messages are position records and reports.
                count, staged_rows = staged.parse(value)
                if count:
                    lines = self.raw.get(staged.staging)
                    if lines is None:
                        lines = self.raw[staged.staging] = []
                    lines.append(value)
                    self.raw_rows[staged.staging] = self.raw_rows.get(staged.staging, 0) + count
                    self._span(staged.staging, key, offset)
                    return
                produced = [(staged.table, staged_rows)]
            else:
                produced = self._rows(topic, msg, value)
        except (pydantic.ValidationError, orjson.JSONDecodeError, ValueError, TypeError) as exc:
            self._malformed(topic, msg, failure_of(exc))
            return
        for table, table_rows in produced:
            if not table_rows:
                continue
            self.rows.setdefault(table, []).extend(table_rows)
            self._span(table, key, msg.offset)

    def _malformed(self, topic: Topic, msg: Message, failure: Undecodable) -> None:
        """Count and log it, and dead-letter it with its reason: nothing is lost. A malformed
        dead letter is only logged: sending it back would loop."""
        self.malformed += 1
        log.warning(
            "sink.malformed_message",
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            reason_code=failure.reason_code.value,
            error=failure.error[:300],
        )
        if topic is not Topic.DEAD_LETTERS:
            self.dead_letters.append(
                failure.letter(
                    msg.value,
                    consumer="sink",
                    source_topic=msg.topic,
                    key=None,
                    partition=msg.partition,
                    offset=msg.offset,
                )
            )

    def _span(self, table: str, key: tuple[str, int], offset: int) -> None:
        spans = self.ranges.get(table)
        if spans is None:
            spans = self.ranges[table] = {}
        span = spans.get(key)
        if span is None:
            spans[key] = [offset, offset]
        elif offset > span[1]:  # offsets of a partition arrive in order: the usual case
            span[1] = offset
        elif offset < span[0]:
            span[0] = offset

    def _rows(self, topic: Topic, msg: Message, value: bytes) -> list[tuple[str, list[R.Row]]]:
        # One branch per topic, the busiest first (positions and execution reports: _staged).
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
        """``insert_deduplication_token`` for this table's rows (or a staging table's
        messages): the exact source ranges, so a retry of this batch is recognised and a
        different batch never is."""
        spans = sorted(self.ranges.get(table, {}).items())
        text = table + "|" + ",".join(f"{t}:{p}:{a}-{b}" for (t, p), (a, b) in spans)
        return f"{table}:{hashlib.blake2b(text.encode(), digest_size=16).hexdigest()}"
