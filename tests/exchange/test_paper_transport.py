"""The paper exchange through real sockets: WebSocket and HTTP transports, auth,
subscriptions, heartbeats, rate limits and fault knobs."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from oms.exchange.paper import PaperExchange
from oms.exchange.paper.testing import RpcClient, RpcFailed
from oms.settings import PaperExchangeSettings

PERP = "BTC-PERPETUAL"


def settings(**kw: object) -> PaperExchangeSettings:
    return PaperExchangeSettings(port=0, tick_interval_s=0.05, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def px() -> AsyncIterator[PaperExchange]:
    async with PaperExchange(settings=settings(), min_heartbeat_s=0.2) as exchange:
        yield exchange


@pytest.fixture
async def client(px: PaperExchange) -> AsyncIterator[RpcClient]:
    c = await RpcClient.connect(px.ws_url)
    await c.auth("alice", "alice-secret")
    yield c
    await c.close()


async def best_ask(c: RpcClient) -> float:
    ticker = await c.result("public/ticker", instrument_name=PERP)
    return float(ticker["best_ask_price"])


# ---- auth ------------------------------------------------------------------------------------


async def test_auth_and_refresh(px: PaperExchange) -> None:
    c = await RpcClient.connect(px.ws_url)
    try:
        with pytest.raises(RpcFailed) as exc:
            await c.result("private/get_open_orders")
        assert exc.value.code == 13009
        tokens = await c.auth("bob", "bob-secret")
        assert tokens["token_type"] == "bearer" and tokens["expires_in"] > 0
        assert await c.result("private/get_open_orders") == []
        with pytest.raises(RpcFailed) as exc:
            await c.auth("bob", "wrong")  # auto-created accounts keep their first secret
        assert exc.value.code == 13004
        again = await c.result(
            "public/auth", grant_type="refresh_token", refresh_token=tokens["refresh_token"]
        )
        assert again["access_token"] != tokens["access_token"]
    finally:
        await c.close()


async def test_accounts_file_without_auto_create(tmp_path: Path) -> None:
    path = tmp_path / "accounts.json"
    path.write_text(
        json.dumps(
            {
                "accounts": {
                    "desk": {
                        "client_id": "desk-id",
                        "client_secret": "s3cret",
                        "tier": 1,
                        "balances": {"BTC": 2},
                    }
                }
            }
        )
    )
    async with PaperExchange(
        settings=settings(auto_create_accounts=False), accounts_file=path
    ) as px:
        c = await RpcClient.connect(px.ws_url)
        try:
            with pytest.raises(RpcFailed) as exc:
                await c.auth("stranger", "x")
            assert exc.value.code == 13004
            await c.auth("desk-id", "s3cret")
            summary = await c.result("private/get_account_summary", currency="BTC")
            assert summary["balance"] == 2 and summary["username"] == "desk"
        finally:
            await c.close()


# ---- HTTP ------------------------------------------------------------------------------------


async def test_http_get_post_and_auth(px: PaperExchange) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{px.http_url}/public/ticker", params={"instrument_name": PERP}) as r:
            body = await r.json()
            assert r.status == 200 and body["result"]["instrument_name"] == PERP
            assert body["testnet"] is True and body["usOut"] >= body["usIn"]
        async with http.get(f"{px.http_url}/private/get_positions") as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == 13009
        basic = base64.b64encode(b"carol:carol-secret").decode()
        async with http.get(
            f"{px.http_url}/private/buy",
            headers={"Authorization": f"Basic {basic}"},
            params={"instrument_name": PERP, "amount": "10", "type": "market", "label": "http-1"},
        ) as r:
            body = await r.json()
            assert body["result"]["order"]["label"] == "http-1"
        async with http.get(
            f"{px.http_url}/public/auth",
            params={
                "grant_type": "client_credentials",
                "client_id": "carol",
                "client_secret": "carol-secret",
            },
        ) as r:
            token = (await r.json())["result"]["access_token"]
        rpc = {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "private/get_position",
            "params": {"instrument_name": PERP},
        }
        async with http.post(
            f"{px.http_url}/private/get_position",
            json=rpc,
            headers={"Authorization": f"Bearer {token}"},
        ) as r:
            body = await r.json()
            assert body["id"] == 7 and body["result"]["size"] == 10
        async with http.post(
            px.http_url, json={"jsonrpc": "2.0", "id": 8, "method": "nope/x"}
        ) as r:
            body = await r.json()
            assert body["error"] == {"code": -32601, "message": "Method not found"}
        async with http.get(f"{px.http_url}/public/subscribe", params={"channels": PERP}) as r:
            assert (await r.json())["error"]["code"] == 10030


# ---- subscriptions ---------------------------------------------------------------------------


async def test_ticker_subscription(px: PaperExchange) -> None:
    c = await RpcClient.connect(px.ws_url)
    try:
        channels = [f"ticker.{PERP}.100ms", "ticker.NOPE.100ms"]
        assert await c.result("public/subscribe", channels=channels) == channels[:1]
        data = await c.notification(f"ticker.{PERP}.100ms")
        assert data["instrument_name"] == PERP and data["best_bid_price"] < data["best_ask_price"]
        # User channels need an authenticated connection.
        with pytest.raises(RpcFailed) as exc:
            await c.result("private/subscribe", channels=["user.orders.any.any.raw"])
        assert exc.value.code == 13009
        assert await c.result("public/unsubscribe", channels=channels[:1]) == channels[:1]
    finally:
        await c.close()


async def test_user_orders_and_trades_notifications(client: RpcClient) -> None:
    channels = [
        f"user.orders.{PERP}.raw",
        "user.orders.future.BTC.raw",
        "user.orders.any.any.100ms",
        f"user.trades.{PERP}.raw",
        "user.trades.any.BTC.100ms",
        f"user.changes.{PERP}.raw",
    ]
    assert await client.result("private/subscribe", channels=channels) == channels
    price = await best_ask(client)
    result = await client.result(
        "private/buy", instrument_name=PERP, amount=20, type="limit", price=price, label="n-1"
    )
    order_id = result["order"]["order_id"]
    got = {}
    for ch in channels:
        got[ch] = await client.notification(ch)
    assert got[f"user.orders.{PERP}.raw"]["order_id"] == order_id
    assert got[f"user.orders.{PERP}.raw"]["label"] == "n-1"
    assert got["user.orders.future.BTC.raw"]["order_state"] == "filled"
    assert got["user.orders.any.any.100ms"][0]["order_id"] == order_id
    assert got[f"user.trades.{PERP}.raw"][0]["order_id"] == order_id
    assert got["user.trades.any.BTC.100ms"][0]["amount"] == 20
    changes = got[f"user.changes.{PERP}.raw"]
    assert changes["instrument_name"] == PERP
    assert any(changes[k] for k in ("orders", "trades", "positions"))


async def test_book_and_portfolio_channels(client: RpcClient) -> None:
    channels = [f"book.{PERP}.100ms", "user.portfolio.btc"]
    assert await client.result("private/subscribe", channels=channels) == channels
    book = await client.notification(f"book.{PERP}.100ms")
    assert book["type"] == "snapshot" and book["bids"][0][0] == "new"
    assert book["bids"][0][1] < book["asks"][0][1]
    portfolio = await client.notification("user.portfolio.btc")
    assert portfolio["currency"] == "BTC" and portfolio["equity"] > 0


async def test_label_lookups(client: RpcClient) -> None:
    price = await best_ask(client)
    bid = price - 1000
    for label in ("L-1", "L-1", "L-2"):
        await client.result("private/buy", instrument_name=PERP, amount=10, price=bid, label=label)
    by_label = await client.result("private/get_order_state_by_label", currency="BTC", label="L-1")
    assert len(by_label) == 2 and {o["label"] for o in by_label} == {"L-1"}
    opened = await client.result("private/get_open_orders_by_label", currency="BTC", label="L-2")
    assert len(opened) == 1
    assert await client.result("private/cancel_by_label", label="L-1") == 2
    states = await client.result("private/get_order_state_by_label", currency="BTC", label="L-1")
    assert {o["order_state"] for o in states} == {"cancelled"}
    stats = await client.result("admin/get_stats")
    assert stats["orders_by_label"]["L-1"] == 2 and stats["orders_by_label"]["L-2"] == 1
    assert stats["duplicate_labels"] == {"L-1": 2}
    admin = await client.result("admin/get_orders_by_label", label="L-2")
    assert admin[0]["order_state"] == "open"
    assert await client.result("private/cancel_all") == 1


async def test_edit_cancel_and_errors_over_ws(client: RpcClient) -> None:
    price = await best_ask(client)
    placed = await client.result(
        "private/buy", instrument_name=PERP, amount=30, price=price - 500, label="e-1"
    )
    oid = placed["order"]["order_id"]
    edited = await client.result("private/edit", order_id=oid, amount=20, price=price - 400)
    assert edited["order"]["replaced"] is True and edited["order"]["amount"] == 20
    cancelled = await client.result("private/cancel", order_id=oid)
    assert cancelled["order_state"] == "cancelled"
    for method, params, code in [
        ("private/cancel", {"order_id": oid}, 11044),
        ("private/cancel", {"order_id": "BTC-1"}, 10004),
        ("private/buy", {"instrument_name": PERP, "amount": 15, "price": price}, -32602),
        ("private/buy", {"instrument_name": PERP, "amount": 10, "price": price + 0.25}, 10043),
        ("private/buy", {"instrument_name": "BTC-NOPE", "amount": 10, "price": 1}, -32602),
        ("private/buy", {"instrument_name": PERP, "amount": "ten"}, -32602),
        (
            "private/sell",
            {"instrument_name": PERP, "amount": 10, "price": 1.0, "post_only": True},
            10005,
        ),
        ("public/nope", {}, -32601),
    ]:
        response = await client.call(method, **params)
        assert response["error"]["code"] == code, (method, params, response)


# ---- heartbeats and rate limits --------------------------------------------------------------


async def test_heartbeat_test_request_and_disconnect_on_silence(px: PaperExchange) -> None:
    c = await RpcClient.connect(px.ws_url)
    try:
        with pytest.raises(RpcFailed):
            await c.result("public/set_heartbeat", interval=0.05)  # below the minimum
        assert await c.result("public/set_heartbeat", interval=0.5) == "ok"
        for _ in range(3):
            msg = await c.wait_for(lambda m: m.get("method") == "heartbeat", 2)
            assert msg["params"] == {"type": "test_request"}
            await c.result("public/test")
        assert not c.closed.is_set()
        # Stop answering: the next test_request goes unanswered and the session ends.
        await asyncio.wait_for(c.closed.wait(), 2)
    finally:
        await c.close()


async def test_matching_engine_limit_answers_10028_and_closes(px: PaperExchange) -> None:
    c = await RpcClient.connect(px.ws_url)
    try:
        await c.auth("greedy", "x")  # tier 4: burst 20
        futures = [
            await c.send("private/buy", instrument_name=PERP, amount=10, price=1000.0)
            for _ in range(30)
        ]
        results = await asyncio.gather(*futures, return_exceptions=True)
        answered = [r for r in results if isinstance(r, dict)]
        codes = [r.get("error", {}).get("code") for r in answered]
        assert codes.count(None) == 20
        assert codes[20] == 10028
        assert answered[20]["error"]["message"] == "too_many_requests"
        await asyncio.wait_for(c.closed.wait(), 2)
    finally:
        await c.close()


async def test_credit_pool_exhaustion(px: PaperExchange) -> None:
    c = await RpcClient.connect(px.ws_url)
    try:
        await c.auth("chatty", "x")
        futures = [await c.send("private/get_positions") for _ in range(150)]
        results = await asyncio.gather(*futures, return_exceptions=True)
        codes = [r.get("error", {}).get("code") for r in results if isinstance(r, dict)]
        assert 10028 in codes and codes.count(None) >= 100
        await asyncio.wait_for(c.closed.wait(), 2)
    finally:
        await c.close()


async def test_rate_limits_can_be_switched_off() -> None:
    async with PaperExchange(settings=settings(), rate_limits=False) as px:
        c = await RpcClient.connect(px.ws_url)
        try:
            await c.auth("fast", "x")
            futures = [
                await c.send("private/buy", instrument_name=PERP, amount=10, price=1000.0)
                for _ in range(100)
            ]
            results = await asyncio.gather(*futures)
            assert all("result" in r for r in results)
        finally:
            await c.close()


# ---- fault knobs -----------------------------------------------------------------------------


async def test_fault_reject_and_rate_limit_fraction(client: RpcClient) -> None:
    await client.result("admin/set_faults", reject_fraction=1.0)
    r = await client.call("private/buy", instrument_name=PERP, amount=10, price=1000.0)
    assert r["error"]["code"] == 10047
    await client.result("admin/set_faults", reject_fraction=0.0, rate_limit_fraction=1.0)
    r = await client.call("private/buy", instrument_name=PERP, amount=10, price=1000.0)
    assert r["error"]["code"] == 10028
    assert not client.closed.is_set()  # injected 10028 keeps the session
    faults = await client.result("admin/set_faults")  # no params: reset
    assert faults["rate_limit_fraction"] == 0 and faults["reject_fraction"] == 0
    r = await client.call("private/buy", instrument_name=PERP, amount=10, price=1000.0)
    assert "result" in r


async def test_fault_latency_and_delayed_reply(client: RpcClient) -> None:
    await client.result("admin/set_faults", latency_ms=150)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await client.result("public/get_time")
    assert loop.time() - t0 >= 0.14
    await client.result("admin/set_faults", latency_ms=0, delay_fraction=1.0, delay_s=0.3)
    await client.result("private/subscribe", channels=["user.orders.any.any.raw"])
    price = await best_ask(client)
    fut = await client.send(
        "private/buy", instrument_name=PERP, amount=10, price=price, label="late"
    )
    note = await client.notification("user.orders.any.any.raw", 1)
    assert note["label"] == "late" and not fut.done()  # executed, reply still held back
    reply = await asyncio.wait_for(fut, 2)
    assert reply["result"]["order"]["order_id"] == note["order_id"]
    # Counted for chaos reports: one per delayed reply (subscribe, ticker, buy).
    fired = (await client.result("admin/get_stats", include_labels=False))["faults_fired"]
    assert fired["delayed"] == 3
    await client.result("admin/set_faults")


async def test_reply_and_notification_order(client: RpcClient) -> None:
    await client.result("private/subscribe", channels=["user.orders.any.any.raw"])
    price = await best_ask(client)
    for reply_first in (0, 1):
        await client.result("admin/set_faults", reply_first=reply_first)
        client.arrivals.clear()
        await client.result("private/buy", instrument_name=PERP, amount=10, price=price)
        await client.notification("user.orders.any.any.raw")
        kinds = [kind for kind, _ in client.arrivals]
        assert kinds == (["reply", "notification"] if reply_first else ["notification", "reply"])
    await client.result("admin/set_faults")


async def test_fault_drop_every(px: PaperExchange) -> None:
    c = await RpcClient.connect(px.ws_url)
    try:
        await c.result("admin/set_faults", drop_every_s=0.2)
        await asyncio.wait_for(c.closed.wait(), 2)
    finally:
        await c.close()
        px.faults.update({})


async def test_faults_from_constructor() -> None:
    async with PaperExchange(settings=settings(), faults={"reject_fraction": 1.0}) as px:
        c = await RpcClient.connect(px.ws_url)
        try:
            await c.auth("f", "x")
            r = await c.call("private/buy", instrument_name=PERP, amount=10, price=1000.0)
            assert r["error"]["code"] == 10047
        finally:
            await c.close()


async def test_admin_set_position_and_cancel_on_disconnect(px: PaperExchange) -> None:
    c = await RpcClient.connect(px.ws_url)
    await c.auth("dave", "x")
    pos = await c.result("admin/set_position", instrument_name=PERP, size=-500)
    assert pos["size"] == -500 and pos["direction"] == "sell"
    assert (await c.result("private/get_position", instrument_name=PERP))["size"] == -500
    assert await c.result("private/enable_cancel_on_disconnect") == "ok"
    await c.result("private/buy", instrument_name=PERP, amount=10, price=1000.0)
    await c.close()
    other = await RpcClient.connect(px.ws_url)
    try:
        await other.auth("dave", "x")
        for _ in range(50):
            if not await other.result("private/get_open_orders"):
                break
            await asyncio.sleep(0.02)
        assert await other.result("private/get_open_orders") == []
    finally:
        await other.close()
