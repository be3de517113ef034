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
and records, the executor talks to the exchange in the background. The exchange's streams
(through the gateway) come back on ``execution-reports`` to ``order_state``, the agent that
applies exchange news to the table. Waiting orders (delayed, conditional) are released by the
trigger engine through ``order-triggers`` to the ``release`` agent, which
moves them into the priority queues; the dispatcher drains those at the rate limit.

The answers of the worker's own commands and what its own engine fires concern orders the
worker usually owns: those are applied in place (:mod:`oms.streams.in_place`); the reports
are still published on ``execution-reports`` first, the triggers take ``order-triggers`` only
when the order's partition is elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TP

from oms.kafka.codecs import OrderRecordValue
from oms.kafka.faust_worker import new_faust_app
from oms.kafka.tables import KeyPartitionedTable
from oms.schemas import Topic
from oms.settings import Settings


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
    finished: Any  # faust Table[str, [account, status, ended_at]]: orders that left `orders`

    def active_partitions(self, topic_name: str) -> set[int]:
        """Partitions of a topic this worker actively owns (standbys excluded)."""
        actives: set[TP] = self.app.assignor.assigned_actives()
        return {tp.partition for tp in actives if tp.topic == topic_name}


def create_app(settings: Settings) -> OmsApp:
    """Build the worker's Faust app from settings (no agents yet: see ``worker``)."""
    worker = settings.worker

    async def flush_table_writes() -> None:
        # The tables queue their changelog writes: each producer flush (before every commit
        # of input offsets) hands them over first.
        for table in app.tables.values():
            if isinstance(table, KeyPartitionedTable):
                await table.flush_changelog()

    # Tables written by order id from anywhere in the worker, not only inside agents.
    app = new_faust_app(
        settings,
        worker.app_id,
        worker.web_port,
        Table=KeyPartitionedTable,
        before_producer_flush=flush_table_writes,
    )
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
    finished = app.Table(
        "finished-orders",
        default=None,
        key_type=str,
        partitions=settings.kafka.partitions,
        help="Orders that ended and left the orders table: a marker each, co-partitioned.",
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
        finished=finished,
    )
