"""Wires the order-processing worker: app, agents, executor, recovery.

Crash safety rests on three rules:

1. State is only in the changelog-backed ``orders`` table; offsets are committed after the
   agent has processed a message (at-least-once).
2. Requests that were already on a partition when this worker took it over may have been
   processed by the previous owner: they are executed only after a label lookup.
3. A periodic sweep looks up, by label, every order of an owned partition that was sent but
   never acknowledged, so an order whose reply was lost (or whose worker died mid-flight)
   is reported or, if the exchange never saw it, sent again.
"""

from __future__ import annotations

import logging
from typing import Any

import faust
import structlog
from aiokafka.partitioner import murmur2
from faust.types import TP

from oms.exchange.instruments import InstrumentCatalog
from oms.logs import configure_logging
from oms.risk.runtime import create_intake_guard, register_guard
from oms.schemas import DeadLetter, ExecutionReport, OrderEvent, OrderStatus, now_ms
from oms.secrets import SecretStore
from oms.settings import Settings
from oms.streams.app import OmsApp, create_app
from oms.streams.execution import ExchangeSessions, OrderExecutor
from oms.streams.intake import IntakeContext, handle_request
from oms.streams.order_state import OrderStateContext, handle_report

log = structlog.get_logger(__name__)

_UNACKNOWLEDGED = frozenset({OrderStatus.PENDING, OrderStatus.SUBMITTED})


