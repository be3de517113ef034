"""A tiny scriptable Deribit wire-protocol server for fault-injection tests.

It is a real ``websockets`` server on 127.0.0.1 that speaks JSON-RPC 2.0 like Deribit
(``public/auth``, ``public/set_heartbeat``, ``public/test``, subscriptions, ``private/*`` gated by
auth), and lets a test drop connections, withhold replies, inject error codes, push notifications
and send heartbeat ``test_request``s. It is not an exchange: the paper exchange is
(:mod:`oms.exchange.paper`).
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from oms.exchange.deribit.auth import signature


class FakeRpcError(Exception):
    """Raise from a fake handler to answer with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.data = data


@dataclass
class FakeConnection:
    """Server-side state of one client connection."""

    ws: ServerConnection
    index: int
    authenticated: bool = False
    heartbeat_interval: float | None = None
    channels: set[str] = field(default_factory=set)


@dataclass
class Received:
    """A request as the server saw it."""

    conn: int
    method: str
    params: dict[str, Any]
    at: float
    id: Any


FakeHandler = Callable[[FakeConnection, dict[str, Any]], Any]


class FakeDeribit:
    """``async with FakeDeribit(accounts={"id": "secret"}) as srv: ... srv.url``."""

    def __init__(self, accounts: dict[str, str] | None = None, *, token_ttl: int = 900) -> None:
        self.accounts = accounts or {}
        self.token_ttl = token_ttl
        self.connections: list[FakeConnection] = []
        self.received: list[Received] = []
        self.handlers: dict[str, FakeHandler] = {}
        # method -> (code, message): answer every call with this error.
        self.errors: dict[str, tuple[int, str]] = {}
        # methods whose requests are swallowed without a reply (timeouts, in-flight drops).
        self.silent: set[str] = set()
        self.connected = asyncio.Event()
        self._server: Server | None = None
        self._tokens = itertools.count(1)
        self._refresh_tokens: set[str] = set()
        self.url = ""

    async def __aenter__(self) -> FakeDeribit:
        self._server = await serve(self._serve, "127.0.0.1", 0, compression=None)
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/ws/api/v2"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    # test controls

    @property
    def live(self) -> list[FakeConnection]:
        """Open connections."""
        return [c for c in self.connections if c.ws.state.name == "OPEN"]

    def calls(self, method: str) -> list[Received]:
        """Requests received for ``method``, in order."""
        return [r for r in self.received if r.method == method]

    async def drop_all(self) -> None:
        """Close every connection abruptly from the server side."""
        for conn in self.live:
            conn.ws.transport.abort()
        self.connected.clear()

    async def push(self, channel: str, data: Any) -> int:
        """Send a subscription notification to every connection subscribed to ``channel``."""
        frame = orjson.dumps(
            {
                "jsonrpc": "2.0",
                "method": "subscription",
                "params": {"channel": channel, "data": data},
            }
        )
        sent = 0
        for conn in self.live:
            if channel in conn.channels:
                await conn.ws.send(frame, text=True)
                sent += 1
        return sent

    async def test_request(self) -> None:
        """Send a heartbeat ``test_request`` on every connection."""
        frame = orjson.dumps(
            {"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "test_request"}}
        )
        for conn in self.live:
            await conn.ws.send(frame, text=True)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Poll until ``predicate()`` holds (test helper)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not reached")
            await asyncio.sleep(0.005)

    # protocol

    async def _serve(self, ws: ServerConnection) -> None:
        conn = FakeConnection(ws, len(self.connections))
        self.connections.append(conn)
        self.connected.set()
        try:
            async for raw in ws:
                msg = orjson.loads(raw)
                method = msg.get("method", "")
                params = msg.get("params") or {}
                self.received.append(
                    Received(conn.index, method, params, time.monotonic(), msg.get("id"))
                )
                if method in self.silent:
                    continue
                reply: dict[str, Any] = {"jsonrpc": "2.0", "id": msg.get("id")}
                try:
                    reply["result"] = self._dispatch(conn, method, params)
                except FakeRpcError as exc:
                    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
                    if exc.data is not None:
                        error["data"] = exc.data
                    reply["error"] = error
                await ws.send(orjson.dumps(reply), text=True)
        except ConnectionClosed:
            pass

    def _dispatch(self, conn: FakeConnection, method: str, params: dict[str, Any]) -> Any:
        if method in self.errors:
            code, message = self.errors[method]
            raise FakeRpcError(code, message)
        if method in self.handlers:
            return self.handlers[method](conn, params)
        if method == "public/auth":
            return self._auth(conn, params)
        if method.startswith("private/") and not conn.authenticated:
            raise FakeRpcError(13009, "unauthorized")
        if method == "public/set_heartbeat":
            if float(params.get("interval", 0)) < 10:
                raise FakeRpcError(-32602, "Invalid params")
            conn.heartbeat_interval = float(params["interval"])
            return "ok"
        if method == "public/test":
            return {"version": "fake"}
        if method == "public/get_time":
            return int(time.time() * 1000)
        if method in ("public/subscribe", "private/subscribe"):
            channels = [c for c in params.get("channels", []) if not c.startswith("bad.")]
            conn.channels.update(channels)
            return channels
        if method in ("public/unsubscribe", "private/unsubscribe"):
            conn.channels.difference_update(params.get("channels", []))
            return list(params.get("channels", []))
        if method in ("private/buy", "private/sell"):
            return {"order": {"order_id": f"o-{len(self.received)}", **params}, "trades": []}
        raise FakeRpcError(-32601, "Method not found")

    def _auth(self, conn: FakeConnection, params: dict[str, Any]) -> dict[str, Any]:
        grant = params.get("grant_type")
        if grant == "client_credentials":
            if self.accounts.get(params.get("client_id", "")) != params.get("client_secret"):
                raise FakeRpcError(13004, "invalid_credentials")
        elif grant == "client_signature":
            secret = self.accounts.get(params.get("client_id", ""))
            if secret is None:
                raise FakeRpcError(13004, "invalid_credentials")
            expected = signature(
                secret, params.get("timestamp", ""), params.get("nonce", ""),
                params.get("data", ""),
            )
            if not hmac.compare_digest(expected, str(params.get("signature", ""))):
                raise FakeRpcError(13009, "unauthorized")
        elif grant == "refresh_token":
            if params.get("refresh_token") not in self._refresh_tokens:
                raise FakeRpcError(13009, "unauthorized")
        else:
            raise FakeRpcError(-32602, "Invalid params")
        conn.authenticated = True
        n = next(self._tokens)
        refresh = f"refresh-{n}"
        self._refresh_tokens.add(refresh)
        return {
            "access_token": f"access-{n}",
            "refresh_token": refresh,
            "expires_in": self.token_ttl,
            "scope": "connection trade:read_write",
            "token_type": "bearer",
        }
