"""Ended orders leave the worker's table, for real: Kafka, the paper exchange, gateway and a
worker with the default settings except a short retention.

An order that filled is purged after the retention (the worker's ``/stats`` shows the table
shrink and a marker appear); a re-sent request with its ``request_id`` is still refused as a
duplicate and not executed again; a cancel of it is refused as ``order_not_open``; a late
report about it is counted, never crashes the agent and never brings the order back.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from oms.client import OrderClient
from oms.schemas import (
    ExchangeOrderState,
    ExecutionReport,
    Fill,
    OrderEventType,
    OrderRequest,
    ReasonCode,
    ReportSource,
    Topic,
    now_ms,
)
from oms.settings import Settings
from oms_dev.harness import OmsServices
from tests.integration.test_pipeline import (
    ACCOUNTS,
    exchange_orders_by_label,
    make_settings,
    start_stack,
)

pytestmark = pytest.mark.kafka

RETENTION_S = 2.0


@pytest.fixture(scope="module")
async def stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Settings, OmsServices]]:
    settings = make_settings(tmp_path_factory.mktemp("retention"), kafka_bootstrap)
    worker = settings.worker.model_copy(
        update={"terminal_retention_s": RETENTION_S, "purge_interval_s": 0.5}
    )
    settings = settings.model_copy(update={"worker": worker})
    services = await start_stack(settings, sink=False)
    yield settings, services
    services.stop_all()


async def worker_stats(settings: Settings) -> dict[str, Any]:
    url = f"http://127.0.0.1:{settings.worker.web_port}/stats"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        body: dict[str, Any] = await resp.json()
        return body


async def until(
    check: Callable[[], Awaitable[bool]],
    within: float = 60.0,
    what: str = "condition",
) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def test_an_ended_order_leaves_the_table_and_stays_refused(
    stack: tuple[Settings, OmsServices],
) -> None:
    settings, services = stack
    account = ACCOUNTS[0]
    async with OrderClient(account, settings=settings) as client:
        rid = f"ret-{uuid.uuid4().hex}"
        order_id = await client.submit_advanced_order(
            "BTC-PERPETUAL", 10, "buy", order_type="market", request_id=rid
        )
        filled = await client.wait_for_event(
            order_id, lambda e: e.event_type is OrderEventType.FILLED, timeout=60
        )
        assert filled.filled_amount == 10
        ended_at = time.monotonic()
        table = (await worker_stats(settings))["table"]
        assert table["orders"] >= 1

        async def purged() -> bool:
            stats = await worker_stats(settings)
            return stats["release"].get("purged", 0) >= 1

        await until(purged, what="the filled order to leave the table")
        # Not before its retention was over.
        assert time.monotonic() - ended_at >= RETENTION_S - 0.5
        stats = await worker_stats(settings)
        assert stats["table"]["orders"] == table["orders"] - 1
        assert stats["table"]["finished_markers"] == 1
        assert stats["table"]["ended_awaiting_purge"] == 0

        # The same request again: its marker refuses it, nothing reaches the exchange.
        again = await client.submit_advanced_order(
            "BTC-PERPETUAL", 10, "buy", order_type="market", request_id=rid
        )
        assert again == order_id
        duplicate = await client.wait_for_event(
            order_id, lambda e: e.event_type is OrderEventType.DUPLICATE, timeout=30
        )
        assert duplicate.reason_code is ReasonCode.DUPLICATE_REQUEST
        assert duplicate.status is not None and duplicate.status.value == "filled"
        assert duplicate.details.get("purged") is True

        # A cancel of it: refused with a reason, not "unknown".
        await client.cancel_order(order_id, request_id=f"c-{rid}")
        refused = await client.wait_for_event(
            order_id, lambda e: e.event_type is OrderEventType.COMMAND_REJECTED, timeout=30
        )
        assert refused.reason_code is ReasonCode.ORDER_NOT_OPEN

        # A late report with a fill: counted, the order does not come back.
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all")
        await producer.start()
        try:
            late = ExecutionReport(
                report_id=f"late-{rid}",
                order_id=order_id,
                account_id=account,
                source=ReportSource.SUBSCRIPTION,
                instrument_name="BTC-PERPETUAL",
                order_state=ExchangeOrderState.FILLED,
                amount=10,
                filled_amount=10,
                fills=[Fill(trade_id=f"late-trade-{rid}", amount=10, price=50_000.0)],
            )
            await producer.send_and_wait(
                settings.topic(Topic.EXECUTION_REPORTS), late.to_bytes(), key=order_id.encode()
            )
        finally:
            await producer.stop()

        async def counted() -> bool:
            stats = await worker_stats(settings)
            return stats["order_state"].get("reports_purged_order", 0) >= 1

        await until(counted, what="the late report to be counted")
        stats = await worker_stats(settings)
        assert stats["table"]["orders"] == table["orders"] - 1
        assert stats["table"]["finished_markers"] == 1
        assert stats["order_state"]["agent_starts"] == 1
        assert stats["intake"]["duplicates_after_purge"] == 1
        assert stats["intake"]["commands_after_purge"] == 1

        # The purge is a tombstone on the table's changelog: every worker's risk feed saw it.
        assert stats["risk_feeds"].get("orders:deleted", 0) >= 1

        await asyncio.sleep(1.0)
        counts = await exchange_orders_by_label(settings, {account: [order_id]})
        assert counts[order_id] == 1
    dead = [n for n in ("worker-0", "gateway", "paper-exchange") if not services[n].alive]
    assert not dead, f"services died: {dead}"


async def test_a_request_older_than_the_dedupe_window_is_refused_as_stale(
    stack: tuple[Settings, OmsServices],
) -> None:
    """Its original, if it had one, may be forgotten: never executed (the signature is fresh,
    the request itself says it was created a day and more ago)."""
    settings, _ = stack
    account = ACCOUNTS[1]
    day_ago = now_ms() - int(settings.worker.dedupe_retention_s * 1000) - 60_000
    async with OrderClient(account, settings=settings) as client:
        request = OrderRequest(
            request_id=f"old-{uuid.uuid4().hex}",
            account_id=account,
            instrument_name="BTC-PERPETUAL",
            amount=10,
            direction="buy",
            order_type="market",
            created_at=day_ago,
        )
        await client.send(request)
        event = await client.wait_for_event(request.key, timeout=30)
        assert event.event_type is OrderEventType.REJECTED
        assert event.reason_code is ReasonCode.STALE_REQUEST
        counts = await exchange_orders_by_label(settings, {account: [request.key]})
        assert counts[request.key] == 0
