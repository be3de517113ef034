"""Public market data of the paper exchange as Deribit serves it: currencies, instrument
listings with Deribit's filters, and its answers to bad input."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from oms.exchange.paper import PaperExchange
from oms.exchange.paper.testing import RpcClient, RpcFailed
from oms.settings import PaperExchangeSettings


@pytest.fixture
async def px() -> AsyncIterator[PaperExchange]:
    async with PaperExchange(
        settings=PaperExchangeSettings(port=0, tick_interval_s=0.05), rate_limits=False
    ) as exchange:
        yield exchange


@pytest.fixture
async def client(px: PaperExchange) -> AsyncIterator[RpcClient]:
    c = await RpcClient.connect(px.ws_url)
    try:
        yield c
    finally:
        await c.close()


async def test_get_currencies(client: RpcClient) -> None:
    currencies = await client.result("public/get_currencies")
    assert [c["currency"] for c in currencies] == ["BTC", "ETH", "USDC"]
    btc = currencies[0]
    assert btc["currency_long"] == "Bitcoin" and btc["coin_type"] == "BITCOIN"


async def test_get_instruments_currency_optional_kind_and_expired(client: RpcClient) -> None:
    everything = await client.result("public/get_instruments")
    names = {i["instrument_name"] for i in everything}
    assert {"BTC-PERPETUAL", "ETH-PERPETUAL"} <= names
    assert {i["base_currency"] for i in everything} == {"BTC", "ETH"}
    assert await client.result("public/get_instruments", currency="any") == everything
    btc = await client.result("public/get_instruments", currency="btc")
    assert btc and all(i["base_currency"] == "BTC" for i in btc)
    options = await client.result("public/get_instruments", currency="BTC", kind="option")
    assert options and all(i["kind"] == "option" for i in options)
    assert len(options) < len(btc)
    assert await client.result("public/get_instruments", currency="USDC") == []
    assert await client.result("public/get_instruments", currency="BTC", expired=True) == []


async def test_get_instruments_unknown_currency_and_kind(client: RpcClient) -> None:
    with pytest.raises(RpcFailed) as info:
        await client.result("public/get_instruments", currency="DOGE")
    assert info.value.code == -32602
    assert info.value.data == {"reason": "invalid currency", "param": "currency"}
    response = await client.call("public/get_instruments", currency="DOGE")
    assert response["error"]["message"] == "Invalid params"
    with pytest.raises(RpcFailed) as info:
        await client.result("public/get_instruments", currency="BTC", kind="swap")
    assert info.value.code == -32602 and info.value.data["param"] == "kind"


PERP = "BTC-PERPETUAL"


async def _authed(client: RpcClient) -> None:
    await client.auth("data-test", "data-secret")


async def test_trade_tape_and_user_trade_paging(client: RpcClient) -> None:
    await _authed(client)
    for _ in range(3):
        await client.result("private/buy", instrument_name=PERP, amount=10, type="market")
    tape = await client.result("public/get_last_trades_by_instrument", instrument_name=PERP)
    seqs = [t["trade_seq"] for t in tape["trades"]]
    assert len(seqs) == 3 and seqs == sorted(seqs, reverse=True)  # latest first
    assert all(t["direction"] == "buy" for t in tape["trades"])
    latest = await client.result(
        "public/get_last_trades_by_instrument", instrument_name=PERP, count=2
    )
    assert [t["trade_seq"] for t in latest["trades"]] == seqs[:2] and latest["has_more"]
    forward = await client.result(
        "public/get_last_trades_by_instrument", instrument_name=PERP, start_seq=seqs[1],
        count=1,
    )
    assert [t["trade_seq"] for t in forward["trades"]] == [seqs[1]] and forward["has_more"]

    mine = await client.result("private/get_user_trades_by_currency", currency="BTC")
    ids = [t["trade_id"] for t in mine["trades"]]
    assert len(ids) == 3 and not mine["has_more"]
    between = await client.result(
        "private/get_user_trades_by_currency", currency="BTC", start_id=ids[2], end_id=ids[1],
        sorting="asc",
    )
    assert [t["trade_id"] for t in between["trades"]] == [ids[2], ids[1]]
    numeric = await client.result(
        "private/get_user_trades_by_currency", currency="BTC",
        start_id=int(ids[0].split("-")[1]),
    )
    assert [t["trade_id"] for t in numeric["trades"]] == [ids[0]]
    with pytest.raises(RpcFailed) as info:
        await client.result("private/get_user_trades_by_currency", currency="BTC", start_id="x")
    assert info.value.code == -32602 and info.value.data["param"] == "start_id"


async def test_order_history_with_continuation(client: RpcClient) -> None:
    await _authed(client)
    for _ in range(3):
        await client.result("private/buy", instrument_name=PERP, amount=10, type="market")
    first = await client.result(
        "private/get_order_history_by_instrument", instrument_name=PERP, count=2,
        with_continuation=True,
    )
    assert len(first["orders"]) == 2 and first["continuation"] == "2"
    rest = await client.result(
        "private/get_order_history_by_instrument", instrument_name=PERP, count=2,
        with_continuation=True, continuation=first["continuation"],
    )
    assert len(rest["orders"]) == 1 and rest["continuation"] is None
    ids = [o["order_id"] for o in first["orders"] + rest["orders"]]
    plain = await client.result(
        "private/get_order_history_by_instrument", instrument_name=PERP, count=10
    )
    assert [o["order_id"] for o in plain] == ids


async def test_chart_data_from_the_synthetic_market(client: RpcClient) -> None:
    await _authed(client)
    await client.result("private/buy", instrument_name=PERP, amount=50, type="market")
    now = await client.result("public/get_time")
    chart = await client.result(
        "public/get_tradingview_chart_data", instrument_name=PERP,
        start_timestamp=now - 3_600_000, end_timestamp=now, resolution="1",
    )
    assert chart["status"] == "ok" and chart["ticks"]
    assert all(t % 60_000 == 0 for t in chart["ticks"])
    for o, h, low, c in zip(chart["open"], chart["high"], chart["low"], chart["close"],
                            strict=True):
        assert low <= min(o, c) <= max(o, c) <= h
    assert sum(chart["volume"]) > 0 and sum(chart["cost"]) >= 50
    daily = await client.result(
        "public/get_tradingview_chart_data", instrument_name=PERP,
        start_timestamp=now - 86_400_000, end_timestamp=now, resolution="1D",
    )
    assert 1 <= len(daily["ticks"]) <= 2  # one day, or two if it just turned midnight
    assert all(t % 86_400_000 == 0 for t in daily["ticks"])
    assert sum(daily["volume"]) == pytest.approx(sum(chart["volume"]))
    before = await client.result(
        "public/get_tradingview_chart_data", instrument_name=PERP,
        start_timestamp=now - 7_200_000, end_timestamp=now - 3_600_000, resolution=60,
    )
    assert before["status"] == "no_data" and before["ticks"] == []
    with pytest.raises(RpcFailed) as info:
        await client.result(
            "public/get_tradingview_chart_data", instrument_name=PERP,
            start_timestamp=now - 60_000, end_timestamp=now, resolution="7",
        )
    assert info.value.code == -32602 and info.value.data["param"] == "resolution"


async def test_book_summary_funding_and_margins(client: RpcClient) -> None:
    [summary] = await client.result("public/get_book_summary_by_instrument", instrument_name=PERP)
    assert summary["bid_price"] < summary["mid_price"] < summary["ask_price"]
    assert summary["funding_8h"] == 0.0
    by_currency = await client.result("public/get_book_summary_by_currency", currency="ETH")
    assert [s["instrument_name"] for s in by_currency] == ["ETH-PERPETUAL"]
    now = await client.result("public/get_time")
    assert await client.result(
        "public/get_funding_rate_value", instrument_name=PERP,
        start_timestamp=now - 3_600_000, end_timestamp=now,
    ) == 0.0
    history = await client.result(
        "public/get_funding_rate_history", instrument_name=PERP,
        start_timestamp=now - 3_600_000, end_timestamp=now,
    )
    assert 1 <= len(history) <= 2  # the exchange started within the hour
    hour = history[-1]
    assert hour["timestamp"] % 3_600_000 == 0 and hour["interest_8h"] == 0.0
    assert hour["index_price"] == pytest.approx(summary["estimated_delivery_price"], rel=0.01)
    dated = next(
        i["instrument_name"]
        for i in await client.result("public/get_instruments", currency="BTC", kind="future")
        if i["settlement_period"] != "perpetual"
    )
    with pytest.raises(RpcFailed) as info:
        await client.result(
            "public/get_funding_rate_value", instrument_name=dated,
            start_timestamp=now - 1, end_timestamp=now,
        )
    assert info.value.code == -32602
    await _authed(client)
    margins = await client.result(
        "private/get_margins", instrument_name=PERP, amount=1000, price=100_000
    )
    assert margins["buy"] == margins["sell"] == pytest.approx(1000 / 100_000 * 0.02)
    assert margins["min_price"] < margins["max_price"]
    with pytest.raises(RpcFailed) as info:
        await client.result("private/get_margins", instrument_name=PERP, amount=15, price=1)
    assert info.value.code == -32602 and info.value.data["param"] == "amount"


def _apply(book: dict[float, float], levels: list[list[Any]]) -> None:
    for action, price, amount in levels:
        if action == "delete":
            del book[price]
        else:
            assert (price in book) == (action == "change"), (action, price)
            book[price] = amount


async def test_book_channel_is_a_snapshot_then_chained_changes(
    px: PaperExchange, client: RpcClient
) -> None:
    channel = f"book.{PERP}.100ms"
    await client.result("public/subscribe", channels=[channel])
    first = await client.notification(channel)
    assert first["type"] == "snapshot"
    bids = {p: a for _, p, a in first["bids"]}
    asks = {p: a for _, p, a in first["asks"]}
    last_id = first["change_id"]
    late = await RpcClient.connect(px.ws_url)
    try:
        await late.result("public/subscribe", channels=[channel])
        reference = await late.notification(channel)
        assert reference["type"] == "snapshot"
        while last_id < reference["change_id"]:
            change = await client.notification(channel)
            assert change["type"] == "change" and change["prev_change_id"] == last_id
            _apply(bids, change["bids"])
            _apply(asks, change["asks"])
            assert max(bids) < min(asks)
            last_id = change["change_id"]
        assert last_id == reference["change_id"]
        assert bids == {p: a for _, p, a in reference["bids"]}
        assert asks == {p: a for _, p, a in reference["asks"]}
    finally:
        await late.close()
