"""A minimal JSON-RPC WebSocket client for tests of (and against) the paper exchange.

Not the OMS's Deribit client: it does no reconnects or pacing, so tests see exactly what
the exchange sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson


class RpcFailed(Exception):
    """An error response; ``code`` and ``data`` as Deribit sent them."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')} {error.get('message')}")
        self.code: int = error.get("code", 0)
        self.data: Any = error.get("data")


class RpcClient:
    """Connect with :meth:`connect`; ``call`` returns the whole response, ``result`` only
    the result (raising :class:`RpcFailed` on an error). Everything without an ``id``
    (subscriptions, heartbeats) lands in ``inbox``."""

    def __init__(self) -> None:
        self._http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.inbox: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()
        self.closed = asyncio.Event()
        self.arrivals: list[tuple[str, Any]] = []  # ("reply", id) / ("notification", channel)
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, url: str) -> RpcClient:
        client = cls()
        client._http = aiohttp.ClientSession()
        client.ws = await client._http.ws_connect(url, autoping=True)
        client._reader = asyncio.get_running_loop().create_task(client._read())
        return client

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = orjson.loads(msg.data)
                req_id = data.get("id")
                if req_id is not None and req_id in self._pending:
                    self.arrivals.append(("reply", req_id))
                    fut = self._pending.pop(req_id)
                    if not fut.done():
                        fut.set_result(data)
                else:
                    params = data.get("params") or {}
                    self.arrivals.append(("notification", params.get("channel")))
                    self.inbox.append(data)
                    self._arrived.set()
        finally:
            self.closed.set()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("connection closed"))

    async def send(self, method: str, **params: Any) -> asyncio.Future[dict[str, Any]]:
        """Send a request; returns a future of its response."""
        assert self.ws is not None
        req_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        body = {"jsonrpc": "2.0", "id": req_id, "method": method, "params": params}
        await self.ws.send_str(orjson.dumps(body).decode())
        return fut

    async def call(self, method: str, wait_s: float = 10.0, **params: Any) -> dict[str, Any]:
        fut = await self.send(method, **params)
        return await asyncio.wait_for(fut, wait_s)

    async def result(self, method: str, **params: Any) -> Any:
        response = await self.call(method, **params)
        if "error" in response:
            raise RpcFailed(response["error"])
        return response["result"]

    async def auth(self, client_id: str, client_secret: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.result(
            "public/auth", grant_type="client_credentials",
            client_id=client_id, client_secret=client_secret,
        )
        return result

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], wait_s: float = 5.0
    ) -> dict[str, Any]:
        """Take the oldest message (subscription, heartbeat) matching ``predicate`` out of
        the inbox, waiting for one if needed; other messages stay."""
        async with asyncio.timeout(wait_s):
            while True:
                for i, msg in enumerate(self.inbox):
                    if predicate(msg):
                        del self.inbox[i]
                        return msg
                self._arrived.clear()
                await self._arrived.wait()

    async def notification(self, channel: str, wait_s: float = 5.0) -> Any:
        """The ``data`` of the next notification on ``channel``."""
        msg = await self.wait_for(
            lambda m: m.get("method") == "subscription" and m["params"]["channel"] == channel,
            wait_s,
        )
        return msg["params"]["data"]

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._http is not None:
            await self._http.close()
