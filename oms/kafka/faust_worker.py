"""A Faust app with the project's conventions, and the worker process that runs it.

Both Faust processes of the OMS, the order worker (``oms.streams.worker``) and the position
keeper (``oms.positions.keeper``), build their app with :func:`new_faust_app` and run it with
:func:`run_faust_worker`, which applies the Faust patches, checks the app against them and
creates every topic before Faust starts.

A process that holds some of its output back in a buffer of its own (the position keeper's
batched records) gives :func:`new_faust_app` a ``before_producer_flush``: Faust flushes its
producer before it commits input offsets, and the app's producer sends that buffer first in
the same flush (:class:`FlushFirstProducer`), so no input offset is committed while output
made from it is still only in the buffer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import faust
from faust.transport.drivers.aiokafka import Producer as AIOKafkaProducer
from faust.types import ProducerT

from oms.kafka.admin import TopicSpec, compacted_topic_names, ensure_topics, topic_specs
from oms.kafka.faust_patches import apply_faust_patches, check_app
from oms.kafka.security import KafkaConnection
from oms.logs import configure_logging
from oms.settings import Settings

Flush = Callable[[], Awaitable[None]]


class FlushFirstProducer(AIOKafkaProducer):
    """Faust's aiokafka producer that runs ``before_flush`` each time it is flushed, before
    flushing what it was already given."""

    def __init__(self, transport: Any, *, before_flush: Flush, **kwargs: Any) -> None:
        self._before_flush = before_flush
        super().__init__(transport, **kwargs)

    async def flush(self) -> None:
        """Run ``before_flush``, then wait until everything sent so far is on the broker."""
        await self._before_flush()
        await self.flush_sent()

    async def flush_sent(self) -> None:
        """Wait until everything sent so far is on the broker, without ``before_flush``."""
        await super().flush()


class _FlushFirstApp(faust.App):
    """A Faust app whose producer is a :class:`FlushFirstProducer`."""

    def __init__(self, app_id: str, *, before_producer_flush: Flush, **options: Any) -> None:
        self._before_producer_flush = before_producer_flush
        super().__init__(app_id, **options)

    def _new_producer(self) -> ProducerT:
        # Faust's factory of the app's producer (created on first use, on the worker's loop).
        return FlushFirstProducer(
            self.transport,
            loop=self.loop,
            beacon=self.beacon,
            before_flush=self._before_producer_flush,
        )


def new_faust_app(
    settings: Settings,
    app_id: str,
    web_port: int,
    *,
    before_producer_flush: Flush | None = None,
    **overrides: Any,
) -> faust.App:
    """A Faust app with the project's conventions (raw keys/values, our JSON codecs in
    tables, acks=all, memory store recovered from changelogs); ``overrides`` win.
    ``before_producer_flush``: what the app's producer runs first whenever it is flushed
    (its producer is then a :class:`FlushFirstProducer`)."""
    worker = settings.worker
    datadir = settings.data_dir / "faust" / app_id
    # Faust creates only the last level of its data dir.
    datadir.parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = dict(
        # broker, and broker_credentials when the transport is secured
        **KafkaConnection.from_settings(settings).faust(),
        store="memory://",
        topic_partitions=settings.kafka.partitions,
        topic_replication_factor=settings.kafka.replication_factor,
        key_serializer="raw",
        value_serializer="raw",
        web_port=web_port,
        web_host="127.0.0.1",
        datadir=str(datadir),
        consumer_auto_offset_reset="earliest",
        producer_linger_ms=worker.producer_linger_ms,
        producer_acks=-1,
        # aiokafka keeps one open batch per partition and blocks a send while it is full and
        # the request before it is in flight: with Faust's 16 KiB a burst of table writes
        # filled the producer buffer, and the conductor stops delivering to every agent
        # while that buffer holds over 100 messages. 1 MiB (the broker's message.max.bytes)
        # never blocks.
        producer_max_batch_size=1_048_576,
        # Offsets are committed on the timer only. Faust's count-based commit runs inside the
        # loop that delivers messages to the agents, and a commit first flushes the producer
        # (0.5-1 s on a loaded machine): every agent starved that long every N messages.
        broker_commit_every=2**31 - 1,
        broker_commit_interval=0.5,
        # Faust delivers a fetched batch to the agents one message at a time, at the pace of
        # the slowest, and fetches nothing new until the whole batch is delivered; aiokafka
        # hands out buffered partitions first come, first served. With Faust's defaults
        # (4 MiB per partition, no cap per poll) a burst of commands held every report, so
        # every acknowledgement, for seconds. Small chunks per partition and per poll keep
        # each agent's turn short.
        consumer_max_fetch_size=32 * 1024,
        broker_max_poll_records=200,
        stream_wait_empty=False,
        broker_session_timeout=worker.session_timeout_s,
        broker_heartbeat_interval=max(1.0, worker.session_timeout_s / 4),
        table_standby_replicas=worker.standby_replicas,
        worker_redirect_stdouts=False,
        autodiscover=False,
    )
    options.update(overrides)
    if before_producer_flush is not None:
        return _FlushFirstApp(app_id, before_producer_flush=before_producer_flush, **options)
    return faust.App(app_id, **options)


def worker_topics(
    app: faust.App, settings: Settings, extra: Mapping[str, int | TopicSpec] | None = None
) -> dict[str, int | TopicSpec]:
    """Topics a worker of ``app`` needs besides the pipeline's: ``extra`` ones and every
    table's changelog (compacted)."""
    specs: dict[str, int | TopicSpec] = dict(extra or {})
    for table in app.tables.values():
        name = table.changelog_topic.get_topic_name()
        specs[name] = TopicSpec(
            name,
            table.partitions or settings.kafka.partitions,
            settings.kafka.replication_factor,
            {"cleanup.policy": "compact"},
        )
    return specs


