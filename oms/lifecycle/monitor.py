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

A pass never scans the table: every write of an order is noted here (:meth:`note`, called by
the worker's order table), which keeps two deadline indexes of the live orders, one for the
cancel rules and one for the next re-check, and a pass pops only the orders that are due
(re-checks: at most ``max_rechecks_per_run``, the quietest first). The indexes are rebuilt
from the table when partitions are assigned.

The timer only reads the table. Cancels are published as ordinary cancel requests on
``order-requests`` (deterministic request ids, the reason in metadata), so intake records
them like any other command and the order-state agent remains the only writer of exchange
news: one writer, one audit trail.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from oms.lifecycle.policy import policy_of
from oms.orders.indexes import DeadlineIndex
from oms.orders.params import CANCEL_REASON_KEY, LifecyclePolicy, works_through_children
from oms.schemas import (
    LIVE_STATUSES,
    CommandType,
    OrderRecord,
    OrderRequest,
    OrderStatus,
    ReasonCode,
    now_ms,
)
from oms.settings import LifecycleSettings

log = structlog.get_logger(__name__)

# A cancel request the timer published is not published again before this (ms): intake
# dedupes by request id anyway, this only keeps duplicate events out of the stream.
_REQUEST_AGAIN_MS = 30_000


def lifecycle_request_id(reason: ReasonCode, order_id: str) -> str:
    """The deterministic request id of a cancel the OMS asks for itself."""
    return f"{reason.value}.{order_id}"


def _ms(seconds: float) -> int:
    # A deadline in whole ms that is due exactly when `elapsed >= seconds * 1000` is.
    return math.ceil(seconds * 1000)


@dataclass
class LifecycleMonitor:
    """Decides which owned orders need a re-check or a cancel, from deadline indexes the
    table's writes keep current (:meth:`note`)."""

    settings: LifecycleSettings
    order_of: Callable[[str], OrderRecord | None]
    owns: Callable[[str], bool]
    recheck: Callable[[OrderRecord], Awaitable[None]]
    is_busy: Callable[[str], bool]
    publish_request: Callable[[OrderRequest], Awaitable[None]]
    counters: dict[str, int] = field(default_factory=dict)
    # Per live order: when a cancel rule (auto-cancel, partial-fill grace) comes due.
    _cancel_due: DeadlineIndex[str] = field(default_factory=DeadlineIndex)
    # Per live order: when it has been quiet for monitoring_interval.
    _recheck_due: DeadlineIndex[str] = field(default_factory=DeadlineIndex)
    _partial_since: dict[str, int] = field(default_factory=dict)
    _last_recheck: dict[str, int] = field(default_factory=dict)
    _requested: dict[str, int] = field(default_factory=dict)
    # Orders whose cancel rule came due: not re-checked, their cancel is on its way.
    _cancelling: set[str] = field(default_factory=set)
    # Set by clear(): the memories above are pruned to the orders followed again.
    _rebuilt: bool = False

    # -- what the table tells ------------------------------------------------------------------

    def note(self, order_id: str, order: OrderRecord | None) -> None:
        """An order was written (None: it left the table): follow it while it is live."""
        if (
            order is None
            or order.status not in LIVE_STATUSES
            or works_through_children(order.metadata)
        ):
            self._forget(order_id)  # a parent is not at the exchange; its children are
            return
        if order.status is OrderStatus.PARTIALLY_FILLED:
            self._partial_since.setdefault(order_id, order.updated_at)
        self._schedule(order_id, order, policy_of(order.metadata, self.settings))

    def clear(self) -> None:
        """Forget every order (the worker rebuilds from the table after a rebalance). What
        was remembered of an order (first partial fill, last re-check, cancel asked) stays
        if it is followed again, like the order itself."""
        for index in (self._cancel_due, self._recheck_due):
            index.clear()
        self._rebuilt = True

    @property
    def followed(self) -> int:
        """Live orders followed."""
        return len(self._recheck_due)

    def _prune_memories(self) -> None:
        """After a rebuild: keep what is remembered of the orders followed again only."""
        followed = self._recheck_due
        for memo in (self._partial_since, self._last_recheck, self._requested):
            for order_id in [k for k in memo if k not in followed]:
                del memo[order_id]
        self._cancelling = {k for k in self._cancelling if k in followed}
        self._rebuilt = False

    def _forget(self, order_id: str) -> None:
        self._cancel_due.discard(order_id)
        self._recheck_due.discard(order_id)
        for memo in (self._partial_since, self._last_recheck, self._requested):
            memo.pop(order_id, None)
        self._cancelling.discard(order_id)

    def _schedule(self, order_id: str, order: OrderRecord, policy: LifecyclePolicy) -> None:
        cancel_at = self._cancel_at(order_id, order, policy)
        if cancel_at is None:
            self._cancel_due.discard(order_id)
        elif order_id not in self._cancelling or order_id not in self._cancel_due:
            # (A cancel on its way keeps its "ask again" time.)
            self._cancel_due.schedule(order_id, cancel_at)
        quiet_since = max(order.updated_at, self._last_recheck.get(order_id, 0))
        self._recheck_due.schedule(order_id, quiet_since + _ms(self.settings.monitoring_interval))

    def _cancel_at(self, order_id: str, order: OrderRecord, policy: LifecyclePolicy) -> int | None:
        """When the first cancel rule comes due, or None if none applies."""
        times = []
        if policy.auto_cancel_timeout > 0:
            since = order.submitted_at or order.created_at
            times.append(since + _ms(policy.auto_cancel_timeout))
        if (
            order.status is OrderStatus.PARTIALLY_FILLED
            and policy.partial_fill_handling == "cancel_remaining"
        ):
            first = self._partial_since.get(order_id, order.updated_at)
            times.append(first + _ms(policy.partial_fill_grace))
        return min(times, default=None)

    def _live(self, order_id: str) -> OrderRecord | None:
        """The order, if it is still live and ours (otherwise it is forgotten)."""
        order = self.order_of(order_id)
        if (
            order is None
            or order.status not in LIVE_STATUSES
            or works_through_children(order.metadata)
            or not self.owns(order_id)
        ):
            self._forget(order_id)
            return None
        return order

    # -- the timer -----------------------------------------------------------------------------

    async def run_once(self, now: int | None = None) -> dict[str, int]:
        """One pass over the orders that are due; returns what it did (also added to
        ``counters``)."""
        now = now if now is not None else now_ms()
        if self._rebuilt:
            self._prune_memories()
        done = {"rechecks": 0, "auto_cancels": 0, "partial_fill_cancels": 0}
        for order_id in self._cancel_due.pop_due(now):
            order = self._live(order_id)
            if order is not None:
                await self._apply_cancel_rules(order, now, done)
        await self._rechecks(now, done)
        for name, value in done.items():
            self.counters[name] = self.counters.get(name, 0) + value
        return done

    async def _apply_cancel_rules(self, order: OrderRecord, now: int, done: dict[str, int]) -> None:
        order_id = order.order_id
        policy = policy_of(order.metadata, self.settings)
        since = order.submitted_at or order.created_at
        reason: ReasonCode | None = None
        if policy.auto_cancel_timeout > 0 and now - since >= policy.auto_cancel_timeout * 1000:
            reason = ReasonCode.AUTO_CANCELLED
        elif (
            order.status is OrderStatus.PARTIALLY_FILLED
            and policy.partial_fill_handling == "cancel_remaining"
        ):
            first = self._partial_since.setdefault(order_id, order.updated_at)
            if now - first >= policy.partial_fill_grace * 1000:
                reason = ReasonCode.PARTIAL_FILL_CANCELLED
        if reason is None:  # not due after all (the order changed): follow it on
            self._schedule(order_id, order, policy)
            return
        self._cancelling.add(order_id)
        if await self._cancel(order, reason, now):
            key = "auto_cancels" if reason is ReasonCode.AUTO_CANCELLED else "partial_fill_cancels"
            done[key] += 1
        # Until the cancel lands (the order then leaves the live set), asked again this long
        # after it was last asked.
        asked = self._requested.get(order_id, now)
        self._cancel_due.schedule(order_id, asked + _REQUEST_AGAIN_MS)

    async def _rechecks(self, now: int, done: dict[str, int]) -> None:
        """Re-check the quietest due orders, at most ``max_rechecks_per_run``; an order busy
        with a command of its own waits for the next pass."""
        budget = self.settings.max_rechecks_per_run
        interval_ms = _ms(self.settings.monitoring_interval)
        busy: list[tuple[str, int]] = []
        while budget > 0:
            due = self._recheck_due.pop_due(now, 1)
            if not due:
                break
            order_id = due[0]
            order = self._live(order_id)
            if order is None:
                continue
            quiet_since = max(order.updated_at, self._last_recheck.get(order_id, 0))
            if order_id in self._cancelling or now - quiet_since < interval_ms:
                self._recheck_due.schedule(order_id, max(now, quiet_since) + interval_ms)
                continue
            if self.is_busy(order_id):
                busy.append((order_id, quiet_since + interval_ms))  # keeps its place
                continue
            budget -= 1
            self._last_recheck[order_id] = now
            self._recheck_due.schedule(order_id, now + interval_ms)
            await self.recheck(order)
            done["rechecks"] += 1
        for order_id, at in busy:
            self._recheck_due.schedule(order_id, at)

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
