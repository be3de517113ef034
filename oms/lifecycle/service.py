"""The lifecycle of a worker's orders as one component: the periodic check (reconciliation,
monitoring rules, execution algorithms), metrics samples, and the reconciliation of an
account after its exchange session came back.

Built by the worker (:mod:`oms.streams.worker`, the composition root) from the parts it built
before, each passed in: the reconciler, the monitor, the algorithms, the metrics collector, the
partition ownership they share, and narrow callables for what it reads of the rest. The
worker's Faust timers call :meth:`LifecycleService.check` and
:meth:`LifecycleService.sample_metrics`; started, the component follows the venue's
reconnects (:meth:`~oms.exchange.interface.Exchange.next_reconnect`) and runs the
algorithms' passes whenever they have work.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog

from oms.algos.scheduler import AlgoScheduler
from oms.algos.tuning_math import RETRY_METRIC_PREFIX
from oms.component import Component
from oms.exchange.interface import Reconnect
from oms.kafka.partitioning import PartitionOwnership, partition_of
from oms.lifecycle.monitor import LifecycleMonitor
from oms.lifecycle.reconcile import OrderReconciler
from oms.metrics import OrderMetricsCollector
from oms.schemas import MetricsSample

log = structlog.get_logger(__name__)


class LifecycleService(Component):
    """The lifecycle timer's work, the metrics samples and the reconnect reconciliations of
    one worker.

    ``can_reconcile()``: the instruments are loaded and no rebalance or table recovery is
    under way (a reconciliation pass over new partitions waits for that).
    """

    def __init__(
        self,
        *,
        partitions: int,
        ownership: PartitionOwnership,
        reconciler: OrderReconciler,
        monitor: LifecycleMonitor,
        algos: AlgoScheduler,
        metrics: OrderMetricsCollector,
        next_reconnect: Callable[[], Awaitable[Reconnect]],
        reconciled: Callable[[Reconnect], None],
        can_reconcile: Callable[[], bool],
        queue_statistics: Callable[[], dict[str, Any]],
        executor_stats: Callable[[], Mapping[str, int]],
        inflight: Callable[[], int],
        publish_sample: Callable[[MetricsSample], Awaitable[None]],
        worker_id: str,
        algo_interval_s: float = 1.0,
    ) -> None:
        super().__init__("lifecycle")
        self._partitions = partitions
        self._ownership = ownership
        self.reconciler = reconciler
        self.monitor = monitor
        self.algos = algos
        self.metrics = metrics
        self._next_reconnect = next_reconnect
        self._reconciled_after = reconciled
        self._can_reconcile = can_reconcile
        self._queue_statistics = queue_statistics
        self._executor_stats = executor_stats
        self._inflight = inflight
        self._publish_sample = publish_sample
        self.worker_id = worker_id
        self._algo_interval_s = algo_interval_s
        # Partitions whose orders were reconciled since they became ours.
        self._reconciled: frozenset[int] | None = None

    async def on_start(self) -> None:
        self.spawn(self._follow_reconnects(), "reconnects")
        self.spawn(self._run_algorithms(), "algorithms")

    # -- execution algorithms --------------------------------------------------------------

    async def _run_algorithms(self) -> None:
        """The algorithms' passes: as soon as a write asks for one (a routed order's books,
        a slice due now), when a wake-up comes, and at least every ``check_interval`` for
        the strategies that follow ticks. Not on the lifecycle timer: a routed order would
        otherwise wait up to a whole interval before each of its steps."""
        while True:
            await self.algos.wait_for_work(self._algo_interval_s)
            if not self._ownership.refresh():
                continue
            try:
                await self.algos.run_once()
            except Exception:  # a bad pass must not stop the algorithms
                log.exception("lifecycle.algorithms_failed")

    # -- reconnects ------------------------------------------------------------------------

    async def _follow_reconnects(self) -> None:
        while True:
            reconnect = await self._next_reconnect()
            self.spawn(self._after_reconnect(reconnect), f"reconnect:{reconnect.account_id}")

    async def _after_reconnect(self, reconnect: Reconnect) -> None:
        try:
            await self.reconcile_account(reconnect.account_id)
        except Exception:
            log.exception("lifecycle.reconnect_reconciliation_failed", account=reconnect.account_id)
        finally:
            # The account's commands wait for this (the venue holds them back until then).
            self._reconciled_after(reconnect)

    async def reconcile_account(self, account_id: str) -> None:
        """After an exchange reconnect: every live order of the account (owned partitions)
        is looked up by label, so fills and cancels missed while away are reported."""
        self._ownership.refresh()
        done = await self.reconciler.reconcile_account(account_id)
        counters = self.monitor.counters
        counters["reconnect_reconciliations"] = counters.get("reconnect_reconciliations", 0) + 1
        counters["reconnect_lookups"] = counters.get("reconnect_lookups", 0) + done["orders"]
        log.info("lifecycle.reconciled", account_id=account_id, **done)

    # -- partitions ------------------------------------------------------------------------

    def reconcile_new_partitions(self) -> None:
        """Start a pass over the orders of partitions that became ours (worker start,
        takeover) once their table partitions are recovered and the instruments loaded."""
        if not self._can_reconcile():
            return
        owned = self._ownership.owned
        trigger = "start" if self._reconciled is None else "assigned"
        new = owned - (self._reconciled or frozenset())
        self._reconciled = owned
        if not new:
            return
        partitions = self._partitions
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

    def partitions_revoked(self, partitions: set[int]) -> None:
        """Partitions given up are reconciled again when (re)assigned: another worker may
        have owned them meanwhile."""
        if self._reconciled:
            self._reconciled = self._reconciled - partitions

    # -- the timer ---------------------------------------------------------------------------

    async def check(self) -> dict[str, int]:
        """One lifecycle pass over the orders of the partitions this worker owns."""
        if not self._ownership.refresh():
            return {}
        self.reconcile_new_partitions()
        await self.reconciler.run_once()
        self.refresh_gauges()
        return await self.monitor.run_once()

    # -- metrics ---------------------------------------------------------------------------

    def refresh_gauges(self) -> None:
        """Retries, queue statistics and in-flight commands into the metrics collector."""
        self.metrics.set_retries(self._executor_stats().get("retries", 0))
        self.metrics.set_queue_statistics(self._queue_statistics(), self._inflight())

    async def sample_metrics(self) -> MetricsSample:
        """Publish one sample of this worker's metrics (the sink stores it in ``metrics``)."""
        self.refresh_gauges()
        values = self.metrics.flat()
        for name, value in self.monitor.counters.items():
            values[f"lifecycle.{name}"] = float(value)
        for name, value in self.reconciler.counters.items():
            values[f"reconcile.{name}"] = float(value)
        for name, value in self._executor_stats().items():
            # Cumulative retry outcomes, for the retry schedule of `oms tune`.
            if name.startswith(RETRY_METRIC_PREFIX):
                values[name] = float(value)
        sample = MetricsSample(worker=self.worker_id, values=values)
        await self._publish_sample(sample)
        return sample

    def prometheus(self) -> bytes:
        """The Prometheus exposition of the worker's metrics, gauges refreshed."""
        self.refresh_gauges()
        return self.metrics.prometheus()

    def summary(self) -> dict[str, Any]:
        """``/metrics/summary``: the metrics, the lifecycle, reconciliation and algorithm
        counters, and the executor's."""
        body = self.metrics.snapshot()
        body["lifecycle"] = self.monitor.snapshot()
        body["reconcile"] = self.reconciler.snapshot()
        body["algos"] = dict(self.algos.counters)
        body["executor"] = dict(self._executor_stats())
        return body
