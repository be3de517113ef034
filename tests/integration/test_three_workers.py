"""Three workers, the gateway and the position keeper under a steady flow of immediate, delayed
and conditional orders; one worker is SIGKILLed mid-flow and started again later.

Every request must end with exactly one correct outcome, no label may reach the exchange
twice, no conditional or delayed order may be lost or triggered twice, and the keeper's
positions must equal the exchange's."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from oms.client import OrderClient
from oms.exchange.deribit.client import DeribitClient
from oms.kafka.admin import ensure_topics
from oms.schemas import OrderEventType
from oms.secrets import SecretStore
from oms.settings import Settings
from oms_dev.devstack.net import free_port
from oms_dev.harness import (
    OmsServices,
    paper_admin,
    wait_http_ok,
    worker_ready,
    write_account_secrets,
)
from tests.integration.test_held_orders import RESTING_BUY, Ticks
from tests.integration.test_pipeline import ACCOUNTS, exchange_orders_by_label, make_settings
from tests.positions.helpers import differences, keeper_positions, keeper_ready

pytestmark = pytest.mark.kafka

BTC, ETH = "BTC-PERPETUAL", "ETH-PERPETUAL"
WORKERS = 3
ORDERS = 120  # one every ~0.2 s: ~25 s of flow
KILL_AT, RESTART_AT = 40, 80
# Conditions watch ETH, whose ticks only this test publishes (the gateway is told to publish
# BTC only); thresholds far above the paper market, so nothing but our ticks can fire them.
ETH_BASE = 100_000.0

OUTCOMES = {
    OrderEventType.OPEN,
    OrderEventType.FILLED,
    OrderEventType.REJECTED,
    OrderEventType.CANCELLED,
    OrderEventType.EXPIRED,
}


def three_worker_settings(tmp: Path, bootstrap: str) -> Settings:
    settings = make_settings(tmp, bootstrap, partitions=6)
    return settings.model_copy(
        update={
            "exchange": settings.exchange.model_copy(update={"instruments": [BTC]}),
            "queue": settings.queue.model_copy(update={"processing_interval": 0.2}),
        }
    )


async def start_three_workers(settings: Settings) -> tuple[OmsServices, list[int]]:
    write_account_secrets(settings.resolved_secrets_file, ACCOUNTS)
    await ensure_topics(settings)
    services = OmsServices(settings, settings.data_dir / "logs")
    services.add_paper_exchange("--accounts-file", str(settings.resolved_secrets_file))
    services.add_gateway()
    services.add_position_keeper()
    ports = [settings.worker.web_port] + [free_port() for _ in range(WORKERS - 1)]
    for i, port in enumerate(ports):
        services.add_worker(i, port)
    services.start_all()
    try:
        for port in ports:
            await worker_ready(port, within=120)
            await tick_feed_ready(port)
        await keeper_ready(settings)
    except BaseException:
        print(services.diagnostics())
        services.stop_all()
        raise
    return services, ports


async def tick_feed_ready(port: int) -> None:
    await wait_http_ok(
        f"http://127.0.0.1:{port}/stats", within=60, ready=lambda b: b["tick_feed"]["ready"]
    )


async def paper_stats(settings: Settings) -> dict[str, Any]:
    result: dict[str, Any] = await paper_admin(settings, "admin/get_stats")
    return result


async def exchange_positions(settings: Settings, account: str) -> dict[str, dict[str, Any]]:
    credentials = SecretStore(settings.resolved_secrets_file).credentials(account)
    async with DeribitClient(
        settings.exchange.url, credentials, settings=settings.exchange
    ) as client:
        items = await client.get_positions(currency="any")
    return {p["instrument_name"]: p for p in items}


async def position_differences(settings: Settings, within: float = 60.0) -> list[str]:
    """Poll until the keeper equals the exchange for every account; the last differences."""
    deadline = time.monotonic() + within
    while True:
        recorded = await keeper_positions(settings)
        diff: list[str] = []
        for account in ACCOUNTS:
            diff += differences(account, recorded, await exchange_positions(settings, account))
        if not diff or time.monotonic() > deadline:
            return diff
        await asyncio.sleep(0.5)


async def test_sigkill_one_of_three_workers_under_a_mixed_flow(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = three_worker_settings(tmp_path_factory.mktemp("three"), kafka_bootstrap)
    services, ports = await start_three_workers(settings)
    clients = {a: OrderClient(a, settings=settings) for a in ACCOUNTS}
    # order id -> (account, kind, expected outcome)
    placed: dict[str, tuple[str, str, OrderEventType]] = {}
    try:
        for client in clients.values():
            await client.start()
        async with Ticks(settings) as ticks:
            eth = ETH_BASE
            await ticks.send(ETH, last_price=eth)
            await asyncio.sleep(1.0)  # every tick feed has the starting value
            victim = services["worker-1"]
            for i in range(ORDERS):
                account = ACCOUNTS[i % len(ACCOUNTS)]
                client = clients[account]
                side = "buy" if (i // 8) % 2 == 0 else "sell"
                kind = ("immediate", "delayed", "conditional", "market")[i % 4]
                if kind == "immediate":  # rests far below the market
                    oid = await client.submit_advanced_order(BTC, 10, "buy", price=RESTING_BUY)
                    want = OrderEventType.OPEN
                elif kind == "market":
                    oid = await client.submit_advanced_order(BTC, 10, side, order_type="market")
                    want = OrderEventType.FILLED
                elif kind == "delayed":
                    oid = await client.submit_advanced_order(
                        BTC, 10, side, order_type="market", delay=1.0 + (i % 3)
                    )
                    want = OrderEventType.FILLED
                else:  # fires once ETH has risen 2 steps past the price at submission
                    threshold = eth + 200
                    oid = await client.create_conditional_order(
                        BTC, 10, side, [f"{ETH}.last_price >= {threshold}"], order_type="market"
                    )
                    want = OrderEventType.FILLED
                placed[oid] = (account, kind, want)
                if i % 4 == 3:  # ETH climbs steadily: conditions fire all through the flow
                    eth += 100
                    await ticks.send(ETH, last_price=eth)
                if i == KILL_AT:
                    victim.kill()  # mid-flow: orders arriving, held, in flight
                if i == RESTART_AT:
                    victim.start()
                await asyncio.sleep(0.2)
            await worker_ready(ports[1], within=120)
            await tick_feed_ready(ports[1])
            # The last conditions: a tick above every threshold.
            await ticks.send(ETH, last_price=eth + 1_000)

            outcomes = await asyncio.gather(
                *(
                    clients[a].wait_for_event(oid, lambda e: e.event_type in OUTCOMES, timeout=90)
                    for oid, (a, _, _) in placed.items()
                ),
                return_exceptions=True,
            )
        missing = {
            oid: [e.event_type.value for e in clients[placed[oid][0]].events_of(oid)]
            for oid, r in zip(placed, outcomes, strict=True)
            if isinstance(r, BaseException)
        }
        if missing:
            at_exchange = await exchange_orders_by_label(
                settings, {placed[oid][0]: [oid] for oid in missing}
            )
            order = list(placed)
            found = {
                oid: (order.index(oid), placed[oid][1], events, at_exchange[oid])
                for oid, events in missing.items()
            }
            raise AssertionError(
                f"{len(missing)} requests without an outcome (index, kind, events, orders at "
                f"the exchange); topics {settings.kafka.topic_prefix}*: {found}"
            )
        await asyncio.sleep(2.0)  # a late second outcome (a duplicate) would show by now

        wrong, several, triggered_twice = {}, {}, {}
        for oid, (account, kind, want) in placed.items():
            events = clients[account].events_of(oid)
            ends = {(e.event_id, e.event_type) for e in events if e.event_type in OUTCOMES}
            if {t for _, t in ends} != {want}:
                wrong[oid] = (kind, [e.event_type.value for e in events])
            elif len(ends) != 1:
                several[oid] = (kind, sorted(ends))
            if kind in ("delayed", "conditional"):
                fired = {e.event_id for e in events if e.event_type is OrderEventType.TRIGGERED}
                if len(fired) != 1:
                    triggered_twice[oid] = (kind, sorted(fired))
        assert not wrong, f"wrong outcome: {wrong}"
        assert not several, f"several outcomes: {several}"
        assert not triggered_twice, (
            f"conditional/delayed not triggered exactly once: {triggered_twice}"
        )

        by_account: dict[str, list[str]] = {}
        for oid, (account, _, _) in placed.items():
            by_account.setdefault(account, []).append(oid)
        counts = await exchange_orders_by_label(settings, by_account)
        not_once = {oid: counts[oid] for oid in placed if counts[oid] != 1}
        assert not not_once, f"labels not exactly once at the exchange: {not_once}"
        stats = await paper_stats(settings)
        assert stats["duplicate_labels"] == {}, stats["duplicate_labels"]

        diff = await position_differences(settings)
        assert diff == [], diff

        kinds = Counter(kind for _, kind, _ in placed.values())
        held = kinds["delayed"] + kinds["conditional"]
        print(
            f"three workers, worker-1 SIGKILLed after {KILL_AT} and restarted after "
            f"{RESTART_AT} requests: {len(placed)} requests {dict(kinds)}, each one outcome; "
            f"labels once at the exchange: {sum(counts[o] == 1 for o in placed)}; "
            f"duplicate_labels: {len(stats['duplicate_labels'])}; "
            f"held orders triggered exactly once: {held - len(triggered_twice)}/{held}; "
            f"positions equal for {len(ACCOUNTS)} accounts; worker-1 starts: {victim.starts}"
        )
    except BaseException:
        print(services.diagnostics())
        raise
    finally:
        for client in clients.values():
            await client.close()
        services.stop_all()
