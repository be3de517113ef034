"""An unmodified third-party Deribit client, ccxt (``ccxt.async_support.deribit`` and
``ccxt.pro.deribit``), trades against the paper exchange: only its API URLs are pointed at
the exchange. Every request ccxt signs goes through Deribit's own schemes (HTTP
``deri-hmac-sha256`` for REST, ``client_signature`` for the WebSocket login).

Each REST step is recorded with the Deribit methods the exchange saw it call (from the
exchange's own counters); run with ``-s`` to see the table."""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from oms.exchange.paper import PaperExchange
from oms.settings import PaperExchangeSettings

# ccxt is a pinned dev dependency: unmodified, as a trading bot would run it.
ccxt = importlib.import_module("ccxt.async_support")
ccxt_pro = importlib.import_module("ccxt.pro")

SYMBOL = "BTC/USD:BTC"  # BTC-PERPETUAL in ccxt's unified naming
API_KEY, SECRET = "ccxt-bot", "ccxt-bot-secret"


@pytest.fixture
async def px() -> AsyncIterator[PaperExchange]:
    async with PaperExchange(settings=PaperExchangeSettings(port=0, tick_interval_s=0.05)) as ex:
        ex.accounts.add("ccxt", API_KEY, SECRET)
        yield ex


class Steps:
    """Runs ccxt calls one by one and records what the exchange saw each of them call."""

    def __init__(self, px: PaperExchange) -> None:
        self.px = px
        self.rows: list[tuple[str, str, str]] = []

    async def run(self, call: str, step: Callable[[], Awaitable[Any]],
                  outcome: Callable[[Any], str]) -> Any:
        before = dict(self.px.state.method_counts)
        result = await step()
        after = self.px.state.method_counts
        called = sorted(m for m, n in after.items() if n > before.get(m, 0))
        self.rows.append((call, ", ".join(called), outcome(result)))
        return result

    def table(self) -> str:
        lines = ["| # | ccxt call | Deribit methods it called | outcome |", "|---|---|---|---|"]
        lines += [f"| {i} | `{c}` | {m} | {o} |" for i, (c, m, o) in enumerate(self.rows, 1)]
        return "\n".join(lines)


async def test_ccxt_trades_over_rest(px: PaperExchange) -> None:
    ex = ccxt.deribit({"apiKey": API_KEY, "secret": SECRET})
    ex.urls["api"] = {"rest": f"http://127.0.0.1:{px.port}"}
    steps = Steps(px)
    try:
        markets = await steps.run(
            "load_markets()", ex.load_markets, lambda m: f"{len(m)} markets"
        )
        assert SYMBOL in markets and markets[SYMBOL]["id"] == "BTC-PERPETUAL"
        assert {m["type"] for m in markets.values()} == {"swap", "future", "option"}

        ticker = await steps.run(
            f"fetch_ticker('{SYMBOL}')", lambda: ex.fetch_ticker(SYMBOL),
            lambda t: f"bid {t['bid']} / ask {t['ask']}",
        )
        bid, ask = ticker["bid"], ticker["ask"]
        assert 0 < bid < ask

        book = await steps.run(
            f"fetch_order_book('{SYMBOL}', 5)", lambda: ex.fetch_order_book(SYMBOL, 5),
            lambda b: f"{len(b['bids'])} bids, {len(b['asks'])} asks",
        )
        assert book["bids"][0][0] < book["asks"][0][0] and len(book["bids"]) == 5

        balance = await steps.run(
            "fetch_balance()", ex.fetch_balance, lambda b: f"BTC free {b['BTC']['free']}"
        )
        assert balance["BTC"]["total"] == 100.0

        limit = await steps.run(
            "create_order(limit buy 10)",
            lambda: ex.create_order(SYMBOL, "limit", "buy", 10, bid - 500),
            lambda o: f"{o['id']} {o['status']}",
        )
        assert limit["status"] == "open" and limit["type"] == "limit"

        market = await steps.run(
            "create_order(market buy 20)",
            lambda: ex.create_order(SYMBOL, "market", "buy", 20),
            lambda o: f"{o['status']}, filled {o['filled']} at {o['average']}",
        )
        assert market["status"] == "closed" and market["filled"] == 20

        stop = await steps.run(
            "create_order(market sell 10, stopLossPrice)",
            lambda: ex.create_order(
                SYMBOL, "market", "sell", 10, None, {"stopLossPrice": bid - 2000}
            ),
            lambda o: f"{o['info']['order_type']} {o['info']['order_state']} "
                      f"at {o['info']['trigger_price']}",
        )
        assert stop["info"]["order_type"] == "stop_market" and stop["status"] == "open"
        assert stop["info"]["trigger_price"] == bid - 2000

        trailing = await steps.run(
            "create_order(market sell 10, trailingAmount=500)",
            lambda: ex.create_order(SYMBOL, "market", "sell", 10, None, {"trailingAmount": 500}),
            lambda o: f"{o['info']['order_type']} {o['info']['order_state']}, "
                      f"offset {o['info']['trigger_offset']}",
        )
        info = trailing["info"]
        assert info["order_type"] == "trailing_stop" and info["order_state"] == "untriggered"
        assert info["trigger_price"] == pytest.approx(info["trigger_reference_price"] - 500, abs=1)

        fetched = await steps.run(
            "fetch_order(limit)", lambda: ex.fetch_order(limit["id"], SYMBOL),
            lambda o: f"{o['status']} at {o['price']}",
        )
        assert fetched["id"] == limit["id"] and fetched["price"] == bid - 500

        open_orders = await steps.run(
            f"fetch_open_orders('{SYMBOL}')", lambda: ex.fetch_open_orders(SYMBOL),
            lambda os: f"{len(os)} open",
        )
        assert {o["id"] for o in open_orders} == {limit["id"], stop["id"], trailing["id"]}

        edited = await steps.run(
            "edit_order(limit, amount 20, price -100)",
            lambda: ex.edit_order(limit["id"], SYMBOL, "limit", "buy", 20, bid - 600),
            lambda o: f"amount {o['amount']} at {o['price']}",
        )
        assert edited["amount"] == 20 and edited["price"] == bid - 600

        cancelled = await steps.run(
            "cancel_order(limit)", lambda: ex.cancel_order(limit["id"]),
            lambda o: o["status"],
        )
        assert cancelled["status"] == "canceled"

        cancel_all = await steps.run(
            "cancel_all_orders()", ex.cancel_all_orders,
            lambda r: f"{r[0]['info']['result']} cancelled",
        )
        assert cancel_all[0]["info"]["result"] == 2
        assert await ex.fetch_open_orders(SYMBOL) == []

        trades = await steps.run(
            f"fetch_my_trades('{SYMBOL}')", lambda: ex.fetch_my_trades(SYMBOL),
            lambda ts: f"{len(ts)} trade(s), {sum(t['amount'] for t in ts)} bought",
        )
        assert trades and sum(t["amount"] for t in trades) == 20
        assert all(t["order"] == market["id"] and t["side"] == "buy" for t in trades)

        positions = await steps.run(
            "fetch_positions()", ex.fetch_positions,
            lambda ps: ", ".join(f"{p['symbol']} {p['side']} {p['contracts']}" for p in ps),
        )
        [position] = positions
        assert position["symbol"] == SYMBOL and position["side"] == "long"
        assert position["contracts"] == 20
    finally:
        await ex.close()
        print("\n" + steps.table())
    assert len(steps.rows) == 15


