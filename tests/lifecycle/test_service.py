"""The lifecycle component: started, it reconciles every account whose exchange session came
back, and releases the account's commands afterwards even when the reconciliation failed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from oms.algos.scheduler import AlgoScheduler
from oms.component import ComponentState
from oms.exchange.interface import Reconnect
from oms.kafka.partitioning import PartitionOwnership
from oms.lifecycle.monitor import LifecycleMonitor
from oms.lifecycle.reconcile import OrderReconciler
from oms.lifecycle.service import LifecycleService
from oms.metrics import OrderMetricsCollector
from oms.schemas import OrderRecord
from oms.settings import LifecycleSettings


async def _nothing(*args: Any) -> Any:
    return None


class Venue:
    """The reconnect side of an Exchange."""

    def __init__(self) -> None:
        self.reconnects: asyncio.Queue[Reconnect] = asyncio.Queue()
        self.reconciled: list[Reconnect] = []
        self.released: asyncio.Queue[Reconnect] = asyncio.Queue()

    async def next_reconnect(self) -> Reconnect:
        return await self.reconnects.get()

    def release(self, reconnect: Reconnect) -> None:
        self.reconciled.append(reconnect)
        self.released.put_nowait(reconnect)


async def test_reconnects_are_reconciled_then_released() -> None:
    settings = LifecycleSettings()
    venue = Venue()
    broken = {"orders": False}

    def orders() -> Iterable[tuple[str, OrderRecord | None]]:
        if broken["orders"]:
            raise RuntimeError("table unavailable")
        return []

    ownership = PartitionOwnership(8, lambda: {0, 1})
    owns = ownership.owns
    reconciler = OrderReconciler(
        settings,
        exchange=None,  # type: ignore[arg-type]  # no order to look up
        lookup=None,  # type: ignore[arg-type]
        publish=_nothing,
        is_running=lambda order_id: False,
        orders=orders,
        order_of=lambda order_id: None,
        owns=owns,
        currency_of=lambda name: "BTC",
    )
    monitor = LifecycleMonitor(
        settings, lambda order_id: None, owns, _nothing, lambda order_id: False, _nothing
    )
    service = LifecycleService(
        partitions=8,
        ownership=ownership,
        reconciler=reconciler,
        monitor=monitor,
        algos=AlgoScheduler(lambda order_id: None, owns, _nothing, lambda instrument: None),
        metrics=OrderMetricsCollector(),
        next_reconnect=venue.next_reconnect,
        reconciled=venue.release,
        can_reconcile=lambda: True,
        queue_statistics=dict,
        executor_stats=dict,
        inflight=lambda: 0,
        publish_sample=_nothing,
        worker_id="w",
    )
    assert service.state is ComponentState.READY
    await service.start()
    venue.reconnects.put_nowait(Reconnect("acc", 1))
    assert await asyncio.wait_for(venue.released.get(), 5) == Reconnect("acc", 1)
    assert monitor.counters["reconnect_reconciliations"] == 1
    assert ownership.owned == {0, 1}  # refreshed for the pass

    broken["orders"] = True
    venue.reconnects.put_nowait(Reconnect("acc", 2))
    assert await asyncio.wait_for(venue.released.get(), 5) == Reconnect("acc", 2)
    assert venue.reconciled == [Reconnect("acc", 1), Reconnect("acc", 2)]
    assert monitor.counters["reconnect_reconciliations"] == 1  # the failed one did not count

    await service.stop()
    assert service.state is ComponentState.STOPPED
    venue.reconnects.put_nowait(Reconnect("acc", 3))
    await asyncio.sleep(0.05)
    assert len(venue.reconciled) == 2  # stopped: no longer followed
