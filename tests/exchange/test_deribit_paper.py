"""DeribitClient end to end against the in-process paper exchange (real sockets, real engine)."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

from oms.exchange.deribit import DeribitClient, RateLimitConfig, RateLimiter
from oms.exchange.deribit.http import DeribitHttpClient
from oms.exchange.errors import (
    ConnectionLost,
    InvalidParams,
    NotEnoughFunds,
    OrderNotFound,
    PostOnlyReject,
    Unauthorized,
)
from oms.exchange.paper import PaperExchange
from oms.secrets import Credentials
from oms.settings import ExchangeSettings, PaperExchangeSettings

SETTINGS = ExchangeSettings(request_timeout=5.0, reconnect_min_delay=0.02, reconnect_max_delay=0.2)
_accounts = itertools.count(1)


@pytest.fixture
async def paper() -> Any:
    async with PaperExchange(settings=PaperExchangeSettings(port=0, tick_interval_s=0.05)) as px:
        yield px


def new_creds() -> Credentials:
    n = next(_accounts)
    return Credentials(f"acct-{n}-{time.monotonic_ns()}", f"secret-{n}")


async def wait_until(predicate: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def perp(c: DeribitClient) -> tuple[float, float]:
    """(tick_size, a post-only-safe bid far below the market) for BTC-PERPETUAL."""
    instruments = await c.get_instruments("BTC", "future")
    spec = next(i for i in instruments if i["instrument_name"] == "BTC-PERPETUAL")
    tick = float(spec["tick_size"])
    mark = float((await c.ticker("BTC-PERPETUAL"))["mark_price"])
    return tick, round(mark * 0.8 / tick) * tick


async def test_public_market_data(paper: PaperExchange) -> None:
    async with DeribitClient(paper.ws_url, settings=SETTINGS, name="public") as c:
        now = await c.get_time()
        assert abs(now - time.time() * 1000) < 5_000
        names = {i["instrument_name"] for i in await c.get_instruments("BTC", "future")}
        assert "BTC-PERPETUAL" in names
        ticker = await c.ticker("BTC-PERPETUAL")
        assert ticker["instrument_name"] == "BTC-PERPETUAL" and ticker["mark_price"] > 0
        ticks: list[dict[str, Any]] = []
        await c.subscribe(["ticker.BTC-PERPETUAL.100ms"], lambda ch, data: ticks.append(data))
        await wait_until(lambda: len(ticks) >= 2)
        assert ticks[0]["instrument_name"] == "BTC-PERPETUAL"


async def test_order_lifecycle_and_lookups(paper: PaperExchange) -> None:
    async with DeribitClient(paper.ws_url, new_creds(), settings=SETTINGS) as c:
        summary = await c.get_account_summary("BTC")
        assert summary["currency"] == "BTC" and summary["equity"] > 0
        updates: list[dict[str, Any]] = []

        async def on_orders(channel: str, data: Any) -> None:
            updates.extend(data if isinstance(data, list) else [data])

        await c.subscribe(["user.orders.BTC-PERPETUAL.raw"], on_orders)
        tick, bid = await perp(c)
        placed = await c.buy(
            instrument_name="BTC-PERPETUAL",
            amount=10,
            type="limit",
            price=bid,
            label="e2e-1",
            post_only=True,
        )
        order = placed["order"]
        assert order["order_state"] == "open" and order["label"] == "e2e-1"
        oid = order["order_id"]
        assert (await c.get_order_state(oid))["order_id"] == oid
        by_label = await c.get_order_state_by_label("BTC", "e2e-1")
        assert [o["order_id"] for o in by_label] == [oid]
        assert oid in {o["order_id"] for o in await c.get_open_orders()}
        edited = await c.edit(order_id=oid, amount=20, price=bid - tick)
        assert edited["order"]["amount"] == 20
        cancelled = await c.cancel(oid)
        assert cancelled["order_state"] == "cancelled"
        await wait_until(lambda: any(u.get("order_state") == "cancelled" for u in updates))
        assert all(u["label"] == "e2e-1" for u in updates)

        await c.sell(
            instrument_name="BTC-PERPETUAL",
            amount=10,
            type="limit",
            price=bid * 2,
            label="e2e-2",
        )
        assert await c.cancel_by_label("e2e-2") == 1
        await c.buy(instrument_name="BTC-PERPETUAL", amount=10, type="limit", price=bid)
        assert await c.cancel_all() == 1
        assert await c.get_open_orders() == []
        positions = await c.get_positions("BTC", "future")
        assert isinstance(positions, list)


async def test_error_mapping_end_to_end(paper: PaperExchange) -> None:
    async with DeribitClient(paper.ws_url, new_creds(), settings=SETTINGS) as c:
        tick, bid = await perp(c)
        with pytest.raises(InvalidParams):
            await c.buy(instrument_name="BTC-PERPETUAL", amount=7, type="limit", price=bid)
        with pytest.raises(InvalidParams):
            await c.buy(
                instrument_name="BTC-PERPETUAL", amount=10, type="limit", price=bid + tick / 3
            )
        with pytest.raises(NotEnoughFunds) as funds:
            await c.buy(instrument_name="BTC-PERPETUAL", amount=10**12, type="limit", price=bid)
        assert not funds.value.retryable
        with pytest.raises(OrderNotFound):
            await c.cancel("no-such-order")
        ask = float((await c.ticker("BTC-PERPETUAL"))["best_ask_price"])
        with pytest.raises(PostOnlyReject):
            await c.buy(
                instrument_name="BTC-PERPETUAL",
                amount=10,
                type="limit",
                price=ask + 100 * tick,
                post_only=True,
                reject_post_only=True,
            )
        assert c.is_connected


async def test_bad_credentials(paper: PaperExchange) -> None:
    creds = new_creds()
    async with DeribitClient(paper.ws_url, creds, settings=SETTINGS):
        pass
    wrong = Credentials(creds.client_id, "not-" + creds.client_secret)
    c = DeribitClient(paper.ws_url, wrong, settings=SETTINGS)
    with pytest.raises(Unauthorized) as info:
        await c.connect()
    assert creds.client_secret not in str(info.value)
    await c.close()


async def test_reconnect_resubscribes_and_reconciles(paper: PaperExchange) -> None:
    reconciled: list[list[dict[str, Any]]] = []
    updates: list[dict[str, Any]] = []

    clients: list[DeribitClient] = []  # the hook asks the client it belongs to

    async def on_reconnect() -> None:
        reconciled.append(await clients[0].get_open_orders())

    async with DeribitClient(
        paper.ws_url, new_creds(), settings=SETTINGS, on_reconnect=on_reconnect
    ) as c:
        clients.append(c)
        await c.subscribe(
            ["user.orders.BTC-PERPETUAL.raw"],
            lambda ch, data: updates.extend(data if isinstance(data, list) else [data]),
        )
        _, bid = await perp(c)
        await c.buy(instrument_name="BTC-PERPETUAL", amount=10, type="limit", price=bid, label="r1")
        assert await paper.drop_connections() >= 1
        await wait_until(lambda: len(reconciled) == 1)
        assert [o["label"] for o in reconciled[0]] == ["r1"]
        # The private subscription is live again on the new connection.
        before = len(updates)
        assert await c.cancel_by_label("r1") == 1
        await wait_until(lambda: len(updates) > before)
        assert updates[-1]["order_state"] == "cancelled"
        assert c.stats.reconnects == 1


async def test_inflight_order_gets_connection_lost_and_is_found_by_label(
    paper: PaperExchange,
) -> None:
    async with DeribitClient(paper.ws_url, new_creds(), settings=SETTINGS) as c:
        _, bid = await perp(c)
        # Replies held back: the order executes but its answer never comes on this connection.
        paper.faults.update({"delay_fraction": 1.0, "delay_s": 5.0})
        order = asyncio.ensure_future(
            c.buy(instrument_name="BTC-PERPETUAL", amount=10, type="limit", price=bid, label="q1")
        )
        await asyncio.sleep(0.3)
        await paper.drop_connections()
        with pytest.raises(ConnectionLost) as info:
            await order
        assert info.value.outcome_unknown
        paper.faults.update({})
        await wait_until(lambda: c.is_connected)
        found = await c.get_order_state_by_label("BTC", "q1")
        assert len(found) == 1 and found[0]["order_state"] == "open"


async def test_pacing_never_trips_the_exchange_limit(paper: PaperExchange) -> None:
    # Paper default tier 4: 5 orders/s, burst 20 — the same figures as our settings.
    creds = new_creds()
    limiter = RateLimiter(RateLimitConfig.from_settings(SETTINGS))
    async with (
        DeribitClient(paper.ws_url, creds, settings=SETTINGS, rate_limiter=limiter) as a,
        DeribitClient(paper.ws_url, creds, settings=SETTINGS, rate_limiter=limiter) as b,
    ):
        _, bid = await perp(a)
        t0 = time.monotonic()
        await asyncio.gather(
            *(
                x.buy(instrument_name="BTC-PERPETUAL", amount=10, type="limit", price=bid)
                for x in (a, b) * 14
            )
        )
        elapsed = time.monotonic() - t0
        assert a.stats.errors_by_code == {} and b.stats.errors_by_code == {}
        assert a.stats.reconnects == b.stats.reconnects == 0
        assert elapsed > 1.5  # 28 orders cannot all go out within the burst
        assert len(await a.get_open_orders()) == 28


async def test_http_transport_against_paper(paper: PaperExchange) -> None:
    creds = new_creds()
    async with DeribitHttpClient(paper.ws_url, creds, settings=SETTINGS) as h:
        assert isinstance(await h.call("public/get_time"), int)
        ticker = await h.call("public/ticker", {"instrument_name": "BTC-PERPETUAL"})
        bid = round(ticker["mark_price"] * 0.8 / 0.5) * 0.5
        placed = await h.call(
            "private/buy",
            {
                "instrument_name": "BTC-PERPETUAL",
                "amount": 10,
                "type": "limit",
                "price": bid,
                "label": "h1",
            },
        )
        assert placed["order"]["label"] == "h1"
        assert [o["label"] for o in await h.call("private/get_open_orders")] == ["h1"]
        with pytest.raises(OrderNotFound):
            await h.call("private/cancel", {"order_id": "nope"})


async def test_heartbeat_keeps_session_alive() -> None:
    # The paper exchange disconnects a client that misses a test_request; shorten the interval
    # (below Deribit's 10 s minimum; model_copy skips validation) to see several rounds quickly.
    fast = SETTINGS.model_copy(update={"heartbeat_interval": 1})
    px_settings = PaperExchangeSettings(port=0)
    async with (
        PaperExchange(settings=px_settings, min_heartbeat_s=0.5) as px,
        DeribitClient(px.ws_url, new_creds(), settings=fast) as c,
    ):
        await asyncio.sleep(3.5)
        assert c.stats.heartbeats >= 3
        assert c.stats.disconnects == 0 and c.is_connected
        assert isinstance(await c.get_time(), int)
