"""The project's Deribit client, unchanged, against the paper exchange: the point of the
paper exchange is that the same client works here and on test.deribit.com."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from oms.exchange.deribit import client as deribit
from oms.exchange.paper import PaperExchange
from oms.secrets import Credentials
from oms.settings import ExchangeSettings, PaperExchangeSettings

PERP = "BTC-PERPETUAL"


@pytest.fixture
async def px() -> AsyncIterator[PaperExchange]:
    async with PaperExchange(
        settings=PaperExchangeSettings(port=0, tick_interval_s=0.05), rate_limits=False
    ) as exchange:
        yield exchange


def client_for(px: PaperExchange, name: str) -> Any:
    settings = ExchangeSettings(
        url=px.ws_url,
        reconnect_min_delay=0.05,
        reconnect_max_delay=0.2,
        matching_rate_per_s=1000,
        matching_burst=1000,
    )
    return deribit.DeribitClient(
        px.ws_url, Credentials(name, f"{name}-secret"), settings=settings, name=name
    )


async def test_client_trades_and_gets_notifications(px: PaperExchange) -> None:
    seen: list[dict[str, Any]] = []
    got = asyncio.Event()

    def on_order(channel: str, data: Any) -> None:
        seen.append(data)
        got.set()

    async with client_for(px, "compat") as client:
        confirmed = await client.subscribe(["user.orders.any.any.raw"], on_order)
        assert confirmed == ["user.orders.any.any.raw"]
        ticker = await client.call("public/ticker", {"instrument_name": PERP})
        result = await client.buy(
            instrument_name=PERP,
            amount=10,
            type="limit",
            price=ticker["best_bid_price"] - 1000,
            label="compat-1",
        )
        order = result["order"]
        await asyncio.wait_for(got.wait(), 5)
        assert seen[0]["order_id"] == order["order_id"]
        by_label = await client.get_order_state_by_label("BTC", "compat-1")
        assert [o["order_id"] for o in by_label] == [order["order_id"]]
        cancelled = await client.cancel(order["order_id"])
        assert cancelled["order_state"] == "cancelled"


async def test_client_survives_dropped_connections(px: PaperExchange) -> None:
    async with client_for(px, "flaky") as client:
        await client.call("public/get_time")
        assert await px.drop_connections() >= 1
        for _ in range(100):
            await asyncio.sleep(0.05)
            if client.is_connected:
                break
        assert isinstance(await client.call("public/get_time"), int)
        assert await client.call("private/get_open_orders", {}) == []