async def _until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
    """Wait for the exchange to have registered a subscription (it has no event for that)."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.01)


async def test_ccxt_pro_watches_over_websocket(
    px: PaperExchange, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="oms.paper")
    ex = ccxt_pro.deribit({"apiKey": API_KEY, "secret": SECRET})
    ex.urls["api"] = {
        "rest": f"http://127.0.0.1:{px.port}",
        "ws": f"ws://127.0.0.1:{px.port}/ws/api/v2",
    }
    try:
        await ex.load_markets()
        ticker = await asyncio.wait_for(ex.watch_ticker(SYMBOL), 5)
        assert ticker["symbol"] == SYMBOL and 0 < ticker["bid"] < ticker["ask"]

        # The book is kept from a snapshot and the changes after it: after many market
        # ticks it must still be the exchange's book (never crossed, no stale levels).
        for _ in range(10):
            book = await asyncio.wait_for(ex.watch_order_book(SYMBOL), 5)
            assert book["bids"][0][0] < book["asks"][0][0]
        exchange_book = px.engine.books["BTC-PERPETUAL"]
        assert len(book["bids"]) <= len(list(exchange_book.bids.depth(100))) + 5

        # Private streams: ccxt logs in with a client signature, orders go over REST with
        # the HTTP signature, and the notifications come back on the WebSocket.
        orders = asyncio.ensure_future(ex.watch_orders(SYMBOL))
        await _until(lambda: any(
            "user.orders.any.any.raw" in s.channels for s in px.state.sessions
        ))
        placed = await ex.create_order(SYMBOL, "limit", "buy", 10, ticker["bid"] - 1000)
        seen = await asyncio.wait_for(orders, 5)
        assert placed["id"] in {o["id"] for o in seen}
        assert next(o for o in seen if o["id"] == placed["id"])["status"] == "open"

        trades = asyncio.ensure_future(ex.watch_my_trades(SYMBOL))
        await _until(lambda: any(
            "user.trades.any.any.raw" in s.channels for s in px.state.sessions
        ))
        bought = await ex.create_order(SYMBOL, "market", "buy", 10)
        mine = await asyncio.wait_for(trades, 5)
        assert {t["order"] for t in mine} == {bought["id"]}
        assert sum(t["amount"] for t in mine) == 10
    finally:
        await ex.close()
    grants = [r.getMessage() for r in caplog.records if r.getMessage().startswith("paper.auth")]
    assert grants and all("grant=client_signature" in g for g in grants)
    assert px.state.method_counts.get("private/buy", 0) == 2  # REST, HTTP-signed