def create_topics_first(
    app: faust.App, settings: Settings, extra: Mapping[str, int | TopicSpec] | None = None
) -> None:
    """Create the pipeline's topics, ``extra`` ones and every table's changelog before the
    Faust worker starts, on an event loop that stays current for Faust to run on.

    Faust declares its changelogs itself, but on a fresh or busy cluster its first
    assignment can come before they are in metadata: a table then sees 0 partitions
    (``PartitionsMismatch``) and its agent dies while the process looks healthy.
    """
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(ensure_topics(settings, worker_topics(app, settings, extra)))


def declared_compacted_topics(
    app: faust.App, settings: Settings, extra: Mapping[str, int | TopicSpec] | None = None
) -> frozenset[str]:
    """Full names of the topics a worker of ``app`` creates compacted: pipeline topics
    declared so (``oms.kafka.admin``), ``extra`` ones and every table's changelog."""
    return compacted_topic_names(topic_specs(settings, worker_topics(app, settings, extra)))


class FaustWorker(faust.Worker):
    """Faust's worker, with our structured logging at the level asked for.

    Faust's own logging setup leaves the root logger at DEBUG whatever the level given, and
    formatting debug records of every produced message cost ~8% of the worker's CPU.
    """

    def __init__(self, app: faust.App, *, loglevel: str, log_json: bool) -> None:
        super().__init__(app, loglevel=loglevel, redirect_stdouts=False)
        self._oms_level = loglevel
        self._oms_json = log_json

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        configure_logging(self._oms_level, self._oms_json)


def run_faust_worker(
    app: faust.App,
    settings: Settings,
    *,
    loglevel: str = "info",
    extra_topics: Mapping[str, int | TopicSpec] | None = None,
) -> None:
    """Run ``app`` in the foreground until stopped: Faust patched (refused on library versions
    the patches were not written for), the app checked against the patches (no agent on a
    compacted topic), every topic created (``extra_topics`` too), then Faust's worker."""
    apply_faust_patches()
    check_app(app, compacted_topics=declared_compacted_topics(app, settings, extra_topics))
    create_topics_first(app, settings, extra_topics)
    FaustWorker(app, loglevel=loglevel, log_json=settings.log_json).execute_from_commandline()
