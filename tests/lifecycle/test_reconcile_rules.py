"""Reconciliation rules without Kafka: the real executor and reconciler against a tiny
in-memory exchange speaking Deribit's API (through the real Deribit venue), so label checks,
miss counting, lost_at_venue and fill recovery are exercised down to the request."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from typing import Any

from oms.exchange.deribit.venue import DeribitVenue
from oms.exchange.errors import LOST_AT_VENUE, OrderNotFound
from oms.lifecycle.lookup import LabelLookup
from oms.lifecycle.reconcile import OrderReconciler
from oms.notify.rules import notice_from_event
from oms.orders.state_machine import Outcome, apply_report
from oms.schemas import (
    CommandType,
    ExecutionReport,
    OrderEventType,
    OrderRecord,
    OrderRequest,
    OrderStatus,
    ReasonCode,
    ReportSource,
)
from oms.schemas.notify_settings import NotificationType
from oms.secrets import SecretStore
from oms.settings import LifecycleSettings, Settings
from oms.streams.execution import InflightCommands, OrderExecutor
from tests.orders.factories import order_record

INTERVAL = 0.05


class TinyExchange(DeribitVenue):
    """Deribit's answers for a handful of orders and trades, in memory."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, SecretStore())
        self.orders: dict[str, dict[str, Any]] = {}  # exchange order id -> order
        self.trades: dict[str, list[dict[str, Any]]] = {}
        self.calls: Counter[str] = Counter()
        self._ids = itertools.count(1)

    def add(self, label: str, *, filled: float = 0.0, state: str = "open") -> dict[str, Any]:
        order_id = f"BTC-{next(self._ids)}"
        self.orders[order_id] = {
            "order_id": order_id, "label": label, "instrument_name": "BTC-PERPETUAL",
            "order_state": state, "direction": "buy", "amount": 100.0, "price": 50_000.0,
            "filled_amount": filled, "average_price": 50_000.0 if filled else None,
            "last_update_timestamp": 1_000 + len(self.orders),
        }  # fmt: skip
        return self.orders[order_id]

    def trade(self, order: dict[str, Any], trade_id: str, amount: float) -> None:
        trade = {
            "trade_id": trade_id, "order_id": order["order_id"], "label": order["label"],
            "amount": amount, "price": 50_000.0, "direction": "buy", "fee": 0.0,
            "instrument_name": "BTC-PERPETUAL", "timestamp": 1_000,
        }  # fmt: skip
        self.trades.setdefault(order["order_id"], []).append(trade)

    async def settled(self, account_id: str) -> None:
        return None

    async def _call(
        self, account_id: str, method: str, params: dict[str, Any], *, prepaid: bool = False
    ) -> Any:
        self.calls[method] += 1
        if method == "private/get_order_state_by_label":
            return [o for o in self.orders.values() if o["label"] == params["label"]]
        if method == "private/get_open_orders_by_currency":
            return [o for o in self.orders.values() if o["order_state"] == "open"]
        if method == "private/get_order_state":
            return self._by_id(params["order_id"])
        if method == "private/get_user_trades_by_order":
            return list(self.trades.get(params["order_id"], ()))
        if method == "private/edit":  # what the executor must never send any more
            order = self._by_id(params["order_id"])
            order["price"] = params.get("price", order["price"])
            return {"order": order, "trades": []}
        if method == "private/edit_by_label":
            live = [
                o
                for o in self.orders.values()
                if o["label"] == params["label"] and o["order_state"] == "open"
            ]
            if len(live) != 1:
                raise OrderNotFound(10004, "no open order with that label", method=method)
            live[0]["price"] = params.get("price", live[0]["price"])
            live[0]["amount"] = params["amount"]
            return {"order": live[0], "trades": []}
        raise AssertionError(f"unexpected {method}")

    def _by_id(self, order_id: str) -> dict[str, Any]:
        found = self.orders.get(order_id)
        if found is None:
            raise OrderNotFound(10004, "order_not_found", method="private/get_order_state")
        return found


