"""The Faust application of an order-processing worker: topics, the order table, agents.

Data flows one way::

    order-requests ──edge──> order-commands ──intake──> orders table ──executor──> Deribit
                       │          │  ▲                         │
                       │   waiting│  │order-triggers           │
                       │          ▼  │                         │
                       │     trigger engine <── market-ticks   │
                       │     priority queues ──dispatcher──> executor
                       └──> order-events <──order_state── execution-reports <── gateway

The stateless ``edge`` authenticates traders' requests and routes each to its order's
partition of ``order-commands``, where the OMS's own commands also go. ``intake`` validates
and records, the executor talks to the exchange in the background,
and every answer comes back through ``execution-reports`` to ``order_state``, the only
agent that applies exchange news to the table. Waiting orders (delayed, conditional) are
released by the trigger engine through ``order-triggers`` to the ``release`` agent, which
moves them into the priority queues; the dispatcher drains those at the rate limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TP

from oms.kafka import faust_patches
from oms.kafka.admin import TopicSpec, ensure_topics
from oms.kafka.codecs import OrderRecordValue
from oms.schemas import Topic
from oms.settings import Settings

# Before any app exists: commits must never overtake buffered table writes.
faust_patches.install()


@dataclass
class OmsApp:
    """The Faust app with its topics and tables."""

    app: faust.App
    requests: faust.TopicT
    commands: faust.TopicT
    reports: faust.TopicT
    triggers: faust.TopicT
    events: faust.TopicT
    dead_letters: faust.TopicT
    orders: Any  # faust Table[str, OrderRecord]
    nonces: Any  # faust Table[str, list[[nonce, position]]]

    def active_partitions(self, topic_name: str) -> set[int]:
        """Partitions of a topic this worker actively owns (standbys excluded)."""
        actives: set[TP] = self.app.assignor.assigned_actives()
        return {tp.partition for tp in actives if tp.topic == topic_name}


def new_faust_app(settings: Settings, app_id: str, web_port: int, **overrides: Any) -> faust.App:
    """A Faust app with the project's conventions (raw keys/values, our JSON codecs in
    tables, acks=all, memory store recovered from changelogs); ``overrides`` win."""
    worker = settings.worker
    datadir = settings.data_dir / "faust" / app_id
    # Faust creates only the last level of its data dir.
    datadir.parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = dict(
        broker=f"kafka://{settings.kafka.bootstrap}",
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
        broker_commit_every=1000,
        broker_commit_interval=0.5,
        stream_wait_empty=False,
        broker_session_timeout=worker.session_timeout_s,
        broker_heartbeat_interval=max(1.0, worker.session_timeout_s / 4),
        table_standby_replicas=worker.standby_replicas,
        worker_redirect_stdouts=False,
        autodiscover=False,
    )
    options.update(overrides)
    return faust.App(app_id, **options)


def create_topics_first(
    app: faust.App, settings: Settings, extra: Mapping[str, int] | None = None
) -> None:
    """Create the pipeline's topics, ``extra`` ones and every table's changelog before the
    Faust worker starts, on an event loop that stays current for Faust to run on.

    Faust declares its changelogs itself, but on a fresh or busy cluster its first
    assignment can come before they are in metadata: a table then sees 0 partitions
    (``PartitionsMismatch``) and its agent dies while the process looks healthy.
    """
    specs: dict[str, int | TopicSpec] = dict(extra or {})
    for table in app.tables.values():
        specs[table.changelog_topic.get_topic_name()] = TopicSpec(
            table.changelog_topic.get_topic_name(),
            table.partitions or settings.kafka.partitions,
            settings.kafka.replication_factor,
            {"cleanup.policy": "compact"},
        )
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(ensure_topics(settings, specs))


def create_app(settings: Settings) -> OmsApp:
    """Build the worker's Faust app from settings (no agents yet: see ``worker``)."""
    worker = settings.worker
    app = new_faust_app(settings, worker.app_id, worker.web_port)
    orders = app.Table(
        "orders",
        default=None,
        key_type=str,
        value_type=OrderRecordValue,
        partitions=settings.kafka.partitions,
        help="Latest state of every order, keyed by order id (co-partitioned with requests).",
    )
    nonces = app.Table(
        "request-nonces",
        default=None,
        key_type=str,
        partitions=settings.kafka.partitions,
        help="Signed-request nonces per order id (replay protection), co-partitioned.",
    )
    return OmsApp(
        app=app,
        requests=app.topic(settings.topic(Topic.ORDER_REQUESTS)),
        commands=app.topic(settings.topic(Topic.ORDER_COMMANDS)),
        reports=app.topic(settings.topic(Topic.EXECUTION_REPORTS)),
        triggers=app.topic(settings.topic(Topic.ORDER_TRIGGERS)),
        events=app.topic(settings.topic(Topic.ORDER_EVENTS)),
        dead_letters=app.topic(settings.topic(Topic.DEAD_LETTERS)),
        orders=orders,
        nonces=nonces,
    )
