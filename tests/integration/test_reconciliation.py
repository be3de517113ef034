"""Reconciliation with the exchange, for real: the paper exchange (in memory), gateway, one
worker, the position keeper and the notifier as processes on the test broker, otherwise
default settings.

In file order (one stack): orders the exchange lost while the worker was down end
``cancelled`` / ``lost_at_venue`` with an emergency notification, while the one it still has
stays open, and an amend carrying an exchange id that now names another OMS order touches
nothing; fills made while the worker and gateway were down are recovered with their trade
ids and positions follow; a restarted keeper reconciles positions within 10 s.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from oms.client import OrderClient
from oms.exchange.deribit.client import DeribitClient
from oms.kafka.admin import ensure_topics
from oms.schemas import NotificationRecord, OrderEvent, OrderEventType, ReasonCode, Topic
from oms.secrets import SecretStore
from oms.settings import Settings
from oms_dev.devstack.testing import consume_json
from oms_dev.harness import (
    OmsServices,
    isolated_settings,
    paper_admin,
    paper_ready,
    wait_http_ok,
    worker_ready,
    write_account_secrets,
)

pytestmark = pytest.mark.kafka

ACCOUNT = "rc-a"
INSTRUMENT = "BTC-PERPETUAL"
RESTING = {"instrument_name": INSTRUMENT, "amount": 10, "direction": "buy", "price": 1_000.0}
# Placed at the exchange directly (our label where it is ours).
EXCHANGE_ORDER = {"instrument_name": INSTRUMENT, "amount": 10, "type": "limit", "price": 1_000.0}
# With the default settings: the start pass within 10 s of the worker's start, then
# (open_check_missing_retries - 1) x open_check_interval, and room for a loaded machine.
LOST_WITHIN_S = 10 + 2 * 5 + 10


@dataclass
class Stack:
    settings: Settings
    services: OmsServices
    client: OrderClient

    async def admin(self, method: str, **params: Any) -> Any:
        return await paper_admin(self.settings, method, **params)

    async def at_exchange(self, label: str) -> list[dict[str, Any]]:
        return list(await self.admin("admin/get_orders_by_label", label=label))

    async def method_count(self, method: str) -> int:
        stats = await self.admin("admin/get_stats", include_labels=False)
        return int(stats.get("methods", {}).get(method, 0))

    def exchange_client(self) -> DeribitClient:
        creds = SecretStore(self.settings.resolved_secrets_file).credentials(ACCOUNT)
        return DeribitClient(self.settings.exchange.url, creds, settings=self.settings.exchange)

    async def get(self, port: int, path: str) -> Any:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
                return await resp.json()

    async def worker(self, path: str = "/metrics/summary") -> Any:
        return await self.get(self.settings.worker.web_port, path)

    async def keeper(self, path: str) -> Any:
        return await self.get(self.settings.positions.web_port, path)

    async def open_order(self, **overrides: Any) -> OrderEvent:
        order_id = await self.client.submit_advanced_order(**{**RESTING, **overrides})
        event = await self.client.wait_for_event(order_id)
        assert event.event_type is OrderEventType.OPEN, event
        return event

    def stop_worker(self, *also: str) -> None:
        for name in ("worker-0", *also):
            self.services[name].stop()

    async def start_worker(self, *also: str) -> None:
        for name in ("worker-0", *also):
            self.services[name].start()
        await worker_ready(self.settings.worker.web_port, within=120)

    async def restart_paper_fresh(self) -> None:
        """The paper exchange again with nothing: an exchange that lost every order the OMS
        thinks is live, and hands out its ids from the start again."""
        paper = self.services["paper-exchange"]
        paper.stop()
        paper.start()
        await paper_ready(self.settings, within=30)


async def _keeper_ready(settings: Settings, within: float = 120) -> None:
    await wait_http_ok(
        f"http://127.0.0.1:{settings.positions.web_port}/health",
        within,
        ready=lambda body: bool(body.get("ready")) and body.get("instruments", 0) > 0,
    )


@pytest.fixture(scope="module")
async def stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp("reconcile")
    settings = isolated_settings(tmp, kafka_bootstrap, [ACCOUNT], partitions=2, label="rc")
    write_account_secrets(settings.resolved_secrets_file, [ACCOUNT])
    await ensure_topics(settings)
    services = OmsServices(settings, settings.data_dir / "logs")
    # An exchange that keeps nothing across restarts (``--in-memory``): the worst case to
    # reconcile with, since it also reuses its order ids. The durable default, restarted, is
    # the day-in-the-life test's.
    services.add_paper_exchange(
        "--accounts-file", str(settings.resolved_secrets_file), "--in-memory"
    )
    services.add_gateway()
    services.add_worker(0, settings.worker.web_port)
    services.add_position_keeper()
    services.add_notifier()
    services.start_all()
    client = OrderClient(ACCOUNT, settings=settings)
    try:
        await worker_ready(settings.worker.web_port, within=120)
        await _keeper_ready(settings)
        await wait_http_ok(f"http://127.0.0.1:{settings.notify.web_port}/health", 60)
        await client.start()
        yield Stack(settings, services, client)
    except BaseException:
        print(services.diagnostics())
        raise
    finally:
        await client.close()
        services.stop_all()


def _seq(exchange_order_id: str) -> int:
    return int(exchange_order_id.rsplit("-", 1)[1])


async def _emergency_records(settings: Settings, alert_id: str) -> list[NotificationRecord]:
    rows = await consume_json(
        settings.kafka.bootstrap, settings.topic(Topic.NOTIFICATIONS), None, timeout_s=10
    )
    records = [NotificationRecord.model_validate(value) for _, value in rows]
    return [r for r in records if r.alert_id == alert_id]


async def test_orders_the_exchange_lost_end_lost_at_venue_and_a_stale_amend_touches_nothing(
    stack: Stack,
) -> None:
    kept = await stack.open_order()
    stale = await stack.open_order()  # its exchange id will name another order
    lost = await stack.open_order()
    assert kept.exchange_order_id and stale.exchange_order_id and lost.exchange_order_id

    # While the worker is down, the exchange loses everything; it gets `kept` back (placed
    # again with our label) and hands out ids from the start again.
    stack.stop_worker()
    await stack.restart_paper_fresh()
    async with stack.exchange_client() as exchange:
        again = await exchange.buy(label=kept.order_id, **EXCHANGE_ORDER)
        last = _seq(again["order"]["order_id"])
        target = _seq(stale.exchange_order_id)
        assert last < target, "the stale order must have been placed after `kept`"
        while last + 1 < target:  # someone else's orders, up to the id before the stale one
            other = await exchange.buy(label=f"other-{last}", **EXCHANGE_ORDER)
            last = _seq(other["order"]["order_id"])
    await stack.start_worker()
    started = time.monotonic()
    # The start pass: within 10 s of the worker's start (it owns both partitions).
    while (await stack.worker())["reconcile"].get("passes", 0) < 1:
        assert time.monotonic() - started < 10, "no reconciliation within 10 s of the start"
        await asyncio.sleep(0.2)

    # A new OMS order now holds the stale order's old exchange id...
    newer = await stack.open_order(price=1_100.0)
    assert newer.exchange_order_id == stale.exchange_order_id
    # ... and an amend of the stale order goes by label: it edits nothing else.
    await stack.client.amend_order(stale.order_id, price=1_200.0)

    def lost_at_venue(event: OrderEvent) -> bool:
        return (
            event.event_type is OrderEventType.CANCELLED
            and event.reason_code is ReasonCode.LOST_AT_VENUE
        )

    for order_id in (stale.order_id, lost.order_id):
        await stack.client.wait_for_event(order_id, lost_at_venue, timeout=LOST_WITHIN_S)
        alert = await stack.client.wait_for_event(
            order_id, lambda e: e.event_type is OrderEventType.SYSTEM_ERROR, timeout=10
        )
        assert alert.reason_code is ReasonCode.LOST_AT_VENUE
        assert alert.details["alert_id"] == f"lost_at_venue:{order_id}"
    assert time.monotonic() - started < LOST_WITHIN_S

    # The amend changed no other order and no order got an `amended` event; it reached the
    # exchange by label, never by exchange id.
    [newer_at_exchange] = await stack.at_exchange(newer.order_id)
    assert newer_at_exchange["price"] == 1_100.0 and newer_at_exchange["order_state"] == "open"
    for order_id in (newer.order_id, stale.order_id, kept.order_id):
        types = [e.event_type for e in stack.client.events_of(order_id)]
        assert OrderEventType.AMENDED not in types, (order_id, types)
    assert await stack.method_count("private/edit") == 0
    assert await stack.method_count("private/edit_by_label") >= 1

    # The order the exchange still had stays open (under its new exchange id).
    assert not [
        e for e in stack.client.events_of(kept.order_id) if e.event_type.value == "cancelled"
    ]
    [kept_at_exchange] = await stack.at_exchange(kept.order_id)
    assert kept_at_exchange["order_state"] == "open"

    # The emergency went out (repeating until acknowledged).
    deadline = time.monotonic() + 30
    while not (
        records := await _emergency_records(stack.settings, f"lost_at_venue:{lost.order_id}")
    ):
        assert time.monotonic() < deadline, "no emergency notification"
        await asyncio.sleep(0.5)
    assert records[0].severity == "critical" and records[0].notification_type == "system_error"

    summary = await stack.worker()
    assert summary["reconcile"]["lost_at_venue"] >= 2
    assert summary["reconcile"]["last_pass"]["trigger"] in ("start", "assigned", "reconnect")
    assert (await stack.worker("/stats"))["reconcile"]["passes"] >= 1

    for order_id in (kept.order_id, newer.order_id):
        await stack.client.cancel_order(order_id)
        await stack.client.wait_for_event(
            order_id, lambda e: e.event_type is OrderEventType.CANCELLED
        )


async def test_fills_made_while_the_worker_was_down_are_recovered_with_their_trade_ids(
    stack: Stack,
) -> None:
    order = await stack.open_order()
    # Worker and gateway down: nothing of what follows reaches Kafka on its own.
    stack.stop_worker("gateway")
    ticker = await stack.admin("public/ticker", instrument_name=INSTRUMENT)
    tick = (await stack.admin("public/get_instrument", instrument_name=INSTRUMENT))["tick_size"]
    crossing = math.ceil(ticker["best_ask_price"] * 1.005 / tick) * tick
    async with stack.exchange_client() as exchange:
        edited = await exchange.edit_by_label(
            label=order.order_id, instrument_name=INSTRUMENT, amount=10, price=crossing
        )
        assert edited["trades"], "the edit should have traded"
    await stack.start_worker("gateway")

    filled = await stack.client.wait_for_event(
        order.order_id, lambda e: e.event_type is OrderEventType.FILLED, timeout=30
    )
    async with stack.exchange_client() as exchange:
        trades = await exchange.call(
            "private/get_user_trades_by_order", {"order_id": filled.exchange_order_id}
        )
        exchange_positions = {p["instrument_name"]: p for p in await exchange.get_positions()}
    assert filled.order is not None
    assert sorted(filled.order.trade_ids) == sorted(t["trade_id"] for t in trades)
    assert (await stack.worker())["executor"]["fills_recovered"] >= len(trades)

    # The keeper counted exactly those trades: its position is the exchange's.
    want = exchange_positions[INSTRUMENT]["size"]
    deadline = time.monotonic() + 20
    while True:
        rows = await stack.keeper("/positions")
        mine = [r for r in rows if (r["account_id"], r["instrument_name"]) == (ACCOUNT, INSTRUMENT)]
        if mine and mine[0]["size"] == want:
            break
        assert time.monotonic() < deadline, (mine, want)
        await asyncio.sleep(0.3)
    assert want == 10
    stats = await stack.keeper("/stats")
    assert stats["reconcile"]["mismatches"] == 0


async def test_position_reconciliation_runs_within_10s_of_the_keeper_start(stack: Stack) -> None:
    keeper = stack.services["positions"]
    keeper.stop()
    keeper.start()
    await _keeper_ready(stack.settings)
    owned = time.monotonic()
    while (await stack.keeper("/stats"))["reconcile"]["checks"] < 1:
        assert time.monotonic() - owned < 10, "no position reconciliation within 10 s"
        await asyncio.sleep(0.2)
    stats = await stack.keeper("/stats")
    assert stats["reconcile"]["mismatches"] == 0 and stats["reconcile"]["errors"] == 0
