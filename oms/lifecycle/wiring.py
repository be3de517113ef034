"""How the lifecycle, metrics and probes plug into an order worker.

Kept apart from :mod:`oms.streams.worker` so the worker only has three call sites: build
this, ``register()`` it, and pass every emitted event to ``on_event``.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

import structlog

from oms.algos.scheduler import AlgoScheduler
from oms.kafka.partitioning import partition_of
from oms.lifecycle.monitor import LifecycleMonitor
from oms.lifecycle.reconcile import OrderReconciler
from oms.metrics import OrderMetricsCollector
from oms.metrics.collector import CONTENT_TYPE
from oms.schemas import MetricsSample, OrderEvent, Topic
from oms.schemas.commands import InternalComponent

if TYPE_CHECKING:
    from oms.streams.worker import OrderWorker

log = structlog.get_logger(__name__)


class LifecycleWiring:
    """The lifecycle timer, the metrics collector and the probe endpoints of one worker."""

    def __init__(self, worker: OrderWorker) -> None:
        self._worker = worker
        settings = worker.settings
        self.metrics = OrderMetricsCollector()
        worker.executor.on_command = self.metrics.observe_command
        partitions = settings.kafka.partitions
        self._owned: set[int] = set()

        def owns(order_id: str) -> bool:
            return partition_of(order_id, partitions) in self._owned

        self.ticks = worker.tick_cache
        self.algos = AlgoScheduler(
            orders=lambda: worker.oms.orders.items(),
            owns=owns,
            publish_request=worker.commands_of(InternalComponent.ALGO),
            latest_tick=self.ticks.latest,
        )
        self._owns = owns
        self._metrics_topic = settings.topic(Topic.METRICS)
        self.worker_id = f"{settings.worker.app_id}@{socket.gethostname()}:{os.getpid()}"
        # On start, takeover and reconnect: live orders checked against the exchange.
        self.reconciler = OrderReconciler(
            settings.lifecycle,
            worker.executor,
            orders=lambda: worker.oms.orders.items(),
            order_of=worker._order_of,
            owns=owns,
            currency_of=worker.catalog.currency_of,
        )
        # Partitions whose orders were reconciled since they became ours.
        self._reconciled: frozenset[int] | None = None
        worker.executor.exchange.on_reconnect = self.reconcile_account
        self.monitor = LifecycleMonitor(
            settings=settings.lifecycle,
            orders=lambda: worker.oms.orders.items(),
            owns=owns,
            recheck=worker.executor.recheck,
            is_busy=worker.executor.is_inflight,
            publish_request=worker.commands_of(InternalComponent.LIFECYCLE),
        )

    def refresh_gauges(self) -> None:
        """Queue statistics and in-flight commands into the metrics collector."""
        worker = self._worker
        self.metrics.set_queue_statistics(worker.queue_statistics(), worker.executor.inflight)

    async def reconcile_account(self, account_id: str) -> None:
        """After an exchange reconnect: every live order of the account (owned partitions)
        is looked up by label, so fills and cancels missed while away are reported."""
        self._owned = self._worker.owned_partitions()
        done = await self.reconciler.reconcile_account(account_id)
        counters = self.monitor.counters
        counters["reconnect_reconciliations"] = counters.get("reconnect_reconciliations", 0) + 1
        counters["reconnect_lookups"] = counters.get("reconnect_lookups", 0) + done["orders"]
        log.info("lifecycle.reconciled", account_id=account_id, **done)

    def reconcile_new_partitions(self) -> None:
        """Start a pass over the orders of partitions that became ours (worker start,
        takeover) once their table partitions are recovered and the instruments loaded."""
        app = self._worker.app
        recovery: Any = getattr(app.tables, "recovery", None)
        if (
            not len(self._worker.catalog)  # the currency of each lookup comes from it
            or getattr(app, "rebalancing", False)
            or getattr(app, "in_recovery", False)
            or (recovery is not None and not recovery.completed.is_set())
        ):
            return
        owned = frozenset(self._owned)
        trigger = "start" if self._reconciled is None else "assigned"
        new = owned - (self._reconciled or frozenset())
        self._reconciled = owned
        if not new:
            return
        partitions = self._worker.settings.kafka.partitions
        orders = self.reconciler.candidates(
            owns=lambda order_id: partition_of(order_id, partitions) in new
        )
        log.info(
            "lifecycle.reconcile_partitions",
            trigger=trigger,
            partitions=sorted(new),
            orders=len(orders),
        )
        self.reconciler.start_pass(orders, trigger)

    async def sample_metrics(self) -> MetricsSample:
        """Publish one sample of this worker's metrics (the sink stores it in ``metrics``)."""
        worker = self._worker
        self.metrics.set_retries(worker.executor.stats.get("retries", 0))
        self.refresh_gauges()
        values = self.metrics.flat()
        for name, value in self.monitor.counters.items():
            values[f"lifecycle.{name}"] = float(value)
        for name, value in self.reconciler.counters.items():
            values[f"reconcile.{name}"] = float(value)
        sample = MetricsSample(worker=self.worker_id, values=values)
        await worker._send(self._metrics_topic, self.worker_id.encode(), sample.to_bytes())
        return sample

    def on_event(self, event: OrderEvent) -> None:
        """Every event the worker emits (metrics)."""
        self.metrics.observe_event(event)

    async def check(self) -> dict[str, int]:
        """One lifecycle pass over the orders of the partitions this worker owns."""
        worker = self._worker
        self._owned = worker.owned_partitions()
        if not self._owned:
            return {}
        self.reconcile_new_partitions()
        await self.reconciler.run_once()
        executor = worker.executor
        self.metrics.set_retries(executor.stats.get("retries", 0))
        self.refresh_gauges()
        await self.algos.run_once()
        return await self.monitor.run_once()

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Readiness: instruments loaded and not in the middle of a rebalance. (A worker
        without partitions, e.g. more replicas than partitions, is still ready: it is a
        standby, and readiness gates rollouts.)"""
        worker = self._worker
        instruments = len(worker.catalog)
        try:
            assigned = len(worker.app.consumer.assignment())
        except Exception:  # consumer not started yet
            assigned = 0
        rebalancing = bool(getattr(worker.app, "rebalancing", False))
        ok = instruments > 0 and not rebalancing
        return ok, {
            "ready": ok,
            "instruments": instruments,
            "rebalancing": rebalancing,
            "assigned_partitions": assigned,
        }

    def register(self) -> None:
        """Timer and web pages on the worker's Faust app."""
        app = self._worker.app
        interval = self._worker.settings.lifecycle.check_interval

        async def on_revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
            # Partitions given up are reconciled again when (re)assigned: another worker may
            # have owned them meanwhile.
            if self._reconciled:
                topic = self._worker._commands_topic  # the orders' partitions
                gone = {tp.partition for tp in revoked if tp.topic == topic}
                self._reconciled = self._reconciled - gone

        app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]

        @app.timer(interval=interval)
        async def lifecycle_check() -> None:
            try:
                await self.check()
            except Exception:  # a bad pass must not stop the timer
                log.exception("lifecycle.check_failed")

        sample_every = self._worker.settings.lifecycle.metrics_sample_interval
        if sample_every > 0:

            @app.timer(interval=sample_every)
            async def metrics_sample() -> None:
                try:
                    await self.sample_metrics()
                except Exception:
                    log.exception("lifecycle.metrics_sample_failed")

        @app.page("/metrics")
        async def metrics(web: Any, request: Any) -> Any:
            self.refresh_gauges()
            self.metrics.set_retries(self._worker.executor.stats.get("retries", 0))
            # aiohttp refuses a charset inside content_type: pass the header as is.
            return web.bytes(self.metrics.prometheus(), headers={"Content-Type": CONTENT_TYPE})

        @app.page("/metrics/summary")
        async def summary(web: Any, request: Any) -> Any:
            body = self.metrics.snapshot()
            body["lifecycle"] = self.monitor.snapshot()
            body["reconcile"] = self.reconciler.snapshot()
            body["algos"] = dict(self.algos.counters)
            body["executor"] = dict(self._worker.executor.stats)
            return web.json(body)

        @app.page("/live")
        async def live(web: Any, request: Any) -> Any:
            return web.json({"live": True})

        @app.page("/ready")
        async def ready(web: Any, request: Any) -> Any:
            ok, body = self.ready()
            return web.json(body, status=200 if ok else 503)
