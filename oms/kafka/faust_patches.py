"""Fixes to faust-streaming that "a crash never loses an order" depends on.

Written for faust-streaming 0.15.3 and aiokafka 0.14.0 (the versions pinned in pyproject):
each patch refuses to apply on any other version, since it replaces private code of those
versions. A worker applies them all with :func:`apply_faust_patches` when it starts, before its
app runs, and checks its app with :func:`check_app` (``oms.kafka.faust_worker`` does both).

1. Buffered table writes and offset commits (:data:`PRODUCER_FLUSH`).

Table writes (``table[key] = value``) do not go to Kafka at once: Faust puts them in its
producer's buffer, and a background task sends them. Before committing consumer offsets Faust
flushes the producer, but ``ProducerBuffer.flush`` gives up as soon as 0.1 s pass without a
message leaving the buffer. On a loaded machine the sender task can be slower than that, so the
commit overtakes table writes still in the buffer; a worker killed right then has committed the
offset of a request whose order never reached the changelog. Its successor neither replays the
request nor finds the order: the order is lost. We saw exactly that under load in the failover
tests (an order with no trace anywhere, once in a few runs).

The fix makes ``flush`` wait until every message put in the buffer before the call has been
handed to the Kafka producer (which Faust then flushes too), however long the sender takes.

2. Commits past an offset that was never processed (:data:`COMMIT_HEAD`).

``Consumer._new_offset`` computes the offset to commit from the acknowledged offsets. Its guard
against a gap at the head (``min(acked) - committed > 1``) is off by one: the committed offset
is the *next* offset to read, so with 15 committed and 16 acknowledged it commits 17 and offset
15, never processed (e.g. a request fetched just before a rebalance and dropped with the
stream's buffer), is skipped for good; with 0 committed the guard is skipped entirely. The
three-worker failover test lost requests this way (1-5 in 3 of 12 runs). The fix refuses to
commit past an unacknowledged head: the commit waits, and the partition is read again from the
committed offset by the :class:`StallHealer`, at the next rebalance or restart (replays are
idempotent here).

3. Offset jumps taken for gaps (:data:`OFFSET_JUMP`).

When the fetcher hands over an offset more than one past the last one read, Faust records the
skipped range as a "gap" (``Consumer._add_gap``) and counts it as acknowledged, so the next
commit moves past it. Gaps are real only in compacted or transactional topics; the inputs of
our agents are neither (:func:`check_app` refuses an app whose agent reads a compacted topic),
so a jump means records were not delivered: after a rebalance, records fetched for the old
assignment arrive after the seek to the committed offset. The chaos suite's ``worker-kill``
scenario lost orders this way (33 of 1,000 over 15 kills: the requests published while the
killed worker was down, skipped by its successor during the rebalances that evict the dead
member). The fix records no gap: the commit stops at the first offset not processed, and the
stall healer reads the partition again from there.

4. Partitions never committed are not sought back (:data:`SEEK_LOG_START`).

Faust drops fetched records on a rebalance (flow stopped, generation changed, partition
paused) and relies on its seek to the committed offsets to fetch them again. aiokafka's
``seek_to_committed`` does nothing for a partition without a committed offset, so records
fetched for it before the seek, then dropped, are gone: the fetch position is already past
them. The miniature worker-kill test lost whole partitions this way (about 1 run in 4): a
partition whose first requests arrived while the killed worker was down was fetched by its
successor during the rebalance, the records were dropped, and it was never read again. The
fix resets such partitions to their log start after every seek to the committed offsets,
which is where an uncommitted partition is read from anyway (``auto_offset_reset`` is
earliest). The reset is resolved by the fetcher's own routine (no broker request inside the
seek), and it discards records already buffered for the partition. Table changelogs are left
to Faust's recovery, which seeks them itself.

5. The livelock check on a partition being reset (:data:`LIVELOCK_CHECK`).

Until the reset of fix 4 is resolved the partition has no fetch position, which Faust's
livelock check (``verify_event_path``) cannot take (aiokafka asserts a position is set): it
skips such a partition instead of crashing the worker.

6. A fetch held by the broker for 1.5 s (:data:`FETCH_WAIT`).

Faust creates its consumer with ``fetch_max_wait_ms=1500`` (hard-coded), and aiokafka keeps
one fetch in flight per broker, leaving out the partitions whose records are still waiting to
be taken. When the agents fall behind for a moment, the next fetch names only the partitions
that were already drained, often quiet ones (triggers, requests after a burst): the broker
holds it for the full 1.5 s while the busy partitions have new records, and every agent
starves until it returns. The fix creates the consumer with :data:`FETCH_MAX_WAIT_MS`, so
such a fetch returns within that time; an idle worker pays one empty fetch per period.

7. Four tasks per message delivered (:data:`DELIVERY`).

Faust's delivery loop (``Consumer._drain_messages``) hands each fetched message to the
agents' buffers with ``wait_first(callback(message), suspend_flow.wait())``: four tasks
(mode adds two for "stopped" and "crashed"), three of them cancelled again, and three turns
of the event loop per message, although the callback almost never waits (it only puts the
message into a buffer that has room). The loop is the one serial stage in front of every
agent: with all agents idle, it delivered ~300 messages/s. The fix runs the callback
directly and races it against a rebalance, as Faust does, only if it actually waits.

8. Three turns of the event loop per table write (:data:`TABLE_WRITES`).

A table write is produced by the producer buffer's task, one message at a time, through
``Topic.publish_message``, which first gets the producer from ``App.maybe_start_producer``: a
``stampede``-wrapped call that yields to the event loop three times, even when the producer
runs. Under load each turn of the loop runs every busy agent once, so the buffer drained one
write per three turns while the agents added about one per turn; and Faust's conductor stops
delivering to every agent while the buffer holds over 100 writes (it reached 860: seconds
without an acknowledgement). The fix returns the running producer at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import inspect
import types
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import faust
import structlog
from aiokafka import TopicPartition
from aiokafka.consumer.fetcher import OffsetResetStrategy
from faust.topics import Topic
from faust.transport.consumer import CONSUMER_FETCHING, Consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.producer import ProducerBuffer

log = structlog.get_logger(__name__)

# The versions every patch below was written for and tested against (pinned in pyproject).
FAUST_STREAMING_VERSION = "0.15.3"
AIOKAFKA_VERSION = "0.14.0"


class FaustPatchError(RuntimeError):
    """A patch cannot be trusted here: other library versions, private code it replaces or
    reads is gone, or an app uses Faust in a way a patch is not correct for."""


def installed_version(distribution: str) -> str:
    """The installed version of ``distribution`` (e.g. ``"faust-streaming"``)."""
    return importlib.metadata.version(distribution)


def require_written_for_versions(patch: str) -> None:
    """Raise :class:`FaustPatchError` unless faust-streaming and aiokafka are exactly the
    versions ``patch`` was written for."""
    faust_seen = installed_version("faust-streaming")
    aiokafka_seen = installed_version("aiokafka")
    if (faust_seen, aiokafka_seen) != (FAUST_STREAMING_VERSION, AIOKAFKA_VERSION):
        raise FaustPatchError(
            f"Faust patch {patch!r} was written for faust-streaming=={FAUST_STREAMING_VERSION}"
            f" and aiokafka=={AIOKAFKA_VERSION}, but faust-streaming=={faust_seen} and"
            f" aiokafka=={aiokafka_seen} are installed: check whether upstream fixed what it"
            " stands in for (see its comment in oms/kafka/faust_patches.py), then re-validate"
            " or drop the patch before changing the pins"
        )


# Replaces a method: given the original, returns its replacement.
Wrap = Callable[[Callable[..., Any]], Callable[..., Any]]
# The attribute naming the patch on each replacement (how ``applied`` recognises ours).
_PATCH_MARK = "__oms_faust_patch__"


@dataclass(frozen=True)
class FaustPatch:
    """Methods of faust-streaming classes replaced by ours, applied together."""

    name: str
    replacements: tuple[tuple[type, str, Wrap], ...]  # (class, method name, wrap)

    def apply(self) -> None:
        """Replace the methods, once (idempotent). Refuses library versions the patch was
        not written for, and methods that are no longer where the patch expects them."""
        require_written_for_versions(self.name)
        if self.applied:
            return
        for owner, attribute, _ in self.replacements:
            if not callable(owner.__dict__.get(attribute)):
                raise FaustPatchError(
                    f"Faust patch {self.name!r}: {owner.__module__}.{owner.__qualname__}"
                    f".{attribute}, the method it replaces, does not exist"
                )
        for owner, attribute, wrap in self.replacements:
            replacement = wrap(owner.__dict__[attribute])
            setattr(replacement, _PATCH_MARK, self.name)
            setattr(owner, attribute, replacement)

    @property
    def applied(self) -> bool:
        """Whether every method of the patch is ours now."""
        return all(
            getattr(owner.__dict__.get(attribute), _PATCH_MARK, None) == self.name
            for owner, attribute, _ in self.replacements
        )


# -- 1. producer flush --------------------------------------------------------------------
# Stands in for an upstream ProducerBuffer.flush (faust/transport/producer.py) that waits for
# the messages buffered before the call, not for "0.1 s without progress" (flush_atmost's
# wait_for timeout). Consumer.commit flushes the producer before committing (faust-streaming
# PR #273) precisely so that commits never overtake table writes; the fix belongs in
# ProducerBuffer.flush (e.g. ``await self.pending.join()`` with ``task_done`` in
# ``_handle_pending``).


def _counting_put(original: Callable[..., Any]) -> Callable[..., Any]:
    def put(self: Any, fut: Any) -> None:
        self._oms_put = getattr(self, "_oms_put", 0) + 1
        original(self, fut)

    return put


def _counting_send_pending(original: Callable[..., Any]) -> Callable[..., Any]:
    async def _send_pending(self: Any, fut: Any) -> None:
        try:
            await original(self, fut)
        finally:
            self._oms_sent = getattr(self, "_oms_sent", 0) + 1

    return _send_pending


def _flush_everything_buffered(original: Callable[..., Any]) -> Callable[..., Any]:
    async def flush(self: Any) -> None:
        """Wait until everything buffered so far has been handed to the Kafka producer."""
        target = getattr(self, "_oms_put", 0)
        while getattr(self, "_oms_sent", 0) < target:
            if self.state != "running":
                raise RuntimeError("Cannot flush: Producer not Running")
            self.message_sent.clear()
            # A slow sender is waited for; the timeout only re-checks the counters.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.message_sent.wait(), timeout=1.0)

    return flush


PRODUCER_FLUSH = FaustPatch(
    "producer flush waits for every buffered message",
    (
        (ProducerBuffer, "put", _counting_put),
        (ProducerBuffer, "_send_pending", _counting_send_pending),
        (ProducerBuffer, "flush", _flush_everything_buffered),
    ),
)


# -- 2. commit head -----------------------------------------------------------------------
# Stands in for a correct head-gap guard in Consumer._new_offset (faust/transport/consumer.py).
# The guard added for faust-streaming issue #312 (PR #313), ``if committed_offset: if
# min(acked) - committed_offset > 1: return None``, is off by one (the committed offset is the
# next one to read) and skipped when 0 is committed; upstream it should read
# ``committed_offset is not None and min(acked) > committed_offset`` (see also the open issue
# #606, "Wrong offset commit in case of gaps").


def _new_offset_not_past_the_head(original: Callable[..., Any]) -> Callable[..., Any]:
    def _new_offset(self: Any, tp: Any) -> int | None:
        acked = self._acked[tp]
        committed = self._committed_offset[tp]
        if acked and committed is not None and not self._gap[tp] and min(acked) > committed:
            return None  # the head (``committed``) was never processed: do not skip it
        result: int | None = original(self, tp)
        return result

    return _new_offset


COMMIT_HEAD = FaustPatch(
    "commit stops at an unprocessed head",
    ((Consumer, "_new_offset", _new_offset_not_past_the_head),),
)


# -- 3. offset jumps ----------------------------------------------------------------------
# Stands in for gap handling that tells a hole in the log (compaction, transaction markers)
# from records that were fetched but never delivered (fetched for the previous assignment and
# dropped at a rebalance, faust-streaming issue #221). Upstream it would go in
# Consumer._drain_messages / Consumer._add_gap (faust/transport/consumer.py): count a jump as
# acknowledged only on topics declared compacted or transactional. Replacing _add_gap affects
# every Faust app of the process, which is why check_app refuses agents on compacted topics.


def _log_offset_jump(original: Callable[..., Any]) -> Callable[..., Any]:
    async def _add_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
        # Not a gap but records skipped: never count them as processed.
        log.warning(
            "faust.offset_jump", topic=tp.topic, partition=tp.partition,
            skipped_from=offset_from, to=offset_to,
        )  # fmt: skip

    return _add_gap


OFFSET_JUMP = FaustPatch("an offset jump is not a gap", ((Consumer, "_add_gap", _log_offset_jump),))


# -- 4. seek of never-committed partitions ------------------------------------------------
# Stands in for a seek to the committed offsets that also repositions partitions without a
# committed offset (to where auto_offset_reset says). Upstream it belongs in aiokafka's
# AIOKafkaConsumer.seek_to_committed (aiokafka/consumer/consumer.py), which seeks only
# ``if offset and offset > 0``, or in faust's AIOKafkaConsumerThread.seek_to_committed
# (faust/transport/drivers/aiokafka.py), which calls it for Faust's recovery.


def _seek_to_committed_or_log_start(original: Callable[..., Any]) -> Callable[..., Any]:
    async def seek_to_committed(self: Any) -> Any:
        consumer = self._ensure_consumer()
        return await self.call_thread(
            seek_to_committed_or_log_start, consumer, self.consumer, self.app
        )

    return seek_to_committed


async def seek_to_committed_or_log_start(consumer: Any, faust_consumer: Any, app: Any) -> Any:
    """aiokafka's seek to the committed offsets, and partitions never committed (0 is never
    a real commit either: aiokafka ignores it too) reset to their log start."""
    committed = await consumer.seek_to_committed()
    never = [
        tp
        for tp, offset in committed.items()
        if not offset
        and not faust_consumer._is_changelog_tp(tp)
        and app.topics.acks_enabled_for(tp.topic)
    ]
    if never:
        # Not awaited: the fetcher's routine resolves the reset (a ListOffsets request).
        consumer._fetcher.request_offset_reset(never, OffsetResetStrategy.EARLIEST)
        log.debug("faust.reset_to_log_start", partitions=len(never))
    return committed


SEEK_LOG_START = FaustPatch(
    "never-committed partitions are sought back to their log start",
    ((AIOKafkaConsumerThread, "seek_to_committed", _seek_to_committed_or_log_start),),
)


# -- 5. livelock check --------------------------------------------------------------------
# Stands in for a livelock check that takes a partition awaiting an offset reset. Upstream
# it belongs in AIOKafkaConsumerThread.verify_event_path (faust/transport/drivers/
# aiokafka.py), which reads ``tp_state.position`` (asserted set by aiokafka's
# TopicPartitionState.position) without checking ``has_valid_position`` first.


def _verify_event_path_if_positioned(original: Callable[..., Any]) -> Callable[..., Any]:
    def verify_event_path(self: Any, now: float, tp: Any) -> None:
        # A partition reset by fix 4 has no fetch position until the fetcher has resolved
        # the reset, and the assertion would crash the worker.
        subscription = self._ensure_consumer()._fetcher._subscriptions.subscription
        assignment = subscription.assignment if subscription is not None else None
        if assignment is None:
            return None  # between assignments: nothing to verify
        state = assignment.state_value(TopicPartition(tp.topic, tp.partition))
        if state is None or not state.has_valid_position:
            return None
        return original(self, now, tp)

    return verify_event_path


LIVELOCK_CHECK = FaustPatch(
    "livelock check skips a partition without a fetch position",
    ((AIOKafkaConsumerThread, "verify_event_path", _verify_event_path_if_positioned),),
)


# -- 6. fetch wait -------------------------------------------------------------------------
# Stands in for a setting: upstream, AIOKafkaConsumerThread._create_worker_consumer
# (faust/transport/drivers/aiokafka.py) passes ``fetch_max_wait_ms=1500`` instead of reading
# it from the app's configuration, as it does for the other fetch settings.

# How long the broker may hold a fetch that has no new record yet.
FETCH_MAX_WAIT_MS = 100


def _create_worker_consumer_with_short_fetch_wait(
    original: Callable[..., Any],
) -> Callable[..., Any]:
    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        # Read by the consumer when it starts (and builds its fetcher): set before that.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer

    return _create_worker_consumer


FETCH_WAIT = FaustPatch(
    f"the broker holds a fetch at most {FETCH_MAX_WAIT_MS} ms",
    (
        (
            AIOKafkaConsumerThread,
            "_create_worker_consumer",
            _create_worker_consumer_with_short_fetch_wait,
        ),
    ),
)


# -- 7. delivery without tasks ----------------------------------------------------------
# Stands in for a delivery loop that awaits the conductor's callback directly when it does
# not wait. Upstream it belongs in Consumer._drain_messages (faust/transport/consumer.py):
# ``wait_first`` (mode/services.py) is only needed while the callback waits on a full buffer,
# which a rebalance must be able to interrupt. The replacement is Faust 0.15.3's method with
# that one line changed (``deliver``).


@types.coroutine
def _rest_of(coro: Any, waiting_on: Any) -> Any:
    """Drive ``coro``, which already ran up to waiting on ``waiting_on``, to its end: each
    future it waits on goes up to the task running this, and what comes back goes down."""
    while True:
        try:
            sent = yield waiting_on
        except BaseException as exc:  # cancelled (a rebalance won the race) or thrown in
            try:
                waiting_on = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                waiting_on = coro.send(sent)
            except StopIteration as stop:
                return stop.value


async def deliver(consumer: Any, delivery: Any) -> None:
    """Run ``delivery`` (the conductor's callback for one message) until it is done or, if it
    has to wait (a full stream buffer, flow control, the producer buffer), until it is done
    or a rebalance suspends the flow, whichever comes first (what Faust does for every
    message)."""
    try:
        waiting_on = delivery.send(None)
    except StopIteration:
        return  # delivered at once: the common case

    async def rest() -> None:
        await _rest_of(delivery, waiting_on)

    await consumer.wait_first(rest(), consumer.suspend_flow.wait())


def _drain_messages_delivering_directly(original: Callable[..., Any]) -> Callable[..., Any]:
    async def _drain_messages(self: Any, fetcher: Any) -> None:
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        yield_every = 100
        num_since_yield = 0
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                ait = getmany(timeout=1.0)
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await asyncio.sleep(0)
                            num_since_yield = 0
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            await deliver(self, callback(message))
                            set_read_offset(tp, offset)
                    unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)

    return _drain_messages


DELIVERY = FaustPatch(
    "messages are delivered to the agents without a task each",
    ((Consumer, "_drain_messages", _drain_messages_delivering_directly),),
)


# -- 8. table writes -----------------------------------------------------------------------
# Stands in for a Topic._get_producer (faust/topics.py) that returns a running producer
# without going through App.maybe_start_producer, whose mode ``stampede`` wrapper
# (mode/utils/futures.py, StampedeWrapper.__call__) awaits asyncio.sleep(0) three times per
# call.


def _running_producer_at_once(original: Callable[..., Any]) -> Callable[..., Any]:
    async def _get_producer(self: Any) -> Any:
        app = self.app
        producer = app.producer
        if not app.in_transaction and producer.state == "running":
            return producer
        return await original(self)

    return _get_producer


TABLE_WRITES = FaustPatch(
    "a table write gets the running producer without yielding",
    ((Topic, "_get_producer", _running_producer_at_once),),
)


PATCHES: tuple[FaustPatch, ...] = (
    PRODUCER_FLUSH,
    COMMIT_HEAD,
    OFFSET_JUMP,
    SEEK_LOG_START,
    LIVELOCK_CHECK,
    FETCH_WAIT,
    DELIVERY,
    TABLE_WRITES,
)


def faust_patches_applied() -> bool:
    """Whether every patch is applied in this process."""
    return all(patch.applied for patch in PATCHES)


def apply_faust_patches() -> None:
    """Apply every patch, once per process (idempotent). Call it when a worker starts, before
    its app runs; raises :class:`FaustPatchError` on library versions they were not written
    for."""
    if faust_patches_applied():
        return
    for patch in PATCHES:
        patch.apply()
    log.info(
        "faust.patches_applied",
        patches=[patch.name for patch in PATCHES],
        faust_streaming=FAUST_STREAMING_VERSION,
        aiokafka=AIOKAFKA_VERSION,
    )


def check_app(app: faust.App, *, compacted_topics: Collection[str]) -> None:
    """Raise :class:`FaustPatchError` if ``app`` uses Faust in a way the patches are wrong
    for. ``compacted_topics``: full names of the topics declared compacted.

    - An agent reading a compacted topic: there an offset jump is usually compaction, which
      the offset-jump patch would take for records not delivered (the commit would stop at
      the hole for good and the stall healer would read the partition again forever).
    - The threaded producer: it never calls ``_send_pending``, which the producer-flush
      patch counts, so a flush would wait forever.
    """
    compacted = set(compacted_topics)
    for agent in app.agents.values():
        read = sorted(compacted.intersection(agent.get_topic_names()))
        if read:
            raise FaustPatchError(
                f"agent {agent.name!r} of Faust app {app.conf.id!r} reads compacted topic(s)"
                f" {read}: the Faust patch {OFFSET_JUMP.name!r} (every Faust app of the"
                " process) counts the holes compaction leaves as records not delivered"
            )
    if app.conf.producer_threaded:
        raise FaustPatchError(
            f"Faust app {app.conf.id!r} uses the threaded producer: the Faust patch"
            f" {PRODUCER_FLUSH.name!r} counts messages sent by ProducerBuffer._send_pending,"
            " which the threaded producer bypasses"
        )


# -- the stall healer ---------------------------------------------------------------------

# How long an input partition may wait on a message that was never delivered before it is
# read again from its committed offset.
STALL_S = 5.0

# What the healer reads of the consumer of a ``kafka://`` app (faust's aiokafka driver):
# attributes faust's Consumer declares (and sets in its __init__), and public methods.
_CONSUMER_ATTRIBUTES = ("_acked", "_committed_offset", "_unacked_messages")
_CONSUMER_METHODS = ("assignment", "seek")


def _missing_consumer_internals() -> list[str]:
    consumer = faust_aiokafka.Consumer
    declared = {name for klass in consumer.__mro__ for name in inspect.get_annotations(klass)}
    missing = [name for name in _CONSUMER_ATTRIBUTES if name not in declared]
    missing += [name for name in _CONSUMER_METHODS if not callable(getattr(consumer, name, None))]
    # fetch_position reads the Kafka consumer the consumer thread holds.
    if "_consumer" not in inspect.get_annotations(AIOKafkaConsumerThread):
        missing.append("AIOKafkaConsumerThread._consumer")
    return missing


def fetch_position(consumer: Any, tp: Any) -> int | None:
    """The fetch position of ``tp`` in the Kafka consumer under a faust ``Consumer`` of the
    aiokafka driver (the next offset it hands out), read without waiting; None while the
    partition has none (being reset) or is not assigned.

    Not ``Consumer.position``: that call runs on the consumer thread's method queue (two
    workers) and waits there while a position is being reset (up to the request timeout),
    and calls queued behind it (the recovery's seeks, commits) waited with it; a worker that
    took partitions over stayed in recovery for minutes that way. Reading the subscription
    state from this thread is a read of one attribute, for a hint the healer re-checks over
    ``stall_s``."""
    thread = getattr(consumer, "_thread", None)
    kafka = getattr(thread, "_consumer", None)
    subscription = getattr(getattr(kafka, "_subscription", None), "subscription", None)
    assignment = getattr(subscription, "assignment", None)
    if assignment is None:
        return None
    state = assignment.state_value(tp)
    if state is None or not state.has_valid_position:
        return None
    position = state.position
    return position if isinstance(position, int) else None


class StallHealer:
    """Re-reads input partitions whose head message Faust dropped (fix 2's other half).

    Faust delivers a fetched message with ``wait_first(callback(message), suspend_flow)``
    and marks it read either way, so a message caught by a rebalance's flow suspension is
    never delivered; later offsets are, and (with fix 2) the commit stops at the dropped one.
    A partition whose lowest acknowledged offset stays above its committed offset for
    ``STALL_S`` is sought back to the committed offset: the dropped message is delivered, and
    those after it again (the caller marks them as replays, which are idempotent). So is a
    partition fetched past its committed offset with nothing acknowledged and nothing in
    flight: the dropped messages were the last ones fetched, and no later one would ever
    reveal them. "Fetched past" is the consumer's fetch position (the next offset the Kafka
    consumer hands out), not Faust's read offset: Faust's getmany drops records around a
    rebalance before they count as read, and a read offset left from an earlier ownership of
    the partition can lie below the commit. A worker whose peer was killed lost every request
    published while the rebalance went on that way (the partitions fetched to their end,
    nothing delivered, the read offset stale): one run in ten of the failover test.

    "In flight" includes the messages waiting in an agent's stream buffer: Faust tracks a
    message as unacknowledged only when the stream takes it from the buffer, so under a
    backlog longer than ``stall_s`` every partition whose next message still waits there
    looks like the last case. ``queued(topic)`` says whether messages of ``topic`` wait in a
    buffer; while they do, nothing is read again on that evidence alone (it would deliver
    the backlog twice and stall the partition's commits; under load it did, every 5 s).

    It reads private attributes of faust's ``Consumer``; construction raises
    :class:`FaustPatchError` if the installed Faust no longer declares them, rather than
    letting a rename turn the healer off silently.
    """

    def __init__(
        self,
        consumer_of: Callable[[], Any],
        topics: set[str],
        stall_s: float = STALL_S,
        *,
        queued: Callable[[str], bool],
        position_of: Callable[[Any, Any], int | None] | None = None,
    ) -> None:
        require_written_for_versions("stall healer")
        missing = _missing_consumer_internals()
        if missing:
            raise FaustPatchError(
                f"the stall healer reads {missing} of faust's Consumer, which faust-streaming"
                f"=={installed_version('faust-streaming')} does not have (written for"
                f" {FAUST_STREAMING_VERSION})"
            )
        self._consumer_of = consumer_of
        self._topics = topics
        self._queued = queued
        self._position_of = position_of or fetch_position
        self._stall_s = stall_s
        self._since: dict[Any, float] = {}
        self.healed = 0

    def stalled(self, now: float) -> list[tuple[Any, int]]:
        """Partitions stalled for longer than ``stall_s``, with their committed offset."""
        consumer = self._consumer_of()
        due = []
        for tp in list(consumer.assignment()):
            if tp.topic not in self._topics:
                continue
            if not self._dropped(consumer, tp):
                self._since.pop(tp, None)
                continue
            first = self._since.setdefault(tp, now)
            if now - first >= self._stall_s:
                due.append((tp, consumer._committed_offset[tp]))
        return due

    def hole(self, tp: Any) -> bool:
        """Whether ``tp`` has, right now, a message fetched but never delivered (a stall not
        healed yet, or a moment between a fetch and its delivery): what was processed of the
        partition is then not everything before the last offset processed. What concludes
        from the processed offsets (a reconciliation) must wait while it is so."""
        return self._dropped(self._consumer_of(), tp)

    def _dropped(self, consumer: Any, tp: Any) -> bool:
        """Whether a message at the committed offset was fetched but never delivered: later
        ones were processed, or (the dropped messages were the last ones fetched) nothing of
        the partition is processed or in flight although the consumer fetched past the
        commit."""
        committed = consumer._committed_offset.get(tp)
        if committed is None:
            return False
        # The fetch position first (the consumer thread moves it on meanwhile): what is read
        # after it is then at least as recent.
        position = self._fetch_position(consumer, tp)
        acked = consumer._acked.get(tp)
        if acked:
            return bool(min(acked) > committed)
        # Right after a seek the position is the committed offset: not a sign.
        if position is None or position <= committed:
            return False
        if self._queued(tp.topic):
            return False  # the next message may be waiting in the buffer: not a sign
        return not any(m.tp == tp and not m.acked for m in list(consumer._unacked_messages))

    def _fetch_position(self, consumer: Any, tp: Any) -> int | None:
        """The next offset the Kafka consumer hands out for ``tp``; None while it has none
        (being reset, or not assigned): no sign either way."""
        return self._position_of(consumer, tp)

    async def heal(self, tp: Any, offset: int) -> None:
        """Read ``tp`` again from ``offset``."""
        await self._consumer_of().seek(tp, offset)
        self._since.pop(tp, None)
        self.healed += 1


def stream_buffer_holds(app: faust.App) -> Callable[[str], bool]:
    """The healer's ``queued``: whether messages of a topic wait in a stream buffer of
    ``app`` (the channels its conductor delivers to)."""

    def queued(topic: str) -> bool:
        return any(not channel.queue.empty() and topic in channel.topics for channel in app.topics)

    return queued
