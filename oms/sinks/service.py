"""The ClickHouse sink: Kafka topics -> batched, deduplicated inserts -> committed offsets.

Delivery is at-least-once end to end and exactly-once in reads:

* offsets are committed only after every row of a batch is inserted, so a crash replays
  from the last commit and loses nothing;
* a failed insert is retried with backoff, forever, with the same deduplication token
  (see :mod:`oms.sinks.writer`), while the partitions stay paused: nothing is skipped;
* replayed rows that slip past the token collapse in the ReplacingMergeTree tables
  (see :mod:`oms.sinks.clickhouse.migrations`).

In embedded mode the sink owns the chDB path (lock file) and serves read-only SQL to other
processes over HTTP (:mod:`oms.sinks.query_server`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog
from aiohttp import web
from aiokafka import AIOKafkaProducer
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from oms.backoff import Backoff
from oms.kafka.admin import ensure_topics
from oms.kafka.security import KafkaConnection
from oms.schemas import Topic
from oms.secrets import QueryTokens
from oms.settings import Settings
from oms.sinks.access import QueryAccess
from oms.sinks.batch import SINK_TOPICS, Batch, Message, TickSampler
from oms.sinks.clickhouse.client import AsyncClickHouse, chdb_path, open_client
from oms.sinks.clickhouse.desks import sync_desk_access
from oms.sinks.clickhouse.integrity import STORAGE_REASONS, broken_detached_parts, broken_tables
from oms.sinks.clickhouse.migrations import apply_migrations, sync_position_retention
from oms.sinks.consumer import CommitError, Partition, SinkConsumer
from oms.sinks.failures import error_line, insert_failure_reason
from oms.sinks.lock import SQL_ROLE, ChdbPathLock
from oms.sinks.query import query_url
from oms.sinks.query_server import make_app, start_query_server
from oms.sinks.writer import write_batch

log = structlog.get_logger(__name__)

COMMIT_TIMEOUT_S = 30.0
# After a storage fault the tables are checked at once, then again this many seconds apart.
STORAGE_RECHECKS_S = (5.0, 20.0)


@dataclass
class SinkStats:
    """Counters exposed on ``GET /health`` and in logs."""

    consumed: int = 0
    malformed: int = 0
    dead_lettered: int = 0
    sampled_out: int = 0
    flushes: int = 0
    insert_failures: int = 0
    commit_failures: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    last_flush_at: float | None = None
    # A batch insert is running right now (chaos tests aim their SIGKILLs with it).
    inserting: bool = False
    # Wall time of the first failed attempt of the batch still being retried, else None.
    failing_since: float | None = None
    # The latest failed insert: {"reason", "error", "attempt", "at"} (kept after recovery).
    last_insert_error: dict[str, Any] | None = None
    # After storage faults: integrity checks run, engine reopens that repaired broken parts.
    storage_checks: int = 0
    storage_repairs: int = 0
    broken_parts_detached: int = 0


class SinkAborted(RuntimeError):
    """Shutdown was forced while a batch was still uninserted (it will be replayed)."""


class SinkService:
    """One sink process: start it with :meth:`run`, stop it with :meth:`request_stop`."""

    def __init__(
        self,
        settings: Settings,
        *,
        retry_min_s: float | None = None,
        retry_max_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.retry_min_s = settings.sink.retry_min_s if retry_min_s is None else retry_min_s
        self.retry_max_s = settings.sink.retry_max_s if retry_max_s is None else retry_max_s
        # Decorrelated: attempts are never closer than retry_min_s (min == max: a fixed delay).
        self._backoff = Backoff(self.retry_min_s, self.retry_max_s, jitter="decorrelated")
        self.stats = SinkStats()
        self.group_id = f"{settings.worker.app_id}-sink"
        self.topics = [settings.topic(t.value) for t in SINK_TOPICS]
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._abort = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._lock = ChdbPathLock(chdb_path(settings)) if settings.embedded_clickhouse else None
        self._sampler = TickSampler(settings.sink.tick_sample_ms)
        self._batch = Batch.for_settings(settings, self._sampler)
        self._stash: list[Message] = []
        self._writing: asyncio.Task[None] | None = None
        self._writing_messages = 0
        self._writer: Client | None = None
        self._reader: Client | None = None
        self._ch: AsyncClickHouse | None = None
        self._consumer: SinkConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        # The consume loop holds the flush lock while it polls with its partitions paused;
        # a revoke arriving in that poll flushes on its behalf (see _partitions_revoked).
        self._polling_paused = False
        self._closing = False
        self._http: web.AppRunner | None = None
        self._rechecks: asyncio.Task[None] | None = None

    # -- lifecycle

    def request_stop(self) -> None:
        """Finish: flush what is buffered, commit, close. Safe from a signal handler."""
        self._stop.set()

    def request_abort(self) -> None:
        """Stop without waiting for a failing insert; uncommitted input is replayed later."""
        self._stop.set()
        self._abort.set()

    async def run(self) -> None:
        """Start, consume until stopped, then shut down (flushing unless aborted)."""
        try:
            await self._start()
            await self._consume()
            await self._flush_and_commit()
        finally:
            await self._close()

    async def _start(self) -> None:
        s = self.settings
        if self._lock is not None:
            # First, before chDB: a second sink must fail here with a clear message. A
            # one-off `oms sql` reading the path directly is waited for.
            await self._lock.acquire_waiting(wait_for=frozenset({SQL_ROLE}), role="sink")
        applied = await self._open_clickhouse(migrate=True)
        if self._lock is not None:
            self._lock.update(query_url=query_url(s))
        await ensure_topics(s)
        # Malformed input goes to the dead letters; acks=all: they are committed past next.
        kafka = KafkaConnection.from_settings(s)
        self._producer = AIOKafkaProducer(**kafka.aiokafka(acks="all"))
        await self._producer.start()
        self._consumer = SinkConsumer(kafka, self.group_id, on_revoke=self._partitions_revoked)
        await self._consumer.start(self.topics)
        log.info(
            "sink.started",
            dsn=s.clickhouse_dsn,
            migrations_applied=applied,
            group=self.group_id,
            query_url=query_url(s),
        )
        self.ready.set()

    async def _open_clickhouse(self, *, migrate: bool) -> list[int]:
        """Writer and read-only clients, and the query endpoint over the reader."""
        s = self.settings
        self._writer = await asyncio.to_thread(open_client, s)
        applied: list[int] = []
        if migrate:
            applied = await asyncio.to_thread(apply_migrations, self._writer, s.sink)
            await asyncio.to_thread(sync_position_retention, self._writer, *s.positions.ttl_days)
        tokens = await asyncio.to_thread(QueryTokens, s.desks, s.resolved_secrets_file)
        if migrate and not s.embedded_clickhouse:
            await asyncio.to_thread(self._sync_desk_access, tokens)
        self._ch = AsyncClickHouse(self._writer)
        self._reader = await asyncio.to_thread(open_client, s, readonly=True)
        access = QueryAccess(s.desks, tokens)
        if access.enforced:
            log.info(
                "sink.query_desks",
                desks=sorted(s.desks),
                without_token=sorted(set(s.desks) - set(tokens.desks_with_tokens())),
                operator_token=tokens.operator is not None,
            )
        self._http = await start_query_server(
            make_app(self._reader, self.health, access), s.sink.query_host, s.sink.query_port
        )
        return applied

    def _sync_desk_access(self, tokens: QueryTokens) -> None:
        """Server mode: each desk's user, role, grants and row policies (blocking)."""
        assert self._writer is not None
        try:
            count = sync_desk_access(self._writer, self.settings.desks, tokens)
        except ClickHouseError as exc:
            # Fails closed: without their users and policies desks cannot read at all.
            level = log.error if self.settings.desks else log.debug
            level("sink.desk_access_failed", error=error_line(exc))
            return
        log.info("sink.desk_access", desks=sorted(self.settings.desks), statements=count)

    async def _close_clickhouse(self) -> None:
        if self._http is not None:
            await self._http.cleanup()
            self._http = None
        for client in (self._reader, self._writer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(client.close)
        self._reader = self._writer = self._ch = None

    async def _close(self) -> None:
        if self._writing is not None and not self._writing.done():
            # Only after an error elsewhere: the batch is uncommitted and will be replayed.
            self._writing.cancel()
            with contextlib.suppress(BaseException):
                await self._writing
        if self._rechecks is not None:
            self._rechecks.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._rechecks
        if self._consumer is not None:
            self._closing = True  # leaving the group: what is held now is not flushed
            with contextlib.suppress(Exception):
                await self._consumer.close()
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
            self._producer = None
        await self._close_clickhouse()
        if self._lock is not None:
            self._lock.release()
        if self.ready.is_set():  # a sink that never started has nothing to report
            log.info("sink.stopped", **self.health())

    def health(self) -> dict[str, Any]:
        """Counters and buffer state for ``GET /health``; ``status`` is ``failing`` while a
        batch cannot be inserted (see ``last_insert_error`` for why)."""
        status = "failing" if self.stats.failing_since is not None else "ok"
        return {
            "status": status,
            **asdict(self.stats),
            "buffered": len(self._batch),
            "writing": self._writing_messages,
            "group": self.group_id,
        }

    # -- consuming
    #
    # Two batches at most: one being written (inserted, then committed) by a background
    # task while the next one fills. chDB runs the insert outside the GIL, so decoding the
    # next batch overlaps it. Inserts stay strictly one after the other, in order.

    async def _consume(self) -> None:
        assert self._consumer is not None
        sink = self.settings.sink
        while not self._stop.is_set():
            if self._batch.messages:
                wait = max(0.0, sink.flush_interval_s - self._batch.age())
            else:
                wait = sink.flush_interval_s
            room = self._batch.room(sink.batch_size)
            # Short polls keep shutdown prompt; a timer would not make flushes more exact.
            fetched = await self._consumer.consume(room, min(wait, 0.5))
            # Under the lock: a rebalance callback may be flushing this very batch.
            async with self._flush_lock:
                self._add(self._stash)
                self._stash = []
                self._add(fetched)
                full = self._batch.full(sink.batch_size)
                due = self._batch.messages and self._batch.age() >= sink.flush_interval_s
                if full or due:
                    await self._await_writing(poll_while_waiting=True)
                    self._start_writing()
                    # Let the writer reach its thread now, before the next consume call.
                    await asyncio.sleep(0)

    def _add(self, messages: list[Message]) -> None:
        add = self._batch.add
        for msg in messages:
            add(msg)
        self.stats.consumed += len(messages)

    def _start_writing(self) -> None:
        """Hand the buffered batch to a background writer (the previous one has finished)."""
        batch = self._batch
        if not batch.messages:
            return
        self._batch = Batch.for_settings(self.settings, self._sampler)
        self._writing = asyncio.create_task(self._write(batch))
        self._writing_messages = batch.messages

    async def _await_writing(self, *, poll_while_waiting: bool) -> None:
        """Wait for the batch being written; raises what the writer raised (SinkAborted)."""
        task = self._writing
        if task is None:
            return
        if poll_while_waiting:
            await self._poll_paused_until(task)
        try:
            await task
        finally:
            self._writing = None
            self._writing_messages = 0

    async def _flush_and_commit(self) -> None:
        """Write everything buffered (retrying until it succeeds) and commit its offsets."""
        async with self._flush_lock:
            await self._flush_and_commit_locked()

    async def _flush_and_commit_locked(self) -> None:
        await self._await_writing(poll_while_waiting=False)
        self._add(self._stash)
        self._stash = []
        self._start_writing()
        await self._await_writing(poll_while_waiting=False)

    async def _partitions_revoked(self, revoked: list[Partition]) -> None:
        """Flush and commit before partitions move, so their new owner starts after our
        rows. Runs while the consumer waits in its rebalance callback."""
        if not revoked or self._abort.is_set() or self._closing:
            return
        if self._polling_paused:
            # The consume loop holds the flush lock and is parked in the very poll that
            # brought this revoke: it cannot move until we return, so act in its place.
            await self._flush_and_commit_locked()
        else:
            await self._flush_and_commit()

    async def _write(self, batch: Batch) -> None:
        await self._insert_with_retry(batch)
        await self._dead_letter(batch)
        self.stats.malformed += batch.malformed
        self.stats.sampled_out += batch.sampled_out
        self.stats.flushes += 1
        self.stats.last_flush_at = time.time()
        await self._commit(batch)

    async def _insert_with_retry(self, batch: Batch) -> None:
        assert self._ch is not None
        delays = self._backoff.delays()
        attempt = 0
        while True:
            self.stats.inserting = True
            try:
                sent = await write_batch(self._ch, batch)
                break
            except Exception as exc:  # any failure: the batch must not be dropped
                self.stats.inserting = False
                attempt += 1
                self._record_failure(exc, attempt)
                delay = next(delays)
                assert self.stats.last_insert_error is not None
                log.error(
                    "sink.insert_failed",
                    reason=self.stats.last_insert_error["reason"],
                    attempt=attempt,
                    retry_in_s=round(delay, 2),
                    messages=batch.messages,
                    error=self.stats.last_insert_error["error"],
                )
                await self._wait_to_retry(delay, exc, "aborted with an uninserted batch")
            finally:
                self.stats.inserting = False
        if self.stats.failing_since is not None:
            log.info(
                "sink.insert_recovered",
                attempts=attempt + 1,
                failed_for_s=round(time.time() - self.stats.failing_since, 1),
                messages=batch.messages,
            )
            self.stats.failing_since = None
            reason = (self.stats.last_insert_error or {}).get("reason")
            if reason in STORAGE_REASONS:
                # This writer is the only one: nothing else uses the engine now.
                await self.verify_storage()
                # A merge caught by the fault can turn up broken only later: look again.
                if self._rechecks is None or self._rechecks.done():
                    self._rechecks = asyncio.create_task(self._recheck_storage())
        for table, n in sent.items():
            self.stats.rows[table] = self.stats.rows.get(table, 0) + n

    async def _dead_letter(self, batch: Batch) -> None:
        """Send the batch's malformed messages to the dead-letter topic, retried until they
        are on Kafka: the batch is committed only after."""
        if not batch.dead_letters:
            return
        assert self._producer is not None
        topic = self.settings.topic(Topic.DEAD_LETTERS.value)
        delays = self._backoff.delays()
        attempt = 0
        while True:
            try:
                sent = [
                    await self._producer.send(
                        topic, letter.to_bytes(), key=letter.key.encode() if letter.key else None
                    )
                    for letter in batch.dead_letters
                ]
                await asyncio.gather(*sent)
                break
            except Exception as exc:
                attempt += 1
                delay = next(delays)
                log.error(
                    "sink.dead_letter_failed", attempt=attempt, retry_in_s=round(delay, 2),
                    letters=len(batch.dead_letters), error=str(exc)[:300],
                )  # fmt: skip
                await self._wait_to_retry(delay, exc, "aborted with dead letters not sent")
        self.stats.dead_lettered += len(batch.dead_letters)

    async def _wait_to_retry(self, delay: float, exc: Exception, aborted: str) -> None:
        """Wait ``delay`` before the next attempt, or raise :class:`SinkAborted` (with
        ``aborted``) if the sink is, or gets, aborted: what failed is replayed later."""
        if self._abort.is_set():
            raise SinkAborted(aborted) from exc
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._abort.wait(), delay)

    async def _recheck_storage(self) -> None:
        for delay in STORAGE_RECHECKS_S:
            await asyncio.sleep(delay)
            # Never reopen the engine under an insert: no batch starts while we hold the
            # lock, and the one being written (if any) is let finish first.
            async with self._flush_lock:
                if self._writing is not None:
                    await asyncio.wait({self._writing})
                if self._writer is None:
                    return
                await self.verify_storage()

    async def verify_storage(self) -> dict[str, str]:
        """After a storage fault: ``CHECK TABLE`` every table. A merge that ran into the
        fault can leave a broken part that fails every read; in embedded mode, reopening
        the engine detaches it and brings back the parts it replaced. Returns the tables
        still broken (empty when all is well)."""
        assert self._writer is not None
        self.stats.storage_checks += 1
        broken = await asyncio.to_thread(broken_tables, self._writer)
        if not broken:
            log.info("sink.storage_checked", broken_tables=0)
            return broken
        log.error(
            "sink.storage_corrupted",
            reason="broken_data_part",
            tables=sorted(broken),
            detail=next(iter(broken.values())),
            repair="reopening embedded ClickHouse" if self._lock is not None else "none (server)",
        )
        if self._lock is None:  # a server repairs its own parts on restart
            return broken
        await self._close_clickhouse()
        await self._open_clickhouse(migrate=False)
        assert self._writer is not None
        broken = await asyncio.to_thread(broken_tables, self._writer)
        detached = await asyncio.to_thread(broken_detached_parts, self._writer)
        self.stats.storage_repairs += 1
        self.stats.broken_parts_detached = detached
        if broken:
            log.error(
                "sink.storage_repair_failed", reason="broken_data_part", tables=sorted(broken)
            )
        else:
            log.warning("sink.storage_repaired", broken_parts_detached=detached)
        return broken

    def _record_failure(self, exc: Exception, attempt: int) -> None:
        self.stats.insert_failures += 1
        now = time.time()
        if self.stats.failing_since is None:
            self.stats.failing_since = now
        self.stats.last_insert_error = {
            "reason": insert_failure_reason(exc),
            "error": error_line(exc),
            "attempt": attempt,
            "at": now,
        }

    async def _poll_paused_until(self, task: asyncio.Task[None]) -> None:
        """Wait for ``task``, polling with every partition paused now and then, so the
        group keeps us (max.poll.interval) through a long insert retry but no new input
        arrives: at most two batches are ever held."""
        assert self._consumer is not None
        paused: set[Partition] = set()
        try:
            while not task.done():
                done, _ = await asyncio.wait({task}, timeout=1.0)
                if done:
                    break
                assignment = self._consumer.assignment()
                await self._consumer.pause(assignment)
                paused |= assignment
                self._polling_paused = True
                try:
                    fetched = await self._consumer.consume(self.settings.sink.batch_size, 0)
                finally:
                    self._polling_paused = False
                # Only records fetched before a pause can show up here: keep them for later.
                self._stash.extend(fetched)
        finally:
            if paused:
                await self._consumer.resume(paused)

    async def _commit(self, batch: Batch) -> None:
        assert self._consumer is not None
        offsets = batch.commit
        try:
            # Bounded: a commit must never hold the flush lock through a stuck rebalance.
            await asyncio.wait_for(self._consumer.commit(offsets), COMMIT_TIMEOUT_S)
        except (CommitError, TimeoutError) as exc:
            # The rows are stored; whoever reads these partitions next replays them and the
            # tables collapse the duplicates. Nothing to retry here.
            self.stats.commit_failures += 1
            log.warning("sink.commit_failed", error=str(exc)[:300], partitions=len(offsets))


async def run_sink(settings: Settings) -> SinkService:
    """Run a sink until SIGINT/SIGTERM (a second signal aborts a stuck flush)."""
    import gc
    import signal

    # Each message allocates a few dozen short-lived objects: with the default threshold
    # the cyclic collector ran every ~700 allocations, walking every long-lived module.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)

    service = SinkService(settings)
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if service._stop.is_set():
            service.request_abort()
        else:
            service.request_stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        await service.run()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return service
