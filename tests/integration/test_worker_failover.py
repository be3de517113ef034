"""Workers SIGKILLed mid-flow: no order lost, none sent twice, no accepted cancel forgotten."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from oms.client import OrderClient
from oms.schemas import OrderEventType
from oms_dev.harness import paper_admin, wait_http_ok, worker_ready
from tests.integration.test_pipeline import (
    ACCOUNTS,
    TERMINAL_OR_RESTING,
    exchange_orders_by_label,
    make_settings,
    start_stack,
)

pytestmark = pytest.mark.kafka


async def test_sigkill_one_of_two_workers(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = make_settings(tmp_path_factory.mktemp("failover"), kafka_bootstrap, partitions=8)
    services = await start_stack(settings, workers=2, sink=False)
    clients = {a: OrderClient(a, settings=settings) for a in ACCOUNTS}
    try:
        for client in clients.values():
            await client.start()
        placed: dict[str, str] = {}

        async def place(n: int, offset: int) -> None:
            for i in range(n):
                account = ACCOUNTS[(offset + i) % len(ACCOUNTS)]
                kind = (offset + i) % 2
                order_id = await clients[account].submit_advanced_order(
                    "BTC-PERPETUAL",
                    10,
                    "buy" if kind else "sell",
                    order_type="limit",
                    price=1_000.0 if kind else 1_000_000.0,
                )
                placed[order_id] = account
                await asyncio.sleep(0.01)

        await place(60, 0)
        services["worker-1"].kill()  # mid-flow: orders still arriving and in flight
        await place(90, 60)
        # The survivor takes over the dead worker's partitions and their table state.
        results = await asyncio.gather(
            *(
                clients[a].wait_for_event(
                    oid, lambda e: e.event_type in TERMINAL_OR_RESTING, timeout=120
                )
                for oid, a in placed.items()
            ),
            return_exceptions=True,
        )
        missing = [oid for oid, r in zip(placed, results, strict=True) if isinstance(r, Exception)]
        if missing:
            at_exchange = await exchange_orders_by_label(
                settings, {placed[oid]: [oid] for oid in missing[:4]}
            )
            seen = {
                oid: [e.event_type.value for e in clients[placed[oid]].events_of(oid)]
                for oid in missing
            }
            raise AssertionError(
                f"{len(missing)} orders never acknowledged; events seen {seen}; "
                f"orders at the exchange by label {dict(at_exchange)}"
            )

        by_account: dict[str, list[str]] = {}
        for oid, account in placed.items():
            by_account.setdefault(account, []).append(oid)
        counts = await exchange_orders_by_label(settings, by_account)
        duplicates = {oid: c for oid, c in counts.items() if c != 1}
        assert not duplicates, f"labels not exactly once at the exchange: {duplicates}"
    except BaseException:
        print(services.diagnostics())
        raise
    finally:
        for client in clients.values():
            await client.close()
        services.stop_all()


async def test_a_cancel_and_an_edit_accepted_before_a_crash_are_sent_by_the_next_worker(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The worker accepts a client's cancel of one order and edit of another, and dies before
    the exchange gets them. Both requests were counted as seen, so their replays are
    duplicates: the restarted worker must find them recorded on the orders and send them
    again. One order ends cancelled, the other rests at its new price, here and at the
    exchange, and each was placed there once."""
    settings = make_settings(tmp_path_factory.mktemp("command-failover"), kafka_bootstrap)
    services = await start_stack(settings, workers=1, sink=False)
    account = ACCOUNTS[0]
    stats_url = f"http://127.0.0.1:{settings.worker.web_port}/stats"

    def table(body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = body["table"]
        return result

    try:
        async with OrderClient(account, settings=settings) as client:
            cancelled, edited = [
                await client.submit_advanced_order(
                    "BTC-PERPETUAL", 10, "buy", order_type="limit", price=1_000.0
                )
                for _ in range(2)
            ]
            for order_id in (cancelled, edited):
                await client.wait_for_event(
                    order_id, lambda e: e.event_type is OrderEventType.OPEN, timeout=60
                )
            # From now on requests reach the exchange a minute late, and a connection's
            # delayed requests die with it: both commands are in flight when the worker dies.
            await paper_admin(settings, "admin/set_faults", latency_ms=60_000)
            await client.cancel_order(cancelled)
            await client.amend_order(edited, price=1_100.0)
            await wait_http_ok(
                stats_url,
                within=30,
                ready=lambda body: table(body)["unanswered_cancels"] == 1
                and table(body)["unanswered_amends"] == 1,
            )
            services["worker-0"].kill()
            await paper_admin(settings, "admin/set_faults")  # all off
            seen = {e.event_type for o in (cancelled, edited) for e in client.events_of(o)}
            assert not seen & {OrderEventType.CANCELLED, OrderEventType.AMENDED}

            services["worker-0"].start()
            await worker_ready(settings.worker.web_port, within=120)
            await client.wait_for_event(
                cancelled, lambda e: e.event_type is OrderEventType.CANCELLED, timeout=90
            )
            amended = await client.wait_for_event(
                edited, lambda e: e.event_type is OrderEventType.AMENDED, timeout=90
            )
            assert amended.price == 1_100.0
        await wait_http_ok(
            stats_url,
            within=30,
            ready=lambda body: table(body)["sweeps"]["cancels_sent_again"] == 1
            and table(body)["sweeps"]["amends_sent_again"] == 1
            and table(body)["unanswered_cancels"] == table(body)["unanswered_amends"] == 0,
        )
        counts = await exchange_orders_by_label(settings, {account: [cancelled, edited]})
        assert counts == {cancelled: 1, edited: 1}
    except BaseException:
        print(services.diagnostics())
        raise
    finally:
        services.stop_all()
