"""The lifecycle timer: watches every live order of the partitions this worker owns.

Three rules, checked every ``lifecycle.check_interval``:

* **monitoring**: an acknowledged order without news for ``monitoring_interval`` is
  re-checked at the exchange by its id (a bounded number per run, so polling never
  eats the rate limit), so a missed ``user.orders`` message never leaves it stale; the answer
  must carry our label, and an order not found under its id is looked up by label, a miss
  counting toward ``lost_at_venue`` (:mod:`oms.lifecycle.reconcile`);
* **auto-cancel**: an order resting longer than its ``auto_cancel_timeout`` is cancelled;
* **partial fills**: under ``cancel_remaining`` the rest of a partially filled order is
  cancelled once ``partial_fill_grace`` has passed since its first partial fill.

The timer only reads the table. Cancels are published as ordinary cancel requests on
``order-requests`` (deterministic request ids, the reason in metadata), so intake records
them like any other command and the order-state agent remains the only writer of exchange
news: one writer, one audit trail.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog

from oms.algos import twap
from oms.lifecycle.policy import policy_of
from oms.orders.params import CANCEL_REASON_KEY
from oms.schemas import CommandType, OrderRecord, OrderRequest, OrderStatus, ReasonCode, now_ms
from oms.settings import LifecycleSettings

log = structlog.get_logger(__name__)

_LIVE = frozenset({OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED})
# A cancel request the timer published is not published again before this (ms): intake
# dedupes by request id anyway, this only keeps duplicate events out of the stream.
_REQUEST_AGAIN_MS = 30_000


def lifecycle_request_id(reason: ReasonCode, order_id: str) -> str:
    """The deterministic request id of a cancel the OMS asks for itself."""
    return f"{reason.value}.{order_id}"


@dataclass
class LifecycleMonitor:
    """Decides, from the table, which owned orders need a re-check or a cancel."""

    settings: LifecycleSettings
    orders: Callable[[], Iterable[tuple[str, OrderRecord | None]]]
    owns: Callable[[str], bool]
    recheck: Callable[[OrderRecord], Awaitable[None]]
    is_busy: Callable[[str], bool]
    publish_request: Callable[[OrderRequest], Awaitable[None]]
    counters: dict[str, int] = field(default_factory=dict)
    _partial_since: dict[str, int] = field(default_factory=dict)
    _last_recheck: dict[str, int] = field(default_factory=dict)
    _requested: dict[str, int] = field(default_factory=dict)

    async def run_once(self, now: int | None = None) -> dict[str, int]:
        """One pass over the table; returns what it did (also added to ``counters``)."""
        now = now if now is not None else now_ms()
        done = {"rechecks": 0, "auto_cancels": 0, "partial_fill_cancels": 0}
        budget = self.settings.max_rechecks_per_run
        interval_ms = int(self.settings.monitoring_interval * 1000)
        live: set[str] = set()
        for order_id, order in list(self.orders()):
            if order is None or order.status not in _LIVE or not self.owns(order_id):
                continue
            if twap.is_twap(order.metadata):
                continue  # a parent is not at the exchange; its children are watched
            live.add(order_id)
            policy = policy_of(order.metadata, self.settings)
            since = order.submitted_at or order.created_at
            if policy.auto_cancel_timeout > 0 and now - since >= policy.auto_cancel_timeout * 1000:
                if await self._cancel(order, ReasonCode.AUTO_CANCELLED, now):
                    done["auto_cancels"] += 1
                continue
            if (
                order.status is OrderStatus.PARTIALLY_FILLED
                and policy.partial_fill_handling == "cancel_remaining"
            ):
                first = self._partial_since.setdefault(order_id, order.updated_at)
                if now - first >= policy.partial_fill_grace * 1000:
                    if await self._cancel(order, ReasonCode.PARTIAL_FILL_CANCELLED, now):
                        done["partial_fill_cancels"] += 1
                    continue
            quiet = now - max(order.updated_at, self._last_recheck.get(order_id, 0))
            if budget > 0 and quiet >= interval_ms and not self.is_busy(order_id):
                budget -= 1
                self._last_recheck[order_id] = now
                await self.recheck(order)
                done["rechecks"] += 1
        for memo in (self._partial_since, self._last_recheck, self._requested):
            for order_id in [k for k in memo if k not in live]:
                del memo[order_id]
        for name, value in done.items():
            self.counters[name] = self.counters.get(name, 0) + value
        return done

    async def _cancel(self, order: OrderRecord, reason: ReasonCode, now: int) -> bool:
        request_id = lifecycle_request_id(reason, order.order_id)
        if request_id in order.seen_request_ids:
            return False  # intake has it; the cancel is on its way
        if now - self._requested.get(order.order_id, 0) < _REQUEST_AGAIN_MS:
            return False
        self._requested[order.order_id] = now
        log.info("lifecycle.cancel", order_id=order.order_id, reason=reason.value)
        await self.publish_request(
            OrderRequest(
                command=CommandType.CANCEL,
                request_id=request_id,
                account_id=order.account_id,
                order_id=order.order_id,
                metadata={CANCEL_REASON_KEY: reason.value},
            )
        )
        return True

    def snapshot(self) -> dict[str, Any]:
        return dict(self.counters)