class OrderWorker:
    """Everything one worker process runs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.oms: OmsApp = create_app(settings)
        self.app: faust.App = self.oms.app
        secrets = SecretStore(settings.resolved_secrets_file, settings.risk.exchange_accounts())
        self._trading_accounts = frozenset(secrets.trading_accounts(settings.accounts))
        self.catalog = InstrumentCatalog(settings.exchange)
        self.sessions = ExchangeSessions(settings, secrets)
        self.executor = OrderExecutor(
            self.sessions, self._publish_report, settings, self.catalog.currency_of
        )
        # Per partition of the input topics: offsets below this were on the topic when this
        # worker took the partition, so a previous owner may have processed them.
        self._replay_below: dict[tuple[str, int], int] = {}
        self._requests_topic = self.oms.requests.get_topic_name()
        self._events_topic = self.oms.events.get_topic_name()
        self._reports_topic = self.oms.reports.get_topic_name()
        self._dead_letters_topic = self.oms.dead_letters.get_topic_name()
        # Authentication and pre-trade risk (issue 9).
        self.guard = create_intake_guard(
            settings, self.oms, self.catalog.get, self._send, self._dead_letter, self.executor
        )
        self.intake = IntakeContext(
            orders=self.oms.orders,
            executor=self.executor,
            instrument=self.catalog.get,
            account_known=self._trading_accounts.__contains__,
            emit=self._emit,
            dead_letter=self._dead_letter,
            source_topic=self._requests_topic,
            guard=self.guard,
        )
        self.state = OrderStateContext(
            orders=self.oms.orders,
            emit=self._emit,
            dead_letter=self._dead_letter,
            source_topic=self._reports_topic,
        )
        self._register()

    # -- plumbing ------------------------------------------------------------------------

    async def _send(self, topic: str, key: bytes | None, value: bytes) -> None:
        # Faust's producer directly: the Topic.send channel machinery cost ~10% of the
        # worker's CPU. Same producer, so Faust still flushes it before committing offsets.
        await self.app.producer.send(
            topic, key, value, partition=None, timestamp=None, headers=None
        )

    async def _emit(self, event: OrderEvent) -> None:
        await self._send(self._events_topic, event.order_id.encode(), event.to_bytes())

    async def _dead_letter(self, letter: DeadLetter) -> None:
        key = letter.key.encode() if letter.key else None
        await self._send(self._dead_letters_topic, key, letter.to_bytes())

    async def _publish_report(self, report: ExecutionReport) -> None:
        await self._send(self._reports_topic, report.order_id.encode(), report.to_bytes())

    # -- agents, timers, hooks -------------------------------------------------------------

    def _register(self) -> None:
        app, oms = self.app, self.oms
        requests_name = self._requests_topic

        async def intake(stream: Any) -> None:
            await self.catalog.wait_loaded()
            await self.guard.ready()
            async for event in stream.events():
                message = event.message
                await handle_request(
                    self.intake,
                    event.value,
                    key=message.key,
                    partition=message.partition,
                    offset=message.offset,
                    replayed=self._is_replay(message),
                    timestamp_ms=int(message.timestamp * 1000),
                )

        async def order_state(stream: Any) -> None:
            async for event in stream.events():
                message = event.message
                await handle_report(
                    self.state,
                    event.value,
                    key=message.key,
                    partition=message.partition,
                    offset=message.offset,
                    replayed=self._is_replay(message),
                )

        app.agent(oms.requests, name="intake")(intake)
        app.agent(oms.reports, name="order_state")(order_state)

        inputs = {requests_name, self._reports_topic}

        async def on_assigned(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
            tps = [tp for tp in assigned if tp.topic in inputs]
            if not tps:
                return
            highwaters = await app.consumer.highwaters(*tps)
            for tp, offset in highwaters.items():
                self._replay_below[(tp.topic, tp.partition)] = offset
            log.info(
                "worker.partitions_assigned",
                partitions=sorted(tp.partition for tp in tps if tp.topic == requests_name),
            )

        app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]

        interval = self.settings.worker.recovery_check_interval_s
        register_guard(app, self.guard, interval)

        @app.timer(interval=interval)
        async def sweep_unacknowledged() -> None:
            await self.sweep()

        @app.task
        async def start_catalog() -> None:
            await self.catalog.start()

        @app.page("/health")
        async def health(web: Any, request: Any) -> Any:
            return web.json({"status": "ok", "instruments": len(self.catalog)})

        @app.page("/stats")
        async def stats(web: Any, request: Any) -> Any:
            return web.json(
                {
                    "intake": self.intake.counters,
                    "order_state": self.state.counters,
                    "executor": self.executor.stats,
                }
            )

    def _is_replay(self, message: Any) -> bool:
        return bool(message.offset < self._replay_below.get((message.topic, message.partition), 0))

    async def sweep(self) -> int:
        """Reconcile orders of owned partitions that were sent but never acknowledged."""
        owned = self.oms.active_partitions(self._requests_topic)
        if not owned:
            return 0
        cutoff = now_ms() - int(self.settings.worker.submit_timeout_s * 1000)
        partitions = self.settings.kafka.partitions
        swept = 0
        for order_id, order in list(self.oms.orders.items()):
            if order is None or order.status not in _UNACKNOWLEDGED:
                continue
            if order.updated_at > cutoff or self.executor.is_inflight(order_id):
                continue
            if _partition_of(order_id, partitions) not in owned:
                continue
            swept += 1
            log.info("worker.reconcile", order_id=order_id, status=order.status.value)
            await self.executor.reconcile(order)
        return swept

    def run(self, loglevel: str = "info") -> None:
        """Run the worker in the foreground until stopped."""
        worker = _FaustWorker(
            self.app, loglevel=loglevel, redirect_stdouts=False, oms_json=self.settings.log_json
        )
        worker.execute_from_commandline()


class _FaustWorker(faust.Worker):
    """Faust's worker, with our structured logging at the level asked for.

    Faust's own logging setup leaves the root logger at DEBUG whatever the level given, and
    formatting debug records of every produced message cost ~8% of the worker's CPU.
    """

    def __init__(self, app: faust.App, *, oms_json: bool, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._oms_level = str(kwargs.get("loglevel") or "info")
        self._oms_json = oms_json

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        configure_logging(self._oms_level, self._oms_json)


def _partition_of(key: str, partitions: int) -> int:
    """Kafka's default partitioner (murmur2), as used by every producer of these topics."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions
