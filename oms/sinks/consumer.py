"""The sink's Kafka consumer: confluent-kafka (librdkafka) driven from asyncio.

librdkafka fetches and decodes record batches in its own C threads, and ``consume()`` hands
back thousands of messages per call: about half the CPU per message of aiokafka, which
builds a Python record object per message on the event loop thread (the sink's hot path).

Its calls block, and a ``Consumer`` must not be used from two threads at once, so every call
runs on one worker thread of this module, in order. Rebalance callbacks run on that thread
inside ``consume()`` or ``close()``: the revoke handler (an ``async`` function, flushing and
committing what the sink holds) runs on the event loop meanwhile, and the worker thread
serves the calls it makes (``commit``) until it returns, so partitions move only after
their rows are stored and their offsets committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, NamedTuple, TypeVar

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from oms.kafka.security import KafkaConnection, as_connection
from oms.sinks.batch import Message

log = structlog.get_logger(__name__)

T = TypeVar("T")

# (topic, partition)
Partition = tuple[str, int]
RevokeHandler = Callable[[list[Partition]], Coroutine[Any, Any, None]]


class CommitError(RuntimeError):
    """Offsets could not be committed (the group moved on, the broker is away, ...)."""


class _Call(NamedTuple):
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: asyncio.Future[Any]


_WAKE = object()  # put on the queue when a revoke handler finishes
_STOP = object()  # ends the worker thread


class SinkConsumer:
    """A consumer-group member for the sink: no auto-commit, read_committed, from the
    earliest offset when the group has none. Start with :meth:`start`, end with
    :meth:`close`."""

    def __init__(
        self,
        kafka: KafkaConnection | str,
        group_id: str,
        *,
        on_revoke: RevokeHandler,
        fetch_buffer_kb: int = 16_384,
    ) -> None:
        self._config: dict[str, Any] = as_connection(kafka).confluent(
            {
                "group.id": group_id,
                "client.id": group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                # A killed sink's partitions move after 10 s (librdkafka's default is 45 s).
                "session.timeout.ms": 10_000,
                # Prefetched messages kept per consumer: bounds memory while the writer is
                # behind.
                "queued.max.messages.kbytes": fetch_buffer_kb,
                # Once that buffer was full, fetch again this soon after it drains (default
                # 1 s: the sink would idle most of each second).
                "fetch.queue.backoff.ms": 10,
            }
        )
        self._on_revoke = on_revoke
        self._consumer: Consumer | None = None
        self._calls: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._assignment: set[Partition] = set()
        self._paused: set[Partition] = set()

    # -- the worker thread

    async def start(self, topics: list[str]) -> None:
        """Create the consumer and subscribe to ``topics`` (partitions come with the
        first :meth:`consume` calls)."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._serve, name="sink-kafka", daemon=True)
        self._thread.start()
        await self._call(self._create, topics)

    def _create(self, topics: list[str]) -> None:
        self._consumer = Consumer(self._config)
        self._consumer.subscribe(
            topics, on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
        )

    def _serve(self) -> None:
        while True:
            item = self._calls.get()
            if item is _STOP:
                return
            if item is not _WAKE:
                self._run(item)

    def _run(self, call: _Call) -> None:
        assert self._loop is not None
        try:
            result = call.fn(*call.args)
        except BaseException as exc:  # handed to the awaiting coroutine
            self._loop.call_soon_threadsafe(_set_exception, call.future, exc)
        else:
            self._loop.call_soon_threadsafe(_set_result, call.future, result)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the worker thread (in a rebalance callback too: the thread
        serves calls while it waits for the handler)."""
        assert self._loop is not None
        future: asyncio.Future[T] = self._loop.create_future()
        self._calls.put(_Call(fn, args, future))
        return await future

    # -- rebalance callbacks (worker thread, inside consume() or close())

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assignment |= {(tp.topic, tp.partition) for tp in partitions}
        log.info("sink.assigned", partitions=len(partitions))

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = [(tp.topic, tp.partition) for tp in partitions]
        assert self._loop is not None
        done = asyncio.run_coroutine_threadsafe(self._on_revoke(revoked), self._loop)
        done.add_done_callback(lambda _: self._calls.put(_WAKE))
        # Serve the handler's calls (its commit) until it has finished.
        while not done.done():
            item = self._calls.get()
            if item is _STOP:  # only after close(): keep it for the main loop
                self._calls.put(item)
                break
            if item is not _WAKE:
                self._run(item)
        with contextlib.suppress(BaseException):
            if done.done() and done.exception() is not None:
                log.error("sink.revoke_failed", error=repr(done.exception())[:300])
        self._forget(consumer, partitions)

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Already someone else's: committing for them would fail. What we hold of them is
        # written anyway and replayed by the new owner; the tables collapse the repeat.
        log.warning("sink.partitions_lost", partitions=len(partitions))
        self._forget(consumer, partitions)

    def _forget(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        # librdkafka keeps a partition paused through a rebalance: one assigned back to us
        # would never be fetched again. Resume them while they are still ours.
        paused = [tp for tp in partitions if (tp.topic, tp.partition) in self._paused]
        if paused:
            with contextlib.suppress(KafkaException):
                consumer.resume(paused)
        self._assignment -= gone
        self._paused -= gone

    # -- the sink's calls (event loop)

    def assignment(self) -> set[Partition]:
        """Partitions this member owns now."""
        return set(self._assignment)

    def paused(self) -> set[Partition]:
        """Partitions paused by :meth:`pause` and not resumed since."""
        return set(self._paused)

    async def consume(self, max_messages: int, timeout_s: float) -> list[Message]:
        """Up to ``max_messages`` messages, waiting at most ``timeout_s`` for the first."""
        return await self._call(self._consume, max(1, max_messages), timeout_s)

    def _consume(self, max_messages: int, timeout_s: float) -> list[Message]:
        assert self._consumer is not None
        got = self._consumer.consume(max_messages, timeout_s)
        # One comprehension: this runs for every message, holding the GIL.
        out = [
            Message(m.topic(), m.partition(), m.offset(), m.value())  # type: ignore[arg-type]
            for m in got
            if m.error() is None
        ]
        if len(out) < len(got):
            for m in got:
                _log_error(m.error())
        return out

    async def pause(self, partitions: Iterable[Partition]) -> None:
        """Stop fetching ``partitions`` (what was fetched before may still come once)."""
        wanted = set(partitions) & self._assignment
        if wanted:
            await self._call(self._pause_sync, wanted, True)

    async def resume(self, partitions: Iterable[Partition]) -> None:
        """Fetch ``partitions`` again (those still assigned)."""
        wanted = set(partitions) & self._paused
        if wanted:
            await self._call(self._pause_sync, wanted, False)

    def _pause_sync(self, partitions: set[Partition], pause: bool) -> None:
        assert self._consumer is not None
        # Only those still ours: the assignment may have changed since the call was made.
        tps = [TopicPartition(t, p) for t, p in partitions & self._assignment]
        if not tps:
            return
        if pause:
            self._consumer.pause(tps)
            self._paused |= partitions
        else:
            self._consumer.resume(tps)
            self._paused -= partitions

    async def commit(self, offsets: dict[Partition, int]) -> None:
        """Commit ``offsets`` (the next offset to read per partition); raises
        :class:`CommitError` if any of them was not committed."""
        await self._call(self._commit_sync, offsets)

    def _commit_sync(self, offsets: dict[Partition, int]) -> None:
        assert self._consumer is not None
        tps = [TopicPartition(t, p, off) for (t, p), off in offsets.items()]
        try:
            result = self._consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            raise CommitError(str(exc)) from exc
        failed = [tp for tp in result or [] if tp.error is not None]
        if failed:
            raise CommitError(f"{len(failed)} partitions not committed: {failed[0].error}")

    async def close(self) -> None:
        """Leave the group (the revoke handler runs once more) and end the worker thread."""
        if self._thread is None:
            return
        try:
            if self._consumer is not None:
                await self._call(self._consumer.close)
        finally:
            self._calls.put(_STOP)
            await asyncio.to_thread(self._thread.join, 10)
            self._thread = None
            self._consumer = None
            self._assignment.clear()
            self._paused.clear()


def _log_error(error: KafkaError | None) -> None:
    if error is not None and error.code() != KafkaError._PARTITION_EOF:
        log.warning("sink.consume_error", error=str(error)[:300], fatal=error.fatal())


def _set_result(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
