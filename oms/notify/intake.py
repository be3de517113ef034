"""The notifier's input from Kafka, decoded.

* :class:`EventIntake`: ``oms.order-events`` and ``oms.positions`` in batches, one consumer
  group. A batch's offsets are committed only after what it changed is durable, so an event
  is either replayed after a crash or already in a pending notification.
* :class:`ControlIntake`: the compacted settings and acknowledgement topics, read from the
  beginning at every start (settings are in force before the first event is routed), then
  followed.

Anything that cannot be decoded becomes a dead letter (:class:`DeadLetters`), on the broker
before the offsets that skip it are committed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from oms.component import Component
from oms.kafka.reading import topic_partitions
from oms.kafka.security import KafkaConnection
from oms.notify.model import Notice
from oms.notify.rules import notice_from_event, notice_from_position
from oms.schemas import DeadLetter, OrderEvent, PositionRecord, ReasonCode
from oms.schemas.decode import R, Undecodable, decode
from oms.schemas.notify_settings import NotificationAck, NotificationSettings

log = structlog.get_logger(__name__)

Admit = Callable[[Notice, tuple[str, int]], None]


class DeadLetters:
    """Dead letters of unreadable input, queued until :meth:`flush` puts them on the broker."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic
        self._queued: list[DeadLetter] = []

    def add(self, msg: Any, failure: Undecodable) -> None:
        """Queue the dead letter of ``msg``."""
        self._queued.append(failure.letter_for(msg, consumer="notifier"))

    async def flush(self) -> None:
        """Send the queued letters and wait until the broker has them all."""
        dead, self._queued = self._queued, []
        try:
            sent = [
                await self._producer.send(
                    self._topic,
                    key=letter.key.encode() if letter.key else None,
                    value=letter.to_bytes(),
                )
                for letter in dead
            ]
            await asyncio.gather(*sent)
        except Exception:
            # Broker trouble: keep them for the next flush (the batch is retried too).
            self._queued = dead + self._queued
            raise


