"""Deribit's two signature schemes on the paper exchange: the HTTP ``deri-hmac-sha256``
Authorization header and the ``client_signature`` grant of ``public/auth`` (WebSocket and
HTTP), with Deribit's answers to a bad signature, a stale timestamp, a reused nonce and an
unknown client id. The signatures here are computed with :mod:`hmac` directly, not with the
exchange's own helpers, so both sides are checked against the documented formula."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from oms.exchange.deribit import DeribitClient
from oms.exchange.deribit.http import DeribitHttpClient
from oms.exchange.errors import Unauthorized
from oms.exchange.paper import PaperExchange
from oms.exchange.paper.signatures import NonceWindow
from oms.exchange.paper.testing import RpcClient, RpcFailed
from oms.secrets import Credentials
from oms.settings import ExchangeSettings, PaperExchangeSettings, Settings

CLIENT_ID, SECRET = "signer-id", "signer-secret-never-sent"
SUMMARY = "/api/v2/private/get_account_summary?currency=BTC"


def sign(timestamp: int | str, nonce: str, data: str, secret: str = SECRET) -> str:
    return hmac.new(
        secret.encode(), f"{timestamp}\n{nonce}\n{data}".encode(), hashlib.sha256
    ).hexdigest()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def header(
    method: str, uri: str, body: str = "", *, ts: int | None = None, nonce: str = "n-1",
    client_id: str = CLIENT_ID, signed_body: str | None = None,
) -> dict[str, str]:
    ts = now_ms() if ts is None else ts
    data = f"{method}\n{uri}\n{body if signed_body is None else signed_body}\n"
    sig = sign(ts, nonce, data)
    return {"Authorization": f"deri-hmac-sha256 id={client_id},ts={ts},sig={sig},nonce={nonce}"}


@pytest.fixture
async def px() -> AsyncIterator[PaperExchange]:
    async with PaperExchange(settings=PaperExchangeSettings(port=0), rate_limits=False) as ex:
        ex.accounts.add("signer", CLIENT_ID, SECRET)
        yield ex


@pytest.fixture
async def http(px: PaperExchange) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{px.port}") as session:
        yield session


async def get(http: aiohttp.ClientSession, uri: str, headers: dict[str, str]) -> dict[str, Any]:
    async with http.get(uri, headers=headers) as resp:
        body: dict[str, Any] = orjson.loads(await resp.read())
        assert resp.status == (400 if "error" in body else 200)
        return body


async def post(
    http: aiohttp.ClientSession, uri: str, body: str, headers: dict[str, str]
) -> dict[str, Any]:
    async with http.post(
        uri, data=body, headers={**headers, "Content-Type": "application/json"}
    ) as resp:
        out: dict[str, Any] = orjson.loads(await resp.read())
        return out


def error(response: dict[str, Any]) -> tuple[int, str, str | None]:
    err = response["error"]
    return err["code"], err["message"], (err.get("data") or {}).get("reason")


# ---- HTTP: Authorization: deri-hmac-sha256 -----------------------------------------------


async def test_http_signature_get_and_post(http: aiohttp.ClientSession) -> None:
    ok = await get(http, SUMMARY, header("GET", SUMMARY, nonce="get-1"))
    assert ok["result"]["currency"] == "BTC" and ok["result"]["username"] == "signer"
    body = orjson.dumps(
        {"jsonrpc": "2.0", "id": 7, "method": "private/get_positions", "params": {}}
    ).decode()
    uri = "/api/v2/private/get_positions"
    posted = await post(http, uri, body, header("POST", uri, body, nonce="post-1"))
    assert posted["id"] == 7 and posted["result"] == []


async def test_http_signature_over_the_wrong_body(http: aiohttp.ClientSession) -> None:
    uri = "/api/v2/private/get_positions"
    sent = orjson.dumps({"jsonrpc": "2.0", "id": 3, "method": "private/get_positions"}).decode()
    signed = sent.replace('"id":3', '"id":4')
    refused = await post(http, uri, sent, header("POST", uri, sent, signed_body=signed))
    assert refused["id"] == 3
    assert error(refused) == (13009, "unauthorized", "invalid signature")
    # The query is part of what is signed, too.
    signed_for_eth = header("GET", SUMMARY.replace("BTC", "ETH"), nonce="q-1")
    assert error(await get(http, SUMMARY, signed_for_eth)) == (
        13009, "unauthorized", "invalid signature",
    )


async def test_http_signature_with_a_stale_timestamp(http: aiohttp.ClientSession) -> None:
    stale = header("GET", SUMMARY, ts=now_ms() - 60_000, nonce="old-1")
    assert error(await get(http, SUMMARY, stale)) == (13009, "unauthorized", "timestamp expired")
    future = header("GET", SUMMARY, ts=now_ms() + 120_000, nonce="future-1")
    assert error(await get(http, SUMMARY, future))[:2] == (13009, "unauthorized")
    fresh = header("GET", SUMMARY, ts=now_ms() - 50_000, nonce="recent-1")
    assert "result" in await get(http, SUMMARY, fresh)


async def test_http_signature_with_a_reused_nonce(http: aiohttp.ClientSession) -> None:
    first = header("GET", SUMMARY, nonce="once")
    assert "result" in await get(http, SUMMARY, first)
    # A replay of the very same request, and a new request with the same nonce.
    assert error(await get(http, SUMMARY, first)) == (13009, "unauthorized", "nonce already used")
    eth = SUMMARY.replace("BTC", "ETH")
    assert error(await get(http, eth, header("GET", eth, nonce="once"))) == (
        13009, "unauthorized", "nonce already used",
    )
    assert "result" in await get(http, eth, header("GET", eth, nonce="twice"))


async def test_http_signature_with_an_unknown_client_id(http: aiohttp.ClientSession) -> None:
    unknown = header("GET", SUMMARY, client_id="nobody")
    assert error(await get(http, SUMMARY, unknown)) == (13004, "invalid_credentials", None)
    garbled = {"Authorization": "deri-hmac-sha256 id=signer-id,nonce=x"}
    assert error(await get(http, SUMMARY, garbled))[:2] == (13009, "unauthorized")


def test_nonces_are_forgotten_once_their_timestamp_expired() -> None:
    window = NonceWindow(validity_ms=1_000)
    assert window.use("a", "n", 10_000, 10_000)
    assert not window.use("a", "n", 10_500, 10_500)
    assert window.use("b", "n", 10_500, 10_500)  # per client id
    assert window.use("a", "n", 11_000, 11_000)  # the first use's timestamp has expired
    assert len(window) == 2


# ---- public/auth grant_type=client_signature --------------------------------------------


def signature_params(
    *, ts: int | None = None, nonce: str = "ws-1", data: str = "", client_id: str = CLIENT_ID,
    secret: str = SECRET,
) -> dict[str, Any]:
    ts = now_ms() if ts is None else ts
    return {
        "grant_type": "client_signature", "client_id": client_id, "timestamp": ts,
        "nonce": nonce, "data": data, "signature": sign(ts, nonce, data, secret),
    }


async def test_client_signature_over_websocket(px: PaperExchange) -> None:
    c = await RpcClient.connect(px.ws_url)
    try:
        with pytest.raises(RpcFailed) as info:
            await c.result("private/get_positions")
        assert info.value.code == 13009
        result = await c.result("public/auth", **signature_params(nonce="ws-a", data="hello"))
        assert result["token_type"] == "bearer" and result["access_token"]
        assert await c.result("private/get_positions") == []

        bad: list[tuple[dict[str, Any], tuple[int, str | None]]] = [
            (signature_params(nonce="ws-b", secret="guess"), (13009, "invalid signature")),
            ({**signature_params(nonce="ws-c"), "data": "tampered"}, (13009, "invalid signature")),
            (signature_params(ts=now_ms() - 60_000, nonce="ws-d"), (13009, "timestamp expired")),
            (signature_params(nonce="ws-a"), (13009, "nonce already used")),
            (signature_params(client_id="nobody", nonce="ws-e"), (13004, None)),
        ]
        for params, (code, reason) in bad:
            response = await c.call("public/auth", **params)
            err = response["error"]
            assert (err["code"], (err.get("data") or {}).get("reason")) == (code, reason)
            assert err["message"] == {13009: "unauthorized", 13004: "invalid_credentials"}[code]
    finally:
        await c.close()


async def test_client_signature_over_http(http: aiohttp.ClientSession) -> None:
    params = signature_params(nonce="http-auth")
    query = "&".join(f"{k}={v}" for k, v in params.items())
    auth = await get(http, f"/api/v2/public/auth?{query}", {})
    token = auth["result"]["access_token"]
    positions = await get(
        http, "/api/v2/private/get_positions", {"Authorization": f"Bearer {token}"}
    )
    assert positions["result"] == []
    again = await get(http, f"/api/v2/public/auth?{query}", {})
    assert error(again) == (13009, "unauthorized", "nonce already used")


async def test_oms_clients_log_in_with_a_client_signature(
    px: PaperExchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert ExchangeSettings().auth_grant == "client_credentials"
    monkeypatch.setenv("OMS_EXCHANGE__AUTH_GRANT", "client_signature")
    settings = Settings().exchange.model_copy(update={"request_timeout": 5.0})
    assert settings.auth_grant == "client_signature"
    creds = Credentials(CLIENT_ID, SECRET)
    async with DeribitClient(px.ws_url, creds, settings=settings) as ws:
        assert await ws.call("private/get_positions", {"currency": "BTC"}) == []
    async with DeribitHttpClient(px.ws_url, creds, settings=settings) as rest:
        summary = await rest.call("private/get_account_summary", {"currency": "BTC"})
        assert summary["username"] == "signer"
    wrong = DeribitClient(px.ws_url, Credentials(CLIENT_ID, "wrong"), settings=settings)
    with pytest.raises(Unauthorized) as info:
        await wrong.connect()
    assert info.value.code == 13009
    await wrong.close()