class Rig:
    """Executor, reconciler and table of one test; reports are applied as the agent would."""

    def __init__(self, retries: int = 3) -> None:
        base = Settings()
        lifecycle = LifecycleSettings(
            open_check_missing_retries=retries, open_check_interval=INTERVAL, retry_delay=0.0
        )
        self.settings = base.model_copy(update={"lifecycle": lifecycle})
        self.exchange = TinyExchange(self.settings)
        self.table: dict[str, OrderRecord] = {}
        self.published: list[ExecutionReport] = []
        self.events: list[Any] = []
        self.commands = InflightCommands(self.settings.worker)
        lookup = LabelLookup(self.exchange, lifecycle)
        self.reconciler = OrderReconciler(
            lifecycle,
            exchange=self.exchange,
            lookup=lookup,
            publish=self._publish,
            is_running=self.commands.is_running,
            orders=lambda: self.table.items(),
            order_of=self.table.get,
            owns=lambda order_id: True,
            currency_of=lambda name: "BTC",
        )
        self.executor = OrderExecutor(
            self.exchange,
            lookup,
            self.commands,
            self._publish,
            lifecycle,
            on_missing=self.reconciler.missed,
        )

    async def _publish(self, report: ExecutionReport) -> None:
        self.published.append(report)
        order = self.table.get(report.order_id)
        if order is None:
            return
        result = apply_report(order, report)
        if result.outcome is Outcome.APPLIED:
            self.table[order.order_id] = result.order
            self.events.extend(result.events)

    def add(self, order_id: str, status: OrderStatus = OrderStatus.OPEN, **kw: Any) -> None:
        self.table[order_id] = order_record(
            status, order_id=order_id, request_id=f"r-{order_id}", **kw
        )

    async def settle(self) -> None:
        """Wait for the background checks and commands."""
        for _ in range(200):
            tasks = [*self.reconciler.pending(), *self.commands.pending()]
            if not tasks:
                return
            await asyncio.gather(*tasks, return_exceptions=True)
        raise AssertionError("checks did not settle")

    async def follow_up(self) -> None:
        await asyncio.sleep(INTERVAL * 1.2)
        await self.reconciler.run_once()
        await self.settle()


async def test_an_order_the_exchange_never_shows_is_lost_after_the_retries() -> None:
    rig = Rig(retries=3)
    rig.add("o-lost", exchange_order_id="BTC-99")
    rig.add("o-kept")
    kept = rig.exchange.add("o-kept")
    rig.table["o-kept"] = rig.table["o-kept"].model_copy(
        update={"exchange_order_id": kept["order_id"]}
    )

    done = await rig.reconciler.run_pass(rig.reconciler.candidates(), "start")
    assert done == {"orders": 2, "found": 1, "missing": 1, "failed": 0, "skipped": 0}
    # Missed again at once (a command looking too): the same check, not a second miss.
    await rig.reconciler.missed(rig.table["o-lost"], "amend")
    assert rig.reconciler.counters["misses"] == 1
    await rig.reconciler.run_once()  # nothing due before the interval
    assert rig.reconciler.counters["follow_ups"] == 0

    await rig.follow_up()
    assert rig.table["o-lost"].status is OrderStatus.OPEN  # two misses of three
    await rig.follow_up()

    lost = rig.table["o-lost"]
    assert lost.status is OrderStatus.CANCELLED
    assert lost.reason_code is ReasonCode.LOST_AT_VENUE
    assert rig.table["o-kept"].status is OrderStatus.OPEN
    [report] = [r for r in rig.published if r.error_code == LOST_AT_VENUE]
    assert report.order_id == "o-lost" and report.source is ReportSource.RECONCILE
    types = [e.event_type for e in rig.events if e.order_id == "o-lost"]
    assert types == [OrderEventType.CANCELLED, OrderEventType.SYSTEM_ERROR]
    alert = rig.events[-1]
    notice = notice_from_event(alert)
    assert notice is not None and notice.type is NotificationType.SYSTEM_ERROR
    assert notice.type.is_emergency and notice.alert_id == "lost_at_venue:o-lost"
    # The last look went by the exchange id as well (Deribit's label lookup is recent only).
    assert rig.exchange.calls["private/get_order_state"] == 1
    snapshot = rig.reconciler.snapshot()
    assert snapshot["lost_at_venue"] == 1 and snapshot["misses"] == 3
    assert snapshot["pending_misses"] == 0