class CommitGate:
    """Keeps delivery off what an uncommitted batch touched.

    The intake holds :attr:`lock` while it applies a batch, and :attr:`committed` is False
    from its start until its offsets are committed; delivery seals and sends only under the
    lock and while committed. So no pending holding an uncommitted event is ever sent, and a
    replayed event never belongs to a notification already delivered."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.committed = True


class _Following(Component):
    """A part that follows topics with its own consumer (:attr:`_consumer`, made by its
    :meth:`on_start`) and closes it when it stops."""

    _consumer: AIOKafkaConsumer | None = None

    async def on_stop(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
            self._consumer = None


class EventIntake(_Following):
    """Order events and position records -> notices for the aggregator."""

    def __init__(
        self,
        *,
        kafka: KafkaConnection,
        group_id: str,
        events_topic: str,
        positions_topic: str,
        max_records: int,
        gate: CommitGate,
        admit: Admit,
        account_settings: Callable[[str], NotificationSettings | None],
        make_durable: Callable[[], Awaitable[None]],
        dead_letters: DeadLetters,
        on_committed: Callable[[], None],
    ) -> None:
        super().__init__("notify-consume")
        self._kafka = kafka
        self._group_id = group_id
        self._events_topic = events_topic
        self._positions_topic = positions_topic
        self._max_records = max_records
        self._gate = gate
        self._admit = admit
        self._account_settings = account_settings
        self._make_durable = make_durable
        self._dead = dead_letters
        self._on_committed = on_committed
        self.counters: Counter[str] = Counter()

    async def on_start(self) -> None:
        # Join the group and consume in the background. Stopping leaves the group: what is
        # not committed is replayed later.
        self._consumer = AIOKafkaConsumer(
            self._events_topic,
            self._positions_topic,
            **self._kafka.aiokafka(
                group_id=self._group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=self._max_records,
                fetch_max_bytes=16 * 1024 * 1024,
            ),
        )
        await self._consumer.start()
        self.spawn(self._consume(self._consumer), "consume")

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=200, max_records=self._max_records)
            except KafkaError as exc:
                self.counters["kafka_errors"] += 1
                log.warning("notify.kafka_error", error=type(exc).__name__)
                await asyncio.sleep(1.0)
                continue
            if not batch:
                continue
            try:
                await self._apply(consumer, batch)
            except Exception:
                # State not durable or offsets not committed: nothing is lost (the changes stay
                # in memory and dirty, the offsets uncommitted); try again with the next batch.
                self.counters["batch_errors"] += 1
                log.exception("notify.batch_failed")
                await asyncio.sleep(1.0)

    async def _apply(self, consumer: AIOKafkaConsumer, batch: dict[Any, list[Any]]) -> None:
        async with self._gate.lock:
            self._gate.committed = False
            for tp, msgs in batch.items():
                for msg in msgs:
                    self.counters["consumed"] += 1
                    if tp.topic == self._events_topic:
                        self._on_event(msg)
                    else:
                        self._on_position(msg)
            # Durable before committed: a crash after this replays nothing already pending.
            await self._make_durable()
            await self._dead.flush()
            await consumer.commit()
            self._gate.committed = True
        self.counters["committed"] += sum(len(m) for m in batch.values())
        self._on_committed()

    def _on_event(self, msg: Any) -> None:
        # Neither input is compacted: a tombstone deletes nothing and is dead-lettered.
        event = decode(OrderEvent, msg.value)
        if isinstance(event, Undecodable):
            self.counters["malformed"] += 1
            self._dead.add(msg, event)
            return
        self.counters["events"] += 1
        notice = notice_from_event(event)
        if notice is not None:
            self._admit(notice, (f"{msg.topic}:{msg.partition}", msg.offset))

    def _on_position(self, msg: Any) -> None:
        record = decode(PositionRecord, msg.value)
        if isinstance(record, Undecodable):
            self.counters["malformed"] += 1
            self._dead.add(msg, record)
            return
        self.counters["positions"] += 1
        settings = self._account_settings(record.account_id)
        if settings is None:
            return
        notice = notice_from_position(record, settings)
        if notice is not None:
            self._admit(notice, (f"{msg.topic}:{msg.partition}", msg.offset))


class ControlIntake(_Following):
    """Account settings and alert acknowledgements, from their compacted topics."""

    def __init__(
        self,
        *,
        kafka: KafkaConnection,
        settings_topic: str,
        acks_topic: str,
        apply_settings: Callable[[NotificationSettings], None],
        remove_settings: Callable[[str], None],
        acknowledge: Callable[[str, int], bool],
        forget_ack: Callable[[str], None],
        dead_letters: DeadLetters,
    ) -> None:
        super().__init__("notify-control")
        self._kafka = kafka
        self._settings_topic = settings_topic
        self._acks_topic = acks_topic
        self._apply_settings = apply_settings
        self._remove_settings = remove_settings
        self._acknowledge = acknowledge
        self._forget_ack = forget_ack
        self._dead = dead_letters
        self.counters: Counter[str] = Counter()

    async def on_start(self) -> None:
        # Read both topics to their end, then follow them in the background.
        consumer = AIOKafkaConsumer(**self._kafka.aiokafka(enable_auto_commit=False, group_id=None))
        self._consumer = consumer
        await consumer.start()
        tps: list[TopicPartition] = []
        for name in (self._settings_topic, self._acks_topic):
            tps.extend(await topic_partitions(consumer, name, wait_s=5.0, poll_s=0.1))
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        # Settings known before the first event is routed.
        while not await self._at(consumer, end):
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for msgs in batch.values():
                for msg in msgs:
                    self._apply(msg)
        await self._dead.flush()
        self.spawn(self._follow(consumer), "follow")

    @staticmethod
    async def _at(consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> bool:
        for tp, offset in end.items():
            if await consumer.position(tp) < offset:
                return False
        return True

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=500, max_records=1000)
                for msgs in batch.values():
                    for msg in msgs:
                        self._apply(msg)
                if batch:
                    await self._dead.flush()
            except Exception:
                log.exception("notify.control_failed")
                await asyncio.sleep(1.0)

    def _apply(self, msg: Any) -> None:
        """Apply one record of the settings or acks topic. Both are read from the beginning
        at every start, so what is dead-lettered here is dead-lettered again by the next
        start while the bad record is the latest of its key."""
        if msg.topic == self._settings_topic:
            self._apply_settings_record(msg)
        elif msg.topic == self._acks_topic:
            self._apply_ack_record(msg)

    def _apply_settings_record(self, msg: Any) -> None:
        # A deletion (keyed by account): the account is back to the default settings. An
        # unreadable record leaves the previous settings in force.
        read = self._read_compacted(
            msg,
            NotificationSettings,
            forget=self._remove_settings,
            forgotten="settings_deleted",
            invalid="settings_invalid",
            schema_reason=ReasonCode.INVALID_SETTINGS,
        )
        if read is None:
            return
        key, new = read
        if key and new.account_id != key:
            self.counters["settings_invalid"] += 1
            self._dead.add(
                msg, Undecodable(ReasonCode.INVALID_SETTINGS, "key is not the account_id")
            )
            return
        self._apply_settings(new)
        self.counters["settings_applied"] += 1
        log.info("notify.settings_applied", account_id=new.account_id)

    def _apply_ack_record(self, msg: Any) -> None:
        # A deletion (keyed by alert id) prunes the acknowledgement.
        read = self._read_compacted(
            msg,
            NotificationAck,
            forget=self._forget_ack,
            forgotten="acks_pruned",
            invalid="acks_invalid",
        )
        if read is None:
            return
        ack = read[1]
        self.counters["acks_applied"] += 1
        if self._acknowledge(ack.alert_id, ack.acked_at):
            log.info("notify.alert_acked", alert_id=ack.alert_id, by=ack.by)

    def _read_compacted(
        self,
        msg: Any,
        model: type[R],
        *,
        forget: Callable[[str], None],
        forgotten: str,
        invalid: str,
        schema_reason: ReasonCode = ReasonCode.SCHEMA_INVALID,
    ) -> tuple[str, R] | None:
        """The key and record of a message on a compacted topic, or None when there is
        nothing to apply: a tombstone has its key forgotten (as compaction and a restart
        would), an unreadable value is dead-lettered (``schema_reason`` for one of the wrong
        shape) and kept as evidence. ``forgotten`` and ``invalid`` name their counters."""
        key = msg.key.decode(errors="replace") if msg.key else ""
        if msg.value is None and key:
            forget(key)
            self.counters[forgotten] += 1
            return None
        record = decode(model, msg.value)
        if isinstance(record, Undecodable):
            self.counters[invalid] += 1
            if record.reason_code is ReasonCode.SCHEMA_INVALID:
                record = Undecodable(schema_reason, record.error)
            self._dead.add(msg, record)
            return None
        return key, record
