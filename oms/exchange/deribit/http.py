"""JSON-RPC over HTTP (``POST {base}/api/v2/{method}``): for one-off scripts and fallbacks.

WebSocket is the main transport (subscriptions, heartbeat and cancel-on-disconnect need it). Over
HTTP, private calls carry ``Authorization: Bearer <access_token>`` (docs.deribit.com,
"Authentication"); the request body is the same JSON-RPC envelope as over WebSocket, so secrets
never travel in a URL where proxies and access logs would keep them.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson

from oms.exchange.deribit.auth import AUTH_METHOD, AuthState, login_params
from oms.exchange.deribit.rate_limit import RateLimitConfig, RateLimiter
from oms.exchange.errors import (
    CONNECTION_LOST,
    REQUEST_TIMEOUT,
    ConnectionLost,
    ExchangeBusy,
    ExchangeError,
    RateLimited,
    RequestTimeout,
    Unauthorized,
    from_rpc_error,
)
from oms.secrets import Credentials
from oms.settings import ExchangeSettings


def http_base_url(url: str) -> str:
    """``ws[s]://host/ws/api/v2`` (or an http URL) -> ``http[s]://host/api/v2``."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/")
    if path.endswith("/ws/api/v2"):
        path = path[: -len("/ws/api/v2")]
    if not path.endswith("/api/v2"):
        path += "/api/v2"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


class DeribitHttpClient:
    """Request/response Deribit client over HTTP; same ``call`` contract as the WS client."""

    def __init__(
        self,
        url: str,
        credentials: Credentials | None = None,
        *,
        settings: ExchangeSettings | None = None,
        rate_limiter: RateLimiter | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        """``url`` may be the WebSocket URL of the same exchange; the HTTP base is derived."""
        self.settings = settings or ExchangeSettings()
        self.base_url = http_base_url(url)
        self._credentials = credentials
        self._limiter = rate_limiter or RateLimiter(RateLimitConfig.from_settings(self.settings))
        self._session = session
        self._own_session = session is None
        self._auth = AuthState()
        self._auth_header: dict[str, str] = {}
        self._auth_lock = asyncio.Lock()
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"DeribitHttpClient(base_url={self.base_url!r})"

    async def __aenter__(self) -> DeribitHttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session if this client created it."""
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Send one request and return its ``result``; raises :class:`ExchangeError`.

        A private call rejected with ``unauthorized`` (never executed) logs in again and is sent
        once more; nothing else is retried.
        """
        private = method.startswith("private/")
        if private:
            await self._ensure_token()
        await self._limiter.acquire(method)
        try:
            return await self._post(method, params, self._auth_header if private else None)
        except Unauthorized:
            if not private or self._credentials is None:
                raise
            self._auth.clear()
            await self._ensure_token()
            await self._limiter.acquire(method)
            return await self._post(method, params, self._auth_header)

    async def _ensure_token(self) -> None:
        if self._credentials is None:
            return
        async with self._auth_lock:
            if self._auth.authenticated and self._auth.seconds_until_refresh() > 0:
                return
            result = None
            if self._auth.authenticated and self._auth.has_refresh_token:
                try:
                    self._limiter.debit(AUTH_METHOD)
                    result = await self._post(AUTH_METHOD, self._auth.refresh_params(), None)
                except Unauthorized:
                    result = None
            if result is None:
                self._limiter.debit(AUTH_METHOD)
                params = login_params(self._credentials, self.settings.auth_grant)
                result = await self._post(AUTH_METHOD, params, None)
            self._auth.update(result)
            self._auth_header = {"Authorization": f"Bearer {result['access_token']}"}

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.request_timeout),
                json_serialize=lambda obj: orjson.dumps(obj).decode(),
            )
            self._own_session = True
        return self._session

    async def _post(
        self, method: str, params: dict[str, Any] | None, headers: dict[str, str] | None
    ) -> Any:
        body = orjson.dumps(
            {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params or {}}
        )
        all_headers = {"Content-Type": "application/json"}
        if headers:
            all_headers.update(headers)
        try:
            async with self._http().post(
                f"{self.base_url}/{method}", data=body, headers=all_headers
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except aiohttp.ClientConnectorError:
            err = ConnectionLost(CONNECTION_LOST, "cannot connect", method=method)
            err.outcome_unknown = False  # the request never left
            raise err from None
        except aiohttp.ClientError as exc:
            raise ConnectionLost(CONNECTION_LOST, type(exc).__name__, method=method) from None
        except TimeoutError:
            raise RequestTimeout(REQUEST_TIMEOUT, "no reply in time", method=method) from None
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            msg = None
        if isinstance(msg, dict):
            if "error" in msg and msg["error"] is not None:
                raise from_rpc_error(msg["error"], method=method)
            if "result" in msg:
                return msg["result"]
        if status == 429:
            raise RateLimited(10028, f"HTTP {status}", method=method)
        if status >= 500:
            raise ExchangeBusy(status, f"HTTP {status}", reason="http_server_error", method=method)
        raise ExchangeError(status, f"HTTP {status}", reason="http_error", method=method)
