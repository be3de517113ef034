"""DeribitHttpClient against a small aiohttp server speaking Deribit's HTTP JSON-RPC."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp import web

from oms.exchange.deribit.http import DeribitHttpClient, http_base_url
from oms.exchange.errors import (
    ConnectionLost,
    ExchangeBusy,
    NotEnoughFunds,
    Unauthorized,
)
from oms.secrets import Credentials

SECRET = "http-secret"


class FakeHttpDeribit:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any], str | None]] = []
        self.valid_tokens: set[str] = set()
        self.n = 0
        self.fail_next_500 = False
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        msg = orjson.loads(await request.read())
        assert msg["method"] == method and msg["jsonrpc"] == "2.0"
        params = msg["params"]
        auth = request.headers.get("Authorization")
        self.seen.append((method, params, auth))
        if self.fail_next_500:
            self.fail_next_500 = False
            return web.Response(status=502, text="bad gateway")

        def error(code: int, message: str) -> web.Response:
            body = {"jsonrpc": "2.0", "id": msg["id"], "error": {"code": code, "message": message}}
            return web.Response(
                status=400, body=orjson.dumps(body), content_type="application/json"
            )

        def ok(result: Any) -> web.Response:
            body = {"jsonrpc": "2.0", "id": msg["id"], "result": result}
            return web.Response(body=orjson.dumps(body), content_type="application/json")

        if method == "public/auth":
            if (
                params.get("client_secret") != SECRET
                and params.get("grant_type") != "refresh_token"
            ):
                return error(13004, "invalid_credentials")
            self.n += 1
            token = f"tok-{self.n}"
            self.valid_tokens.add(token)
            return ok({"access_token": token, "refresh_token": f"r-{self.n}", "expires_in": 900})
        if method.startswith("private/"):
            if not auth or auth.removeprefix("Bearer ") not in self.valid_tokens:
                return error(13009, "unauthorized")
            if method == "private/buy":
                return error(10009, "not_enough_funds")
            return ok([])
        if method == "public/get_time":
            return ok(123)
        return error(-32601, "Method not found")


@pytest.fixture
async def http_srv() -> Any:
    fake = FakeHttpDeribit()
    app = web.Application()
    app.router.add_post("/api/v2/{method:.+}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.url = f"ws://127.0.0.1:{port}/ws/api/v2"
    yield fake
    await runner.cleanup()


def test_base_url_from_ws_url() -> None:
    assert http_base_url("wss://www.deribit.com/ws/api/v2") == "https://www.deribit.com/api/v2"
    assert http_base_url("ws://127.0.0.1:8765/ws/api/v2") == "http://127.0.0.1:8765/api/v2"
    assert http_base_url("https://test.deribit.com") == "https://test.deribit.com/api/v2"


async def test_public_and_private_calls(http_srv: Any) -> None:
    async with DeribitHttpClient(http_srv.url, Credentials("id", SECRET)) as c:
        assert await c.call("public/get_time") == 123
        assert await c.call("private/get_open_orders") == []
        assert await c.call("private/get_positions", {"currency": "BTC"}) == []
        with pytest.raises(NotEnoughFunds):
            await c.call("private/buy", {"instrument_name": "BTC-PERPETUAL", "amount": 10})
    methods = [m for m, _, _ in http_srv.seen]
    assert methods.count("public/auth") == 1
    assert http_srv.seen[0][2] is None  # public: no token
    assert all(a == "Bearer tok-1" for m, _, a in http_srv.seen if m.startswith("private/"))


async def test_expired_token_relogs_once(http_srv: Any) -> None:
    async with DeribitHttpClient(http_srv.url, Credentials("id", SECRET)) as c:
        await c.call("private/get_open_orders")
        http_srv.valid_tokens.clear()
        assert await c.call("private/get_open_orders") == []
    assert [m for m, _, _ in http_srv.seen].count("public/auth") == 2


async def test_bad_credentials_and_server_errors(http_srv: Any) -> None:
    async with DeribitHttpClient(http_srv.url, Credentials("id", "wrong")) as c:
        with pytest.raises(Unauthorized) as info:
            await c.call("private/get_open_orders")
        assert "wrong" not in str(info.value) and "wrong" not in repr(c)
        http_srv.fail_next_500 = True
        with pytest.raises(ExchangeBusy) as busy:
            await c.call("public/get_time")
        assert busy.value.retryable and busy.value.code == 502


async def test_connection_refused_is_not_sent() -> None:
    async with DeribitHttpClient("ws://127.0.0.1:9/ws/api/v2") as c:
        with pytest.raises(ConnectionLost) as info:
            await c.call("public/get_time")
    assert not info.value.outcome_unknown
