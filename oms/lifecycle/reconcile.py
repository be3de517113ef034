"""Reconciliation of live orders with the exchange, after NautilusTrader's live execution
engine (startup reconciliation, in-flight checks, open-order checks with a retry count).

The table says what the OMS believes; only the exchange knows what is live. Three triggers
compare the two, for the orders of the partitions this worker owns that the exchange may hold
(``submitted``, ``open``, ``partially_filled``; the children of algorithms, never a TWAP
parent, which is not at the exchange):

* **a pass** over every such order, when partitions become ours (worker start, takeover after
  a rebalance, within one lifecycle tick of the table being recovered) and after every
  exchange reconnect (:meth:`OrderReconciler.reconcile_account`). One listing of the open
  orders per account and currency (:meth:`~oms.exchange.interface.Exchange.open_orders`)
  confirms every order still open; the others are looked up by label
  (:class:`~oms.streams.execution.LabelLookup`), ``lifecycle.reconcile_concurrency`` at a
  time, each waiting for the account's rate-limit credits;
* **follow-up checks** of orders the exchange did not know, every
  ``lifecycle.open_check_interval`` (driven by the lifecycle timer);
* **misses seen elsewhere**: a re-check by exchange id that the label lookup confirms, an
  amend or cancel that found no order with our label (the executor's ``on_missing``).

What the exchange has is published as an :class:`~oms.schemas.ExecutionReport` (source
``reconcile``) and applied by the order-state agent, the one writer of order state; when the
exchange has more filled than recorded, the order's trades are attached with their trade ids
(fills missed while away: the keeper dedupes by trade id, so exactly the missing ones count).

An acknowledged order (``open``, ``partially_filled``) the exchange does not know is counted
as a miss, at most once per interval. After ``lifecycle.open_check_missing_retries`` misses in
a row (and a last look by its exchange id, label checked: Deribit's label lookup only covers
recent orders), it is resolved: a report the order-state agent applies as ``cancelled`` with
reason ``lost_at_venue`` plus a ``system_error`` event, which the notifier sends as an
emergency. An order never acknowledged (``submitted``) is not counted: the unacknowledged
sweep (:meth:`oms.streams.worker.OrderWorker.sweep`) looks it up by label and sends it if the
exchange never had it.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from oms.exchange.errors import LOST_AT_VENUE, ExchangeError, OrderNotFound
from oms.exchange.interface import Exchange
from oms.lifecycle.lookup import LabelLookup
from oms.orders.params import works_through_children
from oms.schemas import (
    LIVE_STATUSES,
    ExchangeOrderState,
    ExecutionReport,
    OrderRecord,
    OrderStatus,
    ReportSource,
    now_ms,
)
from oms.settings import LifecycleSettings

log = structlog.get_logger(__name__)

# What the exchange may hold (looked up by every pass).
CHECKED = frozenset({OrderStatus.SUBMITTED, OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED})
# Acknowledged once: the exchange must know them, so not finding them counts as a miss.
ACKNOWLEDGED = LIVE_STATUSES


@dataclass
class _Miss:
    count: int
    last: float  # monotonic s of the miss
    source: str


def lost_report(order: OrderRecord, misses: int) -> ExecutionReport:
    """The report that resolves an order the exchange does not know (see
    :func:`oms.orders.state_machine.apply_report`). It carries the exchange id and filled
    amount the decision saw: if either changed meanwhile, the agent ignores it."""
    by_id = f" (last by exchange id {order.exchange_order_id})" if order.exchange_order_id else ""
    return ExecutionReport(
        report_id=f"reconcile:lost:{order.order_id}:{order.version}",
        order_id=order.order_id,
        account_id=order.account_id,
        source=ReportSource.RECONCILE,
        instrument_name=order.instrument_name,
        exchange_order_id=order.exchange_order_id,
        order_state=ExchangeOrderState.CANCELLED,
        direction=order.direction,
        amount=order.amount,
        price=order.price,
        filled_amount=order.filled_amount,
        exchange_timestamp=now_ms(),
        error_code=LOST_AT_VENUE,
        error_message=f"not found at the exchange in {misses} checks{by_id}",
    )


class OrderReconciler:
    """Checks the orders of owned partitions against the exchange and resolves lost ones.

    Built before the executor, which tells it of misses (:meth:`missed`); ``is_running(order
    id)``: a command of the order is running (its own lookup will tell)."""

    def __init__(
        self,
        settings: LifecycleSettings,
        *,
        exchange: Exchange,
        lookup: LabelLookup,
        publish: Callable[[ExecutionReport], Awaitable[None]],
        is_running: Callable[[str], bool],
        orders: Callable[[], Iterable[tuple[str, OrderRecord | None]]],
        order_of: Callable[[str], OrderRecord | None],
        owns: Callable[[str], bool],
        currency_of: Callable[[str], str],
    ) -> None:
        self.settings = settings
        self._exchange = exchange
        self._lookup = lookup
        self._publish = publish
        self._is_running = is_running
        self._orders = orders
        self._order_of = order_of
        self._owns = owns
        self._currency_of = currency_of
        self.counters: dict[str, int] = defaultdict(int)
        self.last_pass: dict[str, Any] = {}
        self._misses: dict[str, _Miss] = {}
        # Orders resolved as lost (monotonic s): a check that raced the resolution is no
        # new miss while the table catches up.
        self._resolved: dict[str, float] = {}
        self._checking: set[str] = set()
        self._gate = asyncio.Semaphore(settings.reconcile_concurrency)
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- what to check ---------------------------------------------------------------------

    def candidates(
        self, *, account_id: str | None = None, owns: Callable[[str], bool] | None = None
    ) -> list[OrderRecord]:
        """Orders the exchange may hold, of the owned partitions (or those ``owns`` says)."""
        owned = owns or self._owns
        return [
            order
            for order_id, order in list(self._orders())
            if order is not None
            and order.status in CHECKED
            and (account_id is None or order.account_id == account_id)
            and not works_through_children(order.metadata)  # a parent is not at the exchange
            and owned(order_id)
        ]

    # -- passes ----------------------------------------------------------------------------

    def start_pass(self, orders: list[OrderRecord], trigger: str) -> None:
        """Run a pass in the background (the lifecycle timer must not wait for it)."""
        self._background(self.run_pass(orders, trigger), f"reconcile:{trigger}")

    async def reconcile_account(self, account_id: str) -> dict[str, int]:
        """A pass over one account's orders (after its exchange session reconnected)."""
        self.counters["reconnect_passes"] += 1
        return await self.run_pass(self.candidates(account_id=account_id), "reconnect")

    async def run_pass(self, orders: list[OrderRecord], trigger: str) -> dict[str, int]:
        """Check every order once; returns how many were found, missing or not checked."""
        started = time.monotonic()
        self.counters["passes"] += 1
        self.counters["pass_orders"] += len(orders)
        listed = await self._listed(orders)
        outcomes = await asyncio.gather(
            *(self._check(order, trigger, listed.get(order.order_id)) for order in orders)
        )
        done = {"orders": len(orders), "found": 0, "missing": 0, "failed": 0, "skipped": 0}
        for outcome in outcomes:
            done[outcome] += 1
        seconds = round(time.monotonic() - started, 3)
        self.last_pass = {"trigger": trigger, **done, "seconds": seconds, "at_ms": now_ms()}
        log.info("reconcile.pass", trigger=trigger, seconds=seconds, **done)
        return done

    async def _listed(self, orders: list[OrderRecord]) -> dict[str, ExecutionReport]:
        """The open orders of each (account, currency) with two or more orders to check, by
        label: one request instead of one per order for everything still open."""
        groups: dict[tuple[str, str], int] = defaultdict(int)
        for order in orders:
            groups[(order.account_id, self._currency_of(order.instrument_name))] += 1
        listed: dict[str, ExecutionReport] = {}
        for (account_id, currency), count in groups.items():
            if count < 2:
                continue
            try:
                async with self._gate:
                    reports = await self._exchange.open_orders(account_id, currency)
            except ExchangeError as exc:  # the label lookups will do
                self.counters["listing_failures"] += 1
                log.info("reconcile.listing_failed", account_id=account_id, error=str(exc))
                continue
            self.counters["listings"] += 1
            for report in reports:
                seen = listed.get(report.order_id)
                if seen is None or report.exchange_timestamp > seen.exchange_timestamp:
                    listed[report.order_id] = report
        return listed

    async def _check(
        self, order: OrderRecord, trigger: str, listed: ExecutionReport | None = None
    ) -> str:
        """One order against the exchange: ``found``, ``missing``, ``failed`` (no answer)
        or ``skipped`` (being checked already)."""
        if order.order_id in self._checking:
            return "skipped"
        self._checking.add(order.order_id)
        try:
            async with self._gate:
                try:
                    if listed is not None:
                        report: ExecutionReport | None = await self._lookup.with_missed_fills(
                            order, listed
                        )
                    else:
                        self.counters["label_lookups"] += 1
                        report = await self._lookup.find(order)
                except (ExchangeError, TimeoutError) as exc:
                    self.counters["lookup_failures"] += 1
                    log.info("reconcile.lookup_failed", order_id=order.order_id, error=str(exc))
                    return "failed"
            if report is None:
                await self.missed(order, trigger)
                return "missing"
            self._found(order)
            await self._publish(report)
            return "found"
        finally:
            self._checking.discard(order.order_id)

    def _found(self, order: OrderRecord) -> None:
        self.counters["found"] += 1
        if self._misses.pop(order.order_id, None) is not None:
            self.counters["found_after_miss"] += 1
            log.info("reconcile.order_found_again", order_id=order.order_id)

    # -- misses ----------------------------------------------------------------------------

    async def missed(self, order: OrderRecord, source: str) -> None:
        """The exchange did not know ``order`` when ``source`` looked (by label, or by a
        command that acts by label)."""
        if order.order_id in self._resolved:
            return
        if order.status not in ACKNOWLEDGED:
            # Never acknowledged: the unacknowledged sweep sends it if the exchange never
            # had it; nothing to resolve here.
            self.counters["unacknowledged_not_found"] += 1
            return
        now = time.monotonic()
        interval = self.settings.open_check_interval
        miss = self._misses.get(order.order_id)
        if miss is not None and now - miss.last < interval:
            return  # the same check, seen twice (a command and a lookup)
        count = (miss.count if miss is not None else 0) + 1
        self._misses[order.order_id] = _Miss(count, now, source)
        self.counters["misses"] += 1
        retries = self.settings.open_check_missing_retries
        log.warning(
            "reconcile.order_missing",
            order_id=order.order_id,
            account_id=order.account_id,
            exchange_order_id=order.exchange_order_id,
            status=order.status.value,
            miss=count,
            of=retries,
            source=source,
        )
        if count >= retries:
            await self._resolve(order, count)

    async def _resolve(self, order: OrderRecord, misses: int) -> None:
        """Every check missed it: a last look by the exchange's id, then lost_at_venue."""
        if order.exchange_order_id:
            try:
                report = await self._exchange.refresh(order)  # label checked
                report = await self._lookup.with_missed_fills(order, report)
            except OrderNotFound:
                pass
            except ExchangeError as exc:  # no answer: the next check decides
                self.counters["lookup_failures"] += 1
                log.info("reconcile.lookup_failed", order_id=order.order_id, error=str(exc))
                return
            else:
                self.counters["found_by_exchange_id"] += 1
                self._found(order)
                await self._publish(report)
                return
        self._misses.pop(order.order_id, None)
        self._resolved[order.order_id] = time.monotonic()
        self.counters["lost_at_venue"] += 1
        log.error(
            "reconcile.lost_at_venue",
            order_id=order.order_id,
            account_id=order.account_id,
            exchange_order_id=order.exchange_order_id,
            status=order.status.value,
            filled_amount=order.filled_amount,
            misses=misses,
        )
        await self._publish(lost_report(order, misses))

    async def run_once(self) -> int:
        """Start the follow-up checks that are due (lifecycle timer); returns how many."""
        now = time.monotonic()
        interval = self.settings.open_check_interval
        started = 0
        for order_id, at in list(self._resolved.items()):
            if now - at > 60.0:
                del self._resolved[order_id]
        for order_id, miss in list(self._misses.items()):
            if now - miss.last < interval or order_id in self._checking:
                continue
            order = self._order_of(order_id)
            if order is None or order.status not in ACKNOWLEDGED or not self._owns(order_id):
                del self._misses[order_id]  # ended, moved away, or not ours any more
                continue
            if self._is_running(order_id):
                continue  # a command's own lookup will tell
            self.counters["follow_ups"] += 1
            started += 1
            self._background(self._check(order, "follow_up"), f"reconcile:{order_id}")
        return started

    def _background(self, work: Any, name: str) -> None:
        task: asyncio.Task[Any] = asyncio.create_task(self._guarded(work), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _guarded(work: Any) -> None:
        try:
            await work
        except Exception:  # a failed check must not kill the timer's tasks
            log.exception("reconcile.check_failed")

    def pending(self) -> list[asyncio.Task[Any]]:
        """The checks running in the background now (to wait for them)."""
        return list(self._tasks)

    def snapshot(self) -> dict[str, Any]:
        return {
            **self.counters,
            "pending_misses": len(self._misses),
            "running": len(self._tasks),
            "last_pass": dict(self.last_pass),
        }
