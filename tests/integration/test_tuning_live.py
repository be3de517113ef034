"""The tuning statistics from a live history: post-only orders through the worker (its intake
records the touch from its market cache), the paper exchange and the sink, then counted by
the tuning SQL at the distance each was placed from the touch it recorded."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from oms.client import OrderClient
from oms.schemas import OrderEventType, now_ms
from oms.settings import Settings
from oms.sinks.query import run_query
from oms.sinks.tuning import tuning_statistics
from oms_dev.harness import OmsServices, paper_admin
from tests.integration.test_pipeline import make_settings, start_stack

pytestmark = pytest.mark.kafka

PERP = "BTC-PERPETUAL"
BEHIND_BPS = 20.0
ORDERS = 4


@pytest.fixture(scope="module")
async def stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Settings, OmsServices]]:
    settings = make_settings(Path(tmp_path_factory.mktemp("tuning")), kafka_bootstrap)
    services = await start_stack(settings)
    yield settings, services
    services.stop_all()


async def _stored_metadata(settings: Settings, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The orders' metadata once the sink holds every one of them."""
    sql = "SELECT order_id, metadata FROM orders FINAL WHERE order_id IN {ids:Array(String)}"
    for _ in range(60):
        rows = (await run_query(settings, sql, {"ids": ids})).records()
        if len(rows) == len(ids):
            return {r["order_id"]: json.loads(r["metadata"]) for r in rows}
        await asyncio.sleep(0.5)
    raise AssertionError(f"the sink never held all {len(ids)} orders")


async def test_live_orders_carry_their_touch_and_are_counted_by_distance(
    stack: tuple[Settings, OmsServices],
) -> None:
    settings, services = stack
    try:
        ticker = await paper_admin(settings, "public/ticker", instrument_name=PERP)
        price = math.floor(ticker["best_bid_price"] * (1 - BEHIND_BPS / 10_000) / 0.5) * 0.5
        async with OrderClient("acc-a", settings=settings) as client:
            ids = [
                await client.submit_advanced_order(
                    instrument_name=PERP, amount=10, direction="buy", price=price, post_only=True
                )
                for _ in range(ORDERS)
            ]
            for oid in ids:
                await client.wait_for_event(oid, lambda e: e.event_type is OrderEventType.OPEN, 60)
        stored = await _stored_metadata(settings, ids)
    except BaseException:
        print(services.diagnostics())
        raise
    for metadata in stored.values():
        assert metadata["tick_size"] == 0.5
        assert metadata["touch_bid"] < metadata["touch_ask"]
        assert isinstance(metadata["touch_at"], int) and metadata["touch_bid_amount"] > 0
    expected: dict[float, int] = {}
    for metadata in stored.values():
        distance = (metadata["touch_bid"] - price) / metadata["touch_bid"] * 10_000
        expected[float(round(distance))] = expected.get(float(round(distance)), 0) + 1
    # Counted once the horizon has passed for them (none filled: they rest behind the touch).
    stats = await tuning_statistics(settings, now=now_ms() + 3_600_000)
    counted = {b.offset_bps: b.orders for b in stats.fills if b.instrument == PERP}
    assert counted == expected
    assert all(b.filled == 0 and b.tick_size == 0.5 for b in stats.fills)
