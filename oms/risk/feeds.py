"""Feeds every worker's :class:`~oms.risk.book.RiskBook` from topics it reads fully.

One group-less aiokafka consumer (no consumer group: every worker gets every partition):

| topic | from | into the book |
|---|---|---|
| ``oms.risk-controls`` (compacted) | the beginning | controls per account |
| ``oms.positions`` | the beginning | position sizes, today's P&L |
| the orders table's changelog (compacted) | the beginning | live orders per account |

Prices (marks, index prices) are not read here: the worker's one tick consumer
(:mod:`oms.market.feed`) keeps them in its market cache, which the risk engine reads.

``ready`` is set once everything that was on the first three when the feed started has been
read, and intake waits for it: a worker never checks an order against a half-loaded book.

What a message that cannot be read (see :mod:`oms.schemas.decode`) does, per topic:

| topic | tombstone | empty, not JSON, not the record |
|---|---|---|
| risk-controls | deletes the account's runtime controls | dead letter; previous controls kept |
| orders changelog | deletes the order (Faust's table deletion) | dead letter |
| positions | dead letter | dead letter |

The two compacted topics honour a tombstone because compaction will: a worker started after
it sees neither the record nor the tombstone, so one that kept the old record would enforce
other controls than its peers. On the others nothing is deleted, and a tombstone is just
one more unreadable message. Unreadable messages are counted by every worker and handed to
``on_undecodable`` when they arrive live (the worker dead-letters those of the partitions it
owns). What was on a topic when the feed started was read live before (by this worker before
a restart, or by another), and reporting it again would repeat the dead letter on every
start.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from oms.component import Component
from oms.kafka.admin import ensure_topics
from oms.kafka.reading import topic_partitions
from oms.kafka.security import KafkaConnection
from oms.risk.book import RiskBook
from oms.schemas import OrderRecord, PositionRecord, Record, Topic
from oms.schemas.decode import KafkaMessage, Undecodable, decode
from oms.schemas.risk import AccountControls
from oms.settings import Settings

log = structlog.get_logger(__name__)

OnUndecodable = Callable[[KafkaMessage, Undecodable], Awaitable[None]]
OnPositions = Callable[[set[str]], Awaitable[None]]


class RiskFeeds(Component):
    """Background reader of the risk topics into a book."""

    def __init__(
        self,
        settings: Settings,
        book: RiskBook,
        orders_changelog: str,
        *,
        on_undecodable: OnUndecodable | None = None,
        on_positions: OnPositions | None = None,
        on_controls: Callable[[AccountControls], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__("risk-feeds")
        self._settings = settings
        self._book = book
        self.controls_topic = settings.topic(Topic.RISK_CONTROLS)
        self.positions_topic = settings.topic(Topic.POSITIONS)
        self.orders_topic = orders_changelog
        self._on_undecodable = on_undecodable
        self._on_positions = on_positions
        self._on_controls = on_controls
        self.ready = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        # Per topic kind (controls, orders, positions): records applied, deletions,
        # unreadable messages per reason code ("controls:tombstone", ...).
        self.counters: dict[str, int] = {}
        self._kinds = {
            self.controls_topic: "controls",
            self.orders_topic: "orders",
            self.positions_topic: "positions",
        }
        # Per partition, the end offset when the feed (re)started: below it is history.
        self._live_from: dict[TopicPartition, int] = {}

    async def on_start(self) -> None:
        self.spawn(self._run_forever(), "read")

    async def _run_forever(self) -> None:
        # A broken feed must not leave the book silently stale: log, and read again from
        # scratch (every input is idempotent: latest-wins records, deduplicated positions).
        while True:
            try:
                await self._run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("risk.feed_failed")
                if self._consumer is not None:
                    with contextlib.suppress(Exception):
                        await self._consumer.stop()
                    self._consumer = None
                await asyncio.sleep(1.0)

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def _partitions(self, consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
        # The changelog is created by Faust while the worker starts: wait for it to appear.
        return await topic_partitions(consumer, topic)

    async def _run(self) -> None:
        # The risk topics may be new to an existing deployment (idempotent).
        await ensure_topics(self._settings)
        consumer = self._consumer = AIOKafkaConsumer(
            **KafkaConnection.from_settings(self._settings).aiokafka(
                enable_auto_commit=False, group_id=None, max_poll_records=5_000
            )
        )
        await consumer.start()
        full = [
            tp
            for topic in (self.controls_topic, self.positions_topic, self.orders_topic)
            for tp in await self._partitions(consumer, topic)
        ]
        consumer.assign(full)
        await consumer.seek_to_beginning(*full)
        ends = await consumer.end_offsets(full)
        self._live_from = dict(ends)
        pending = {tp for tp in full if ends[tp] > 0}
        if not pending:
            self.ready.set()
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            touched: set[str] = set()
            for tp, messages in batch.items():
                for message in messages:
                    await self._apply(tp, message, touched)
            if pending:
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
                if not pending:
                    log.info("risk.feeds_ready", controls=len(self._book.accounts_with_controls()))
                    self.ready.set()
            if touched and self._on_positions is not None and self.ready.is_set():
                await self._on_positions(touched)

    def stats(self) -> dict[str, object]:
        """Counters for the worker's ``/stats``, and whether the start-up read is done."""
        return {"ready": self.ready.is_set(), **self.counters}

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    async def _apply(self, tp: TopicPartition, message: KafkaMessage, touched: set[str]) -> None:
        kind = self._kinds.get(tp.topic)
        if kind is None:
            return
        value = message.value
        if value is None and kind in ("controls", "orders") and message.key is not None:
            key = message.key
            self._delete(
                kind, table_key(key) if kind == "orders" else key.decode("utf-8", "replace")
            )
            return
        record = decode(_MODELS[kind], value)
        if isinstance(record, Undecodable):
            await self._undecodable(kind, tp, message, record)
            return
        self._count(kind)
        if isinstance(record, OrderRecord):
            self._book.apply_order(record)
        elif isinstance(record, PositionRecord):
            self._book.apply_position(record)
            touched.add(record.account_id)
        elif isinstance(record, AccountControls):
            self._book.apply_controls(record)
            if self._on_controls is not None and self.ready.is_set():
                await self._on_controls(record)

    def _delete(self, kind: str, key: str) -> None:
        """A tombstone on a compacted topic: the key's record is gone."""
        self._count(f"{kind}:deleted")
        if kind == "orders":
            self._book.forget_order(key)
            return
        if self._book.drop_controls(key):
            # Loud: deleting an account's controls can lift a halt or a limit.
            log.warning("risk.controls_deleted", account_id=key)

    async def _undecodable(
        self, kind: str, tp: TopicPartition, message: KafkaMessage, failure: Undecodable
    ) -> None:
        self._count(f"{kind}:{failure.reason_code.value}")
        live = message.offset >= self._live_from.get(tp, 0)
        if not live or self._on_undecodable is None:
            return
        if kind == "controls":
            failure = Undecodable(
                failure.reason_code,
                f"controls refused, previous ones stay in force: {failure.error}",
            )
        await self._on_undecodable(message, failure)


def table_key(raw: bytes) -> str:
    """The order id of a record of the orders table's changelog: Faust writes a table's
    ``str`` keys as JSON strings (``"o-..."``, quotes included)."""
    try:
        key = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")
    return key if isinstance(key, str) else raw.decode("utf-8", "replace")


# The record each topic kind carries.
_MODELS: dict[str, type[Record]] = {
    "controls": AccountControls,
    "orders": OrderRecord,
    "positions": PositionRecord,
}
