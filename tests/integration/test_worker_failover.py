"""Two workers share the partitions; one is SIGKILLed mid-flow: no order lost, none sent twice."""

from __future__ import annotations

import asyncio

import pytest

from oms.client import OrderClient
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
