"""The keeper's first hop: execution reports -> bundles per position on the internal topic.

A plain aiokafka consumer rather than a Faust agent: this hop keeps no state, and Faust's
per-message machinery (conductor, stream channel, acks) cost several times the routing work
itself. Offsets are committed only after the bundles of a batch are flushed to the broker,
so a crash re-forwards (the apply agent counts each trade once) and never loses a report.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import TopicPartition

from oms.kafka.security import KafkaConnection
from oms.schemas import DEFAULT_VENUE, position_key
from oms.settings import Settings

log = structlog.get_logger(__name__)

Send = Callable[[str, bytes], Awaitable[None]]


class ReportRouter:
    """Consumes ``execution-reports`` in batches and forwards reports with fills."""

    def __init__(
        self, settings: Settings, group_id: str, send: Send, flush: Callable[[], Awaitable[None]]
    ) -> None:
        self.settings = settings
        self.topic = settings.topic("execution-reports")
        self.group_id = group_id
        self.send = send
        self.flush = flush
        self.counters: dict[str, int] = defaultdict(int)
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        # Next offset to read per partition once the current batch is forwarded.
        self._done: dict[TopicPartition, int] = {}
        # Whether the group has handed this consumer its partitions (maybe none): before
        # that, an empty assignment says nothing about being caught up.
        self._assigned = asyncio.Event()

    async def start(self) -> None:
        ps = self.settings.positions
        self._consumer = AIOKafkaConsumer(
            **KafkaConnection.from_settings(self.settings).aiokafka(
                group_id=self.group_id,
                client_id=self.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=ps.take_max,
                session_timeout_ms=int(self.settings.worker.session_timeout_s * 1000),
            )
        )
        self._consumer.subscribe([self.topic], listener=_Assignments(self._assigned))
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="positions-route")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 10)
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()

    async def _run(self) -> None:
        assert self._consumer is not None
        within_ms = int(self.settings.positions.take_within_s * 1000)
        while not self._stop.is_set():
            try:
                batch = await self._consumer.getmany(
                    timeout_ms=within_ms, max_records=self.settings.positions.take_max
                )
                if batch:
                    await self._forward(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep routing; uncommitted input is read again
                self.counters["errors"] += 1
                log.warning("positions.route_failed", error=str(exc)[:300])
                await asyncio.sleep(0.5)

    async def _forward(self, batch: dict[TopicPartition, list[Any]]) -> None:
        assert self._consumer is not None
        bundles: dict[str, list[bytes]] = defaultdict(list)
        offsets: dict[TopicPartition, int] = {}
        for tp, records in batch.items():
            for record in records:
                offsets[tp] = record.offset + 1
                key = _route_key(record.value)
                if key is None:
                    # Not a report (the order worker dead-letters those) or no fills.
                    self.counters["skipped"] += 1
                    continue
                self.counters["reports"] += 1
                bundles[key].append(record.value)
        for key, raws in bundles.items():
            await self.send(key, b'{"reports":[' + b",".join(raws) + b"]}")
            self.counters["bundles"] += 1
        await self.flush()
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance took the partitions: their next owner re-forwards, which is safe.
            self.counters["commit_failures"] += 1
            log.info("positions.route_commit_failed", error=str(exc)[:200])
        self._done.update(offsets)

    async def caught_up(self) -> bool:
        """Every report published so far on our partitions has been forwarded: by us since
        we started, or before (the group's committed offset; without it a restarted keeper
        waited for new traffic on every partition)."""
        if self._consumer is None or not self._assigned.is_set():
            return False
        assigned = list(self._consumer.assignment())
        if not assigned:
            return True  # the group gave this keeper no partitions: nothing to forward
        ends = await self._consumer.end_offsets(assigned)
        for tp, end in ends.items():
            done = self._done.get(tp, -1)
            if end == 0 or done >= end:
                continue
            committed = await self._consumer.committed(tp)
            if committed is None or committed < end:
                return False
        return True


class _Assignments(ConsumerRebalanceListener):
    """Tells when the group has assigned partitions (possibly none), and when it took them."""

    def __init__(self, assigned: asyncio.Event) -> None:
        self._event = assigned

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self._event.clear()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._event.set()


def _route_key(raw: bytes | None) -> str | None:
    """The position key of a report with fills, after a cheap look (the apply agent
    validates the whole report)."""
    if not raw:
        return None
    try:
        head = orjson.loads(raw)
        account, instrument = head["account_id"], head["instrument_name"]
        venue = head.get("venue", DEFAULT_VENUE)
    except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError):
        return None
    if not head.get("fills") or not all(isinstance(v, str) for v in (account, instrument, venue)):
        return None
    return position_key(account, instrument, venue)