async def test_an_order_found_again_is_not_lost_and_a_lost_report_after_news_is_ignored() -> None:
    rig = Rig(retries=2)
    rig.add("o-1", exchange_order_id="BTC-old")
    await rig.reconciler.run_pass(rig.reconciler.candidates(), "start")
    # Placed again at the exchange (new id) before the next check: found, misses forgotten,
    # and the new exchange id is adopted without an event.
    again = rig.exchange.add("o-1")
    await rig.follow_up()
    order = rig.table["o-1"]
    assert order.status is OrderStatus.OPEN and order.exchange_order_id == again["order_id"]
    assert rig.reconciler.counters["found_after_miss"] == 1
    assert rig.reconciler.snapshot()["pending_misses"] == 0
    assert rig.events == []

    # A lost decision that news overtook (another id, more filled) changes nothing.
    from oms.lifecycle.reconcile import lost_report

    stale = lost_report(order.model_copy(update={"exchange_order_id": "BTC-old"}), 2)
    assert apply_report(order, stale).outcome is Outcome.STALE
    filled_since = order.model_copy(
        update={"status": OrderStatus.PARTIALLY_FILLED, "filled_amount": 10.0}
    )
    assert apply_report(filled_since, lost_report(order, 2)).outcome is Outcome.STALE


async def test_an_unacknowledged_order_is_left_to_the_sweep() -> None:
    rig = Rig(retries=1)
    rig.add("o-sent", OrderStatus.SUBMITTED)
    done = await rig.reconciler.run_pass(rig.reconciler.candidates(), "start")
    assert done["missing"] == 1
    assert rig.table["o-sent"].status is OrderStatus.SUBMITTED
    assert rig.reconciler.counters["unacknowledged_not_found"] == 1
    assert rig.reconciler.counters.get("misses", 0) == 0


async def test_open_orders_are_confirmed_by_one_listing() -> None:
    rig = Rig()
    for n in range(5):
        ours = rig.exchange.add(f"o-{n}")
        rig.add(f"o-{n}", exchange_order_id=ours["order_id"])
    done = await rig.reconciler.run_pass(rig.reconciler.candidates(), "start")
    assert done["found"] == 5
    assert rig.exchange.calls["private/get_open_orders_by_currency"] == 1
    assert rig.exchange.calls["private/get_order_state_by_label"] == 0


async def test_fills_missed_are_recovered_with_their_trade_ids() -> None:
    rig = Rig()
    at_exchange = rig.exchange.add("o-f", filled=30.0)
    for trade_id, amount in (("BTC-1", 10.0), ("BTC-2", 15.0), ("BTC-3", 5.0)):
        rig.exchange.trade(at_exchange, trade_id, amount)
    # The OMS saw the first trade only.
    rig.add(
        "o-f",
        OrderStatus.PARTIALLY_FILLED,
        exchange_order_id=at_exchange["order_id"],
        filled_amount=10.0,
        trade_ids=["BTC-1"],
    )
    await rig.reconciler.run_pass(rig.reconciler.candidates(), "start")
    [report] = rig.published
    assert [f.trade_id for f in report.fills] == ["BTC-1", "BTC-2", "BTC-3"]
    order = rig.table["o-f"]
    assert order.filled_amount == 30.0 and order.trade_ids == ["BTC-1", "BTC-2", "BTC-3"]
    assert rig.executor.stats["fills_recovered"] == 2


async def test_a_stale_exchange_id_never_touches_or_reports_another_order() -> None:
    rig = Rig(retries=3)
    # Ids restarted at the exchange: ours (BTC-1) now names someone else's order.
    other = rig.exchange.add("o-other")
    rig.add("o-mine", exchange_order_id=other["order_id"])
    mine = rig.table["o-mine"]

    await rig.executor.recheck(mine)
    await rig.settle()
    assert rig.executor.stats["recheck_not_found"] == 1
    assert rig.reconciler.counters["misses"] == 1

    amend = OrderRequest(
        command=CommandType.AMEND,
        request_id="amend-1",
        account_id=mine.account_id,
        order_id="o-mine",
        price=49_000.0,
    )
    await rig.executor.amend(rig.table["o-mine"], amend)
    await rig.settle()
    assert rig.exchange.calls["private/edit"] == 0
    assert rig.exchange.calls["private/edit_by_label"] == 1
    assert other["price"] == 50_000.0  # untouched
    assert all(r.order_id == "o-mine" for r in rig.published)
    [refused] = rig.published
    assert refused.command is CommandType.AMEND and refused.error_code == 10004
    assert not [e for e in rig.events if e.event_type is OrderEventType.AMENDED]
