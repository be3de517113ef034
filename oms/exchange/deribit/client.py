"""Deribit JSON-RPC 2.0 client over WebSocket: one connection, one reader task, many callers.

Works unchanged against www/test.deribit.com and the local paper exchange. Hot-path rules: plain
dicts in and out, orjson, one future + one timer per request, no per-message task creation.

Reconnect policy: in-flight requests fail with :class:`ConnectionLost` (``outcome_unknown``) and
are never resent; the client re-authenticates, re-arms the heartbeat, resubscribes, and then runs
``on_reconnect`` so the owner can reconcile orders by label.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from oms.backoff import Backoff
from oms.exchange.deribit import transport
from oms.exchange.deribit.auth import AUTH_METHOD, AuthState, login_params
from oms.exchange.deribit.rate_limit import RateLimitConfig, RateLimiter
from oms.exchange.errors import (
    CLIENT_RATE_LIMITED,
    CONNECTION_LOST,
    REQUEST_TIMEOUT,
    ConnectionLost,
    ExchangeError,
    RateLimited,
    RequestTimeout,
    from_rpc_error,
)
from oms.secrets import Credentials
from oms.settings import ExchangeSettings

log = structlog.get_logger(__name__)

Handler = Callable[[str, Any], Any]
ReconnectHook = Callable[[], Awaitable[None]]

# Channels that need an authenticated session (private/subscribe).
_PRIVATE_CHANNEL_PREFIXES = ("user.", "block_rfq.", "block_trade_confirmations")
# Deribit does not document a cap on channels per subscribe; chunk to keep frames small.
_SUBSCRIBE_CHUNK = 200
# A session that lived this long resets the reconnect backoff; shorter ones keep escalating, so
# a connection that flaps right after login can't hammer the exchange (32 connections per IP).
_STABLE_SESSION_S = 30.0


def reconnect_backoff(settings: ExchangeSettings) -> Backoff:
    """Waits between attempts to (re)connect to the exchange: exponential from
    ``reconnect_min_delay`` to at most ``reconnect_max_delay``. Equal jitter: the waits keep
    growing (a connection that drops right after login cannot hammer the exchange, 32
    connections per IP) and many clients still do not reconnect in lockstep."""
    return Backoff(settings.reconnect_min_delay, settings.reconnect_max_delay, jitter="equal")


def is_private_channel(channel: str) -> bool:
    """Whether a channel must be subscribed with ``private/subscribe``."""
    return channel.startswith(_PRIVATE_CHANNEL_PREFIXES)


@dataclass
class ClientStats:
    """Counters for metrics; plain ints so updating them costs nothing."""

    requests: int = 0
    replies: int = 0
    errors: int = 0
    errors_by_code: dict[int, int] = field(default_factory=dict)
    timeouts: int = 0
    connection_lost: int = 0
    notifications: int = 0
    heartbeats: int = 0
    connects: int = 0
    disconnects: int = 0
    reconnects: int = 0
    token_refreshes: int = 0


class _AsyncDispatch:
    """Runs an async handler on its own task, in arrival order, so the reader never blocks on it.

    (Awaiting handlers inline would deadlock any handler that itself calls the client.)
    """

    __slots__ = ("handler", "queue", "task")

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._run())

    def __call__(self, channel: str, data: Any) -> None:
        self.queue.put_nowait((channel, data))

    async def _run(self) -> None:
        while True:
            channel, data = await self.queue.get()
            try:
                await self.handler(channel, data)
            except Exception:
                log.exception("subscription handler failed", channel=channel)


class DeribitClient:
    """A Deribit API v2 WebSocket client for one account (or anonymous, for public data).

    ``async with DeribitClient(url, creds) as c: await c.buy(instrument_name=..., amount=...)``.
    """

    def __init__(
        self,
        url: str,
        credentials: Credentials | None = None,
        *,
        settings: ExchangeSettings | None = None,
        name: str = "",
        rate_limits: RateLimitConfig | None = None,
        rate_limiter: RateLimiter | None = None,
        on_reconnect: ReconnectHook | None = None,
        max_rate_wait: float | None = None,
        cancel_on_disconnect: bool = False,
    ) -> None:
        """Create a client; nothing connects until :meth:`connect`.

        ``rate_limits`` overrides the settings' tier; pass one shared ``rate_limiter`` to every
        client of the same sub-account instead. ``max_rate_wait`` (s) makes a request that would
        wait longer than that for credits fail at once with ``client_rate_limited``.
        ``cancel_on_disconnect`` enables Deribit's connection-scoped cancel-on-disconnect on
        every (re)connected session, so orders never outlive the connection that placed them.
        """
        self.url = url
        self.name = name
        self.settings = settings or ExchangeSettings()
        self._on_reconnect = on_reconnect
        self.stats = ClientStats()
        self.connected = asyncio.Event()
        self._credentials = credentials
        self._timeout = self.settings.request_timeout
        self._limiter = rate_limiter or RateLimiter(
            rate_limits or RateLimitConfig.from_settings(self.settings)
        )
        self._max_rate_wait = max_rate_wait
        self._cancel_on_disconnect = cancel_on_disconnect
        self._auth = AuthState()
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[asyncio.Future[Any], str, asyncio.TimerHandle]] = {}
        self._handlers: dict[str, Handler] = {}
        self._dispatchers: dict[int, _AsyncDispatch] = {}
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        # Callers waiting for a session during a reconnect: future -> method.
        self._waiters: dict[asyncio.Future[None], str] = {}
        self._session_started = 0.0
        self._reconnect_backoff = reconnect_backoff(self.settings)
        self._closing = False
        self._log = log.bind(client=name or url)

    def __repr__(self) -> str:
        return (
            f"DeribitClient(name={self.name!r}, url={self.url!r}, "
            f"connected={self.is_connected}, authenticated={self._credentials is not None})"
        )

    # lifecycle

    @property
    def is_connected(self) -> bool:
        """True while the session is up (connected, authenticated, heartbeat armed)."""
        return self.connected.is_set()

    @property
    def inflight(self) -> int:
        """Requests sent and not answered yet."""
        return len(self._pending)

    @property
    def rate_limiter(self) -> RateLimiter:
        """This client's rate-limit model (one per sub-account)."""
        return self._limiter

    def snapshot(self) -> dict[str, Any]:
        """All counters and gauges as one flat dict, for metrics exporters."""
        out: dict[str, Any] = {
            k: v for k, v in self.stats.__dict__.items() if k != "errors_by_code"
        }
        out["errors_by_code"] = dict(self.stats.errors_by_code)
        out["inflight"] = len(self._pending)
        out["connected"] = self.is_connected
        out["subscriptions"] = len(self._handlers)
        out["rate_limit_waits"] = self._limiter.waits
        out["rate_limit_wait_seconds"] = self._limiter.wait_seconds
        out["matching_tokens"] = self._limiter.matching.available
        out["credits"] = self._limiter.credits.available
        return out

    async def connect(self) -> None:
        """Open the first session; raises if it fails (later drops reconnect on their own)."""
        if self._supervisor is not None:
            return
        self._closing = False
        await self._establish()
        self.stats.connects += 1
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def close(self) -> None:
        """Close the session and stop reconnecting; pending requests fail with ConnectionLost.

        Subscriptions end with the client: after a new :meth:`connect`, subscribe again.
        """
        self._closing = True
        tasks: list[asyncio.Task[Any]] = [
            t for t in (self._supervisor, self._refresher) if t is not None
        ]
        tasks += list(self._background)
        tasks += [d.task for d in self._dispatchers.values()]
        for t in tasks:
            t.cancel()
        ws = self._ws
        if ws is not None:
            await ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._fail_pending("client closed")
        for waiter, method in list(self._waiters.items()):
            if not waiter.done():
                waiter.set_exception(self._not_sent(method, "client closed"))
        self._supervisor = self._refresher = self._reader = None
        self._dispatchers.clear()
        self._handlers.clear()
        self._ws = None
        self.connected.clear()

    async def __aenter__(self) -> DeribitClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # requests

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a per-request timer, not a scope
        prepaid: bool = False,
    ) -> Any:
        """Send one JSON-RPC request and return its ``result``; raises :class:`ExchangeError`.

        Waits for rate-limit credits first (unless ``prepaid``: the caller already reserved
        them on :attr:`rate_limiter`), and (up to ``timeout``) for a session if a reconnect is
        in progress. Never retries on its own.
        """
        if not self.connected.is_set():
            await self._wait_connected(method, timeout)
        limiter = self._limiter
        if not prepaid and not await limiter.acquire(method, self._max_rate_wait):
            raise RateLimited(
                CLIENT_RATE_LIMITED, "client-side rate limit: wait too long", method=method
            )
        return await self._request(method, params, timeout)

    async def _wait_connected(self, method: str, wait_s: float | None) -> None:
        if self._closing or self._supervisor is None:
            raise self._not_sent(method, "not connected")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[waiter] = method
        try:
            async with asyncio.timeout(wait_s or self._timeout):
                await waiter
        except TimeoutError:
            raise self._not_sent(method, "not connected (reconnect in progress)") from None
        finally:
            self._waiters.pop(waiter, None)

    @staticmethod
    def _not_sent(method: str, message: str) -> ConnectionLost:
        err = ConnectionLost(CONNECTION_LOST, message, method=method)
        err.outcome_unknown = False  # never left this process
        return err

    async def _request(
        self,
        method: str,
        params: dict[str, Any] | None,
        reply_s: float | None,
        *,
        session: bool = False,
    ) -> Any:
        ws = self._ws
        if ws is None or not (session or self.connected.is_set()):
            raise self._not_sent(method, "not connected")
        rid = next(self._ids)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        timer = loop.call_later(reply_s or self._timeout, self._expire, rid)
        self._pending[rid] = (fut, method, timer)
        self.stats.requests += 1
        try:
            await ws.send(transport.encode_request(rid, method, params), text=True)
        except ConnectionClosed:
            # The reader fails every pending future when the socket dies; ours may be among them.
            if self._pending.pop(rid, None) is not None:
                timer.cancel()
                self.stats.connection_lost += 1
                raise ConnectionLost(CONNECTION_LOST, "connection closed", method=method) from None
        try:
            return await fut
        except asyncio.CancelledError:
            entry = self._pending.pop(rid, None)
            if entry is not None:
                entry[2].cancel()
            raise

    def _expire(self, rid: int) -> None:
        entry = self._pending.pop(rid, None)
        if entry is None:
            return
        fut, method, _ = entry
        if not fut.done():
            self.stats.timeouts += 1
            fut.set_exception(RequestTimeout(REQUEST_TIMEOUT, "no reply in time", method=method))

    def _fail_pending(self, message: str) -> None:
        pending, self._pending = self._pending, {}
        for fut, method, timer in pending.values():
            timer.cancel()
            if not fut.done():
                self.stats.connection_lost += 1
                fut.set_exception(ConnectionLost(CONNECTION_LOST, message, method=method))

    def _send_nowait(self, method: str, params: dict[str, Any] | None) -> None:
        """Fire a request whose reply we don't wait for (heartbeat answers)."""
        self._limiter.debit(method)
        task = asyncio.get_running_loop().create_task(self._request(method, params, None))
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.debug("background request failed", error=str(task.exception()))

    # reading

    async def _read_loop(self, ws: ClientConnection) -> None:
        loads = orjson.loads
        stats = self.stats
        try:
            while True:
                raw = await ws.recv(decode=False)
                try:
                    msg = loads(raw)
                    rid = msg.get("id")
                    if rid is not None:
                        # Re-read each time: a disconnect swaps the dict out.
                        entry = self._pending.pop(rid, None)
                        if entry is None:
                            continue  # reply after its timeout: the caller already gave up
                        fut, method, timer = entry
                        timer.cancel()
                        if fut.done():
                            continue
                        stats.replies += 1
                        error = msg.get("error")
                        if error is None:
                            fut.set_result(msg.get("result"))
                        else:
                            exc = from_rpc_error(error, method=method)
                            stats.errors += 1
                            stats.errors_by_code[exc.code] = (
                                stats.errors_by_code.get(exc.code, 0) + 1
                            )
                            fut.set_exception(exc)
                    else:
                        self._on_notification(msg)
                except Exception:
                    # One bad frame must not kill the session.
                    self._log.exception("bad message from exchange")
        except ConnectionClosed as exc:
            if not self._closing:
                self._log.warning("connection closed", code=exc.rcvd.code if exc.rcvd else None)
        except Exception:
            self._log.exception("reader failed")
        finally:
            self._on_disconnected(ws)

    def _on_notification(self, msg: dict[str, Any]) -> None:
        method = msg.get("method")
        params = msg.get("params") or {}
        if method == "subscription":
            self.stats.notifications += 1
            channel: str = params.get("channel", "")
            handler = self._handlers.get(channel)
            if handler is None:
                return
            try:
                handler(channel, params.get("data"))
            except Exception:
                self._log.exception("subscription handler failed", channel=channel)
        elif method == "heartbeat":
            self.stats.heartbeats += 1
            if params.get("type") == "test_request":
                # Deribit closes the connection unless a test_request is answered with public/test.
                self._send_nowait("public/test", {})

    def _on_disconnected(self, ws: ClientConnection) -> None:
        if self._ws is not ws:
            return
        self._ws = None
        self.connected.clear()
        self.stats.disconnects += 1
        self._auth.clear()
        if self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None
        self._fail_pending("connection lost")

    # session setup and reconnect

    async def _session_call(self, method: str, params: dict[str, Any] | None) -> Any:
        await self._limiter.acquire(method)
        return await self._request(method, params, None, session=True)

    async def _establish(self) -> None:
        ws = await transport.open_websocket(self.url, open_timeout=self._timeout)
        self._ws = ws
        self._reader = asyncio.get_running_loop().create_task(self._read_loop(ws))
        try:
            if self._credentials is not None:
                await self._login()
                if self._cancel_on_disconnect:
                    await self._session_call(
                        "private/enable_cancel_on_disconnect", {"scope": "connection"}
                    )
            await self._session_call(
                "public/set_heartbeat", {"interval": self.settings.heartbeat_interval}
            )
            await self._resubscribe()
        except BaseException:
            await ws.close()
            await asyncio.gather(self._reader, return_exceptions=True)
            raise
        if self._credentials is not None:
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_loop(ws))
        self.connected.set()
        self._session_started = time.monotonic()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._log.info("session up")

    async def _login(self) -> None:
        assert self._credentials is not None
        self._limiter.debit(AUTH_METHOD)
        params = login_params(self._credentials, self.settings.auth_grant)
        result = await self._request(AUTH_METHOD, params, None, session=True)
        self._auth.update(result)

    async def _refresh_loop(self, ws: ClientConnection) -> None:
        """Refresh the token before it expires; fall back to a fresh login if refresh fails."""
        while self._ws is ws:
            await asyncio.sleep(self._auth.seconds_until_refresh())
            try:
                if self._auth.has_refresh_token:
                    self._limiter.debit(AUTH_METHOD)
                    result = await self._request(
                        AUTH_METHOD, self._auth.refresh_params(), None, session=True
                    )
                    self._auth.update(result)
                else:
                    await self._login()
                self.stats.token_refreshes += 1
            except ConnectionLost:
                return
            except ExchangeError as exc:
                self._log.warning("token refresh failed, logging in again", reason=exc.reason)
                try:
                    await self._login()
                    self.stats.token_refreshes += 1
                except ConnectionLost:
                    return
                except ExchangeError as exc2:
                    self._log.error("re-login failed", reason=exc2.reason)
                    await asyncio.sleep(min(30.0, self.settings.reconnect_max_delay))

    async def _resubscribe(self) -> None:
        channels = list(self._handlers)
        for private in (False, True):
            group = [c for c in channels if is_private_channel(c) == private]
            method = "private/subscribe" if private else "public/subscribe"
            for i in range(0, len(group), _SUBSCRIBE_CHUNK):
                await self._session_call(method, {"channels": group[i : i + _SUBSCRIBE_CHUNK]})

    async def _supervise(self) -> None:
        # Not a tenacity loop: the escalation outlives one session (a flapping connection keeps
        # backing off) and only a session that stayed up resets it.
        delays = self._reconnect_backoff.delays()
        attempt = 0
        while not self._closing:
            if self._reader is not None:
                await asyncio.gather(self._reader, return_exceptions=True)
            if self._closing:
                return
            if time.monotonic() - self._session_started >= _STABLE_SESSION_S:
                delays = self._reconnect_backoff.delays()
                attempt = 0
            while not self._closing:
                await asyncio.sleep(next(delays))
                attempt += 1
                try:
                    await self._establish()
                except (OSError, TimeoutError, ExchangeError, ConnectionClosed) as exc:
                    # str(ExchangeError) never holds request params, so no secret can leak here.
                    self._log.warning("reconnect failed", attempt=attempt, error=str(exc))
                    continue
                except Exception as exc:
                    self._log.warning("reconnect failed", attempt=attempt, error=repr(exc))
                    continue
                self.stats.reconnects += 1
                self._run_reconnect_hook()
                break

    def _run_reconnect_hook(self) -> None:
        hook = self._on_reconnect
        if hook is None:
            return

        async def run() -> None:
            try:
                await hook()
            except Exception:
                self._log.exception("on_reconnect hook failed")

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # subscriptions

    def _wrap(self, handler: Handler) -> Handler:
        if not inspect.iscoroutinefunction(handler):
            return handler
        key = id(handler)
        dispatch = self._dispatchers.get(key)
        if dispatch is None:
            dispatch = self._dispatchers[key] = _AsyncDispatch(handler)
        return dispatch

    async def subscribe(self, channels: Iterable[str], handler: Handler) -> list[str]:
        """Subscribe and route each notification to ``handler(channel, data)``.

        Sync handlers run inline on the reader (keep them short); async ones run in order on a
        task of their own. Channels stay subscribed across reconnects. Returns the channels the
        exchange confirmed; the others are dropped (Deribit skips channels it can't serve).
        """
        wanted = list(dict.fromkeys(channels))
        wrapped = self._wrap(handler)
        for channel in wanted:
            self._handlers[channel] = wrapped
        confirmed: list[str] = []
        try:
            for private in (False, True):
                group = [c for c in wanted if is_private_channel(c) == private]
                if group:
                    method = "private/subscribe" if private else "public/subscribe"
                    confirmed += await self.call(method, {"channels": group}) or []
        except ConnectionLost:
            raise  # kept registered: the reconnect resubscribes them
        except BaseException:
            for channel in wanted:
                self._handlers.pop(channel, None)
            raise
        rejected = set(wanted) - set(confirmed)
        for channel in rejected:
            self._handlers.pop(channel, None)
        if rejected:
            self._log.warning("channels not subscribed", channels=sorted(rejected))
        return confirmed

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        """Stop routing and unsubscribe ``channels``."""
        gone = [c for c in channels if self._handlers.pop(c, None) is not None]
        for private in (False, True):
            group = [c for c in gone if is_private_channel(c) == private]
            if group and self.is_connected:
                method = "private/unsubscribe" if private else "public/unsubscribe"
                await self.call(method, {"channels": group})

    @property
    def subscriptions(self) -> list[str]:
        """Channels currently routed (and resubscribed after a reconnect)."""
        return list(self._handlers)

    # convenience methods (the `result` of each call, as plain dicts)

    async def buy(self, **params: Any) -> dict[str, Any]:
        """``private/buy``: ``{"order": {...}, "trades": [...]}``."""
        result: dict[str, Any] = await self.call("private/buy", params)
        return result

    async def sell(self, **params: Any) -> dict[str, Any]:
        """``private/sell``: ``{"order": {...}, "trades": [...]}``."""
        result: dict[str, Any] = await self.call("private/sell", params)
        return result

    async def edit(self, **params: Any) -> dict[str, Any]:
        """``private/edit`` (needs ``order_id``): ``{"order": {...}, "trades": [...]}``."""
        result: dict[str, Any] = await self.call("private/edit", params)
        return result

    async def edit_by_label(self, **params: Any) -> dict[str, Any]:
        """``private/edit_by_label`` (needs ``label`` and ``instrument_name``)."""
        result: dict[str, Any] = await self.call("private/edit_by_label", params)
        return result

    async def cancel(self, order_id: str) -> dict[str, Any]:
        """``private/cancel``: the cancelled order."""
        result: dict[str, Any] = await self.call("private/cancel", {"order_id": order_id})
        return result

    async def cancel_by_label(self, label: str, currency: str | None = None) -> int:
        """``private/cancel_by_label``: how many orders were cancelled."""
        params: dict[str, Any] = {"label": label}
        if currency is not None:
            params["currency"] = currency
        result: int = await self.call("private/cancel_by_label", params)
        return result

    async def cancel_all(self, **params: Any) -> Any:
        """``private/cancel_all``: count of cancelled orders (a list if ``detailed=True``)."""
        return await self.call("private/cancel_all", params)

    async def close_position(
        self, instrument_name: str, order_type: str = "market", **params: Any
    ) -> dict[str, Any]:
        """``private/close_position`` (``order_type`` is Deribit's ``type``: limit or market)."""
        result: dict[str, Any] = await self.call(
            "private/close_position",
            {"instrument_name": instrument_name, "type": order_type, **params},
        )
        return result

    async def get_order_state(self, order_id: str) -> dict[str, Any]:
        """``private/get_order_state``."""
        result: dict[str, Any] = await self.call("private/get_order_state", {"order_id": order_id})
        return result

    async def get_order_state_by_label(self, currency: str, label: str) -> list[dict[str, Any]]:
        """``private/get_order_state_by_label``: every order (any state) with that label."""
        result: list[dict[str, Any]] = await self.call(
            "private/get_order_state_by_label", {"currency": currency, "label": label}
        )
        return result

    async def get_open_orders(self, **params: Any) -> list[dict[str, Any]]:
        """``private/get_open_orders`` (optional ``kind``, ``type``)."""
        result: list[dict[str, Any]] = await self.call("private/get_open_orders", params)
        return result

    async def get_open_orders_by_label(self, currency: str, label: str) -> list[dict[str, Any]]:
        """``private/get_open_orders_by_label``."""
        result: list[dict[str, Any]] = await self.call(
            "private/get_open_orders_by_label", {"currency": currency, "label": label}
        )
        return result

    async def get_positions(
        self, currency: str | None = None, kind: str | None = None
    ) -> list[dict[str, Any]]:
        """``private/get_positions`` (currency may be ``any``)."""
        params: dict[str, Any] = {}
        if currency is not None:
            params["currency"] = currency
        if kind is not None:
            params["kind"] = kind
        result: list[dict[str, Any]] = await self.call("private/get_positions", params)
        return result

    async def get_account_summary(self, currency: str, **params: Any) -> dict[str, Any]:
        """``private/get_account_summary``."""
        result: dict[str, Any] = await self.call(
            "private/get_account_summary", {"currency": currency, **params}
        )
        return result

    async def get_instruments(
        self, currency: str, kind: str | None = None, expired: bool | None = None
    ) -> list[dict[str, Any]]:
        """``public/get_instruments``."""
        params: dict[str, Any] = {"currency": currency}
        if kind is not None:
            params["kind"] = kind
        if expired is not None:
            params["expired"] = expired
        result: list[dict[str, Any]] = await self.call("public/get_instruments", params)
        return result

    async def ticker(self, instrument_name: str) -> dict[str, Any]:
        """``public/ticker``."""
        result: dict[str, Any] = await self.call(
            "public/ticker", {"instrument_name": instrument_name}
        )
        return result

    async def get_time(self) -> int:
        """``public/get_time``: exchange time in ms."""
        result: int = await self.call("public/get_time", {})
        return result

    async def enable_cancel_on_disconnect(self, scope: str = "connection") -> Any:
        """``private/enable_cancel_on_disconnect`` (connection scope: again after a reconnect)."""
        return await self.call("private/enable_cancel_on_disconnect", {"scope": scope})
