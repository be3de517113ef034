"""Ended orders leave the worker's table; their markers are forgotten later.

The rules are in :mod:`oms.orders.retention`. Two halves, as everywhere in the worker:

* the **timer** (:class:`PurgeTimer`) reads only its schedule (never the table): the ended
  orders and markers that are due, grouped by partition, go out as one ``purge`` trigger per
  partition on ``order-triggers``;
* the partition's **writer**, the ``release`` agent (:func:`apply_purge`), checks each again
  against the table and deletes it: a tombstone on the changelog, so a restarted worker does
  not restore it. A deleted order leaves its :class:`~oms.orders.retention.Finished` marker
  (and its request nonces go: a signed request older than the freshness window is refused
  anyway). Deleting inside the agent keeps one writer per partition: no write of another
  agent can race it, and the changelog records land on the partition being processed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from oms.auth.nonces import NonceStore
from oms.orders.retention import (
    Finished,
    FinishedOrders,
    PurgeBatch,
    PurgeSchedule,
    RetentionPolicy,
)
from oms.schemas import now_ms
from oms.schemas.conditions import OrderTrigger, TriggerKind
from oms.streams.context import AgentContext

log = structlog.get_logger(__name__)

# Ids per trigger: one trigger is applied in one go by its agent, so keep each short.
BATCH_IDS = 200
# Ids taken from the schedule per round (of each kind).
ROUND_IDS = 5_000


@dataclass(frozen=True)
class Retention:
    """What the writer of a partition needs to purge, and intake to recognise ended orders:
    the policy, the markers, how keys map to partitions, the request nonces."""

    policy: RetentionPolicy
    finished: FinishedOrders
    partition_of: Callable[[str], int]
    nonces: NonceStore | None = None


def apply_purge(
    ctx: AgentContext, retention: Retention, trigger: OrderTrigger, partition: int | None
) -> None:
    """Apply one ``purge`` trigger read from ``partition`` (the release agent)."""
    batch = PurgeBatch.from_details(trigger.details)
    if batch is None:
        ctx.count("purge_unreadable")
        log.warning("purge.unreadable", order_id=trigger.order_id)
        return
    now = now_ms()
    for order_id in batch.orders:
        if retention.partition_of(order_id) != partition:
            ctx.count("purge_misrouted")  # its changelog record would land elsewhere
            continue
        order = ctx.orders.get(order_id)
        if order is None or not retention.policy.purge_due(order, now):
            ctx.count("purge_not_due")  # gone already, or changed since it was scheduled
            continue
        del ctx.orders[order_id]
        retention.finished.remember(order_id, Finished.of(order))
        if retention.nonces is not None:
            retention.nonces.forget(order_id)
        ctx.count("purged")
    for order_id in batch.markers:
        if retention.partition_of(order_id) != partition:
            ctx.count("purge_misrouted")
            continue
        marker = retention.finished.get(order_id)
        if marker is None or not retention.policy.forget_due(marker, now):
            ctx.count("purge_not_due")
            continue
        retention.finished.forget(order_id)
        ctx.count("markers_forgotten")


class PurgeTimer:
    """Hands the due purges of the owned partitions to their writers, one trigger per
    partition and round."""

    def __init__(
        self,
        schedule: PurgeSchedule,
        retention: Retention,
        *,
        owned_partitions: Callable[[], set[int]],
        publish_trigger: Callable[[OrderTrigger], Awaitable[None]],
    ) -> None:
        self._schedule = schedule
        self._retention = retention
        self._owned = owned_partitions
        self._publish = publish_trigger
        self.counters: dict[str, int] = {}

    async def run_once(self, now: int | None = None) -> int:
        """Publish the purges that are due; returns how many ids went out."""
        owned = frozenset(self._owned())
        if not owned:
            return 0
        now = now if now is not None else now_ms()
        partition_of = self._retention.partition_of
        batch = self._schedule.due(
            now,
            ROUND_IDS,
            owns=lambda order_id: partition_of(order_id) in owned,
            markers=self._retention.finished,
        )
        groups: dict[int, PurgeBatch] = {}
        for order_id in batch.orders:
            groups.setdefault(partition_of(order_id), PurgeBatch()).orders.append(order_id)
        for order_id in batch.markers:
            groups.setdefault(partition_of(order_id), PurgeBatch()).markers.append(order_id)
        sent = 0
        for group in groups.values():
            for part in _chunks(group):
                key = (part.orders or part.markers)[0]
                await self._publish(
                    OrderTrigger(
                        order_id=key,
                        kind=TriggerKind.PURGE,
                        reason=f"retention: {len(part.orders)} ended orders, "
                        f"{len(part.markers)} markers",
                        details=part.model_dump(),
                    )
                )
                sent += len(part.orders) + len(part.markers)
        if sent:
            self.counters["rounds"] = self.counters.get("rounds", 0) + 1
            self.counters["orders_asked"] = self.counters.get("orders_asked", 0) + len(batch.orders)
            self.counters["markers_asked"] = self.counters.get("markers_asked", 0) + len(
                batch.markers
            )
        return sent


def _chunks(batch: PurgeBatch) -> list[PurgeBatch]:
    """At most :data:`BATCH_IDS` ids per trigger."""
    ids = [("orders", i) for i in batch.orders] + [("markers", i) for i in batch.markers]
    parts = []
    for start in range(0, len(ids), BATCH_IDS):
        part = PurgeBatch()
        for kind, order_id in ids[start : start + BATCH_IDS]:
            (part.orders if kind == "orders" else part.markers).append(order_id)
        parts.append(part)
    return parts
