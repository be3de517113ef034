"""Feeds every worker's :class:`~oms.risk.book.RiskBook` from topics it reads fully.

One group-less aiokafka consumer (no consumer group: every worker gets every partition):

| topic | from | into the book |
|---|---|---|
| ``oms.risk-controls`` (compacted) | the beginning | controls per account |
| ``oms.positions`` | the beginning | position sizes, today's P&L |
| the orders table's changelog (compacted) | the beginning | live orders per account |
| ``oms.market-ticks`` | the last ``mark_lookback`` per partition | mark and index prices |

``ready`` is set once everything that was on the first three when the feed started has been
read, and intake waits for it: a worker never checks an order against a half-loaded book.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from oms.kafka_admin import ensure_topics
from oms.risk.book import RiskBook
from oms.schemas import MarketTick, OrderRecord, PositionRecord, Topic
from oms.schemas.risk import AccountControls
from oms.settings import Settings

log = structlog.get_logger(__name__)

OnBadControls = Callable[[bytes, bytes | None, int, int, str], Awaitable[None]]
OnPositions = Callable[[set[str]], Awaitable[None]]


class RiskFeeds:
    """Background reader of the risk topics into a book."""

    def __init__(
        self,
        settings: Settings,
        book: RiskBook,
        orders_changelog: str,
        *,
        on_bad_controls: OnBadControls | None = None,
        on_positions: OnPositions | None = None,
        on_controls: Callable[[AccountControls], Awaitable[None]] | None = None,
    ) -> None:
        self._settings = settings
        self._book = book
        self.controls_topic = settings.topic(Topic.RISK_CONTROLS)
        self.positions_topic = settings.topic(Topic.POSITIONS)
        self.ticks_topic = settings.topic(Topic.MARKET_TICKS)
        self.orders_topic = orders_changelog
        self._on_bad_controls = on_bad_controls
        self._on_positions = on_positions
        self._on_controls = on_controls
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self.counters: dict[str, int] = {}

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run_forever(), name="risk-feeds")

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

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def _partitions(self, consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
        # The changelog is created by Faust while the worker starts: wait for it to appear.
        while True:
            parts = consumer.partitions_for_topic(topic)
            if parts:
                return [TopicPartition(topic, p) for p in sorted(parts)]
            with contextlib.suppress(KafkaError):
                await consumer._client.force_metadata_update()
            await asyncio.sleep(0.2)

    async def _run(self) -> None:
        # The risk topics may be new to an existing deployment (idempotent).
        await ensure_topics(self._settings)
        consumer = self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.kafka.bootstrap,
            enable_auto_commit=False,
            group_id=None,
            max_poll_records=5_000,
        )
        await consumer.start()
        full = [
            tp
            for topic in (self.controls_topic, self.positions_topic, self.orders_topic)
            for tp in await self._partitions(consumer, topic)
        ]
        ticks = await self._partitions(consumer, self.ticks_topic)
        consumer.assign(full + ticks)
        await consumer.seek_to_beginning(*full)
        tick_ends = await consumer.end_offsets(ticks)
        for tp in ticks:
            consumer.seek(tp, max(0, tick_ends[tp] - self._settings.risk.mark_lookback))
        ends = await consumer.end_offsets(full)
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

    async def _apply(self, tp: TopicPartition, message: object, touched: set[str]) -> None:
        value: bytes | None = message.value  # type: ignore[attr-defined]
        if value is None:
            return
        topic = tp.topic
        try:
            if topic == self.orders_topic:
                self._book.apply_order(OrderRecord.from_bytes(value))
            elif topic == self.ticks_topic:
                self._book.apply_tick(MarketTick.from_bytes(value))
            elif topic == self.positions_topic:
                record = PositionRecord.from_bytes(value)
                self._book.apply_position(record)
                touched.add(record.account_id)
            elif topic == self.controls_topic:
                controls = AccountControls.from_bytes(value)
                self._book.apply_controls(controls)
                if self._on_controls is not None and self.ready.is_set():
                    await self._on_controls(controls)
        except ValidationError as exc:
            self.counters[f"invalid:{topic}"] = self.counters.get(f"invalid:{topic}", 0) + 1
            if topic == self.controls_topic and self._on_bad_controls is not None:
                # Nonsense limits written straight to the topic: refused, evidence kept,
                # the previous controls stay in force.
                await self._on_bad_controls(
                    value,
                    message.key,  # type: ignore[attr-defined]
                    tp.partition,
                    message.offset,  # type: ignore[attr-defined]
                    str(exc.errors()[:3]),
                )
            else:
                log.warning("risk.feed_invalid_record", topic=topic, error=str(exc)[:300])
