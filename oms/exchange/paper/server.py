"""The paper exchange server: Deribit's WebSocket and HTTP transports on aiohttp, plus the
background loops (market ticks, 100ms batches, heartbeats, fault-injected drops, market saves).

With a state directory the exchange is durable: it restores its state at start
(:mod:`oms.exchange.paper.store`, :mod:`oms.exchange.paper.restore`), records every change in
the :class:`~oms.exchange.paper.journal.Journal` and sends no reply or notification before the
change it reports is committed."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import signal
import time
from collections import deque
from pathlib import Path
from typing import Any

import orjson
import structlog
from aiohttp import WSMsgType, web

from oms.exchange.deribit.auth import HTTP_SIGNATURE_SCHEME, http_request_data
from oms.exchange.paper.accounts import AccountStore
from oms.exchange.paper.dispatch import Outcome, error_response, handle
from oms.exchange.paper.engine import Engine, now_ms
from oms.exchange.paper.errors import PARSE_ERROR, RpcError
from oms.exchange.paper.faults import Faults
from oms.exchange.paper.instruments import Instrument, default_instruments
from oms.exchange.paper.journal import Journal
from oms.exchange.paper.market import SyntheticMarket
from oms.exchange.paper.methods import State
from oms.exchange.paper.restore import restore
from oms.exchange.paper.session import IMMEDIATE, Durability, Session
from oms.exchange.paper.signatures import parse_authorization
from oms.exchange.paper.store import Store
from oms.exchange.paper.subscriptions import Hub
from oms.settings import PaperExchangeSettings

log = logging.getLogger("oms.paper")
slog = structlog.get_logger("oms.paper")

WS_PATH = "/ws/api/v2"
HTTP_PREFIX = "/api/v2"
BATCH_INTERVAL_S = 0.1


class PaperExchange:
    """A local Deribit API v2 exchange.

    Use in-process::

        async with PaperExchange(settings=PaperExchangeSettings(port=0)) as px:
            client = connect(px.ws_url)

    ``port=0`` picks a free port; ``px.port`` tells which. Given a ``state_dir`` the
    exchange keeps its state there across restarts (``reset`` discards it, but never lets
    ids be reused); without one it lives in memory only.
    """

    def __init__(
        self,
        settings: PaperExchangeSettings | None = None,
        accounts_file: Path | str | None = None,
        faults: Faults | dict[str, Any] | None = None,
        *,
        rate_limits: bool = True,
        min_heartbeat_s: float = 10.0,
        instruments: list[Instrument] | None = None,
        volatility: float = 2e-4,
        run_market: bool = True,
        state_dir: Path | str | None = None,
        reset: bool = False,
    ) -> None:
        self.settings = settings or PaperExchangeSettings()
        s = self.settings
        if isinstance(faults, dict):
            f = Faults()
            f.update(faults)
            faults = f
        self.faults = faults or Faults()
        self.run_market = run_market
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self._reset = reset
        self._accounts_file = Path(accounts_file) if accounts_file is not None else None
        self._instruments = instruments
        self._volatility = volatility
        self._min_heartbeat_s = min_heartbeat_s
        self._rate_limits = rate_limits
        self.journal: Journal | None = None
        self.durability: Durability = IMMEDIATE
        self.recovery: dict[str, Any] = {}  # what the last start restored and dropped
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.port: int = s.port
        self._assemble(instruments or default_instruments(int(time.time() * 1000)))
        if self.state_dir is None:
            self._load_accounts_file()
            if run_market:
                # Quotes exist from the first request on, not only after the first tick.
                self.engine.step_market()

    def _assemble(self, insts: list[Instrument]) -> None:
        """A fresh exchange on ``insts``: accounts, market, engine and handler state."""
        s = self.settings
        self.accounts = AccountStore(
            {"BTC": s.starting_btc, "ETH": s.starting_eth, "USDC": s.starting_usdc},
            default_tier=s.default_tier,
            auto_create=s.auto_create_accounts,
        )
        self.market = SyntheticMarket(insts, seed=s.seed, volatility=self._volatility)
        self.hub = Hub()
        self.engine = Engine(
            insts, self.market, self.accounts, sink=self.hub, history_limit=s.history_limit
        )
        self.hub.engine = self.engine
        self.state = State(
            engine=self.engine,
            accounts=self.accounts,
            hub=self.hub,
            faults=self.faults,
            min_heartbeat_s=self._min_heartbeat_s,
            rate_limits=self._rate_limits,
        )
        self.state.heartbeat_starter = self._start_heartbeat

    def _load_accounts_file(self) -> None:
        path = self._accounts_file
        if path is not None and path.exists():
            n = self.accounts.load_file(path)
            log.info("paper.accounts_loaded count=%d file=%s", n, path)

    async def _open_state(self, state_dir: Path) -> None:
        """Restore the stored state (or start it, or reset it), then record every change."""
        store = Store(state_dir)
        loaded = await asyncio.to_thread(store.open, self._reset)
        meta = loaded.rows.get("meta", {})
        catalogue = meta.get("catalogue") or {}
        # The catalogue is rebuilt for the time it was first built for, so stored orders and
        # positions find their instruments (a long-running exchange keeps its catalogue too).
        anchor = catalogue.get("anchor_ms")
        if not isinstance(anchor, int):
            anchor = int(time.time() * 1000)
        # Always a fresh engine: a stopped exchange started again rebuilds from its store.
        self._assemble(self._instruments or default_instruments(anchor))
        restored = restore(self.engine, loaded.rows, loaded.last_ids)
        journal = Journal(store, self.engine)
        self.engine.recorder = journal
        self.accounts.recorder = journal
        journal.meta("catalogue", {"anchor_ms": anchor})
        for order_id in restored.gone_orders:
            journal.order_gone(order_id)
        for trade in restored.gone_trades:
            journal.trade_gone(trade)
        self._load_accounts_file()
        if self.run_market:
            # First quotes; also expires good_til_day orders whose day ended while down.
            self.engine.step_market()
        journal.market()
        await journal.flush()
        self.journal = journal
        self.durability = journal
        self.state.journal = journal
        last_order, last_trade = self.engine.last_ids()
        saved_ms = (meta.get("engine") or {}).get("saved_ms")
        losses = describe_losses(loaded.report, restored.dropped, loaded.fresh)
        self.recovery = {
            **loaded.report,
            **restored.summary,
            "fresh": loaded.fresh,
            "reset": self._reset,
            "state_saved_ms": saved_ms,
            "dropped": restored.dropped,
            "losses": losses,
            "next_order_number": last_order + 1,
            "next_trade_number": last_trade + 1,
        }
        (slog.warning if losses else slog.info)("paper.recovered", **self.recovery)

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def ws_url(self) -> str:
        return f"ws://{self.settings.host}:{self.port}{WS_PATH}"

    @property
    def http_url(self) -> str:
        return f"http://{self.settings.host}:{self.port}{HTTP_PREFIX}"

    async def start(self) -> None:
        """Restore the durable state (if any), bind the socket and start the background
        loops."""
        self._stopping = False
        if self.state_dir is not None and self.journal is None:
            await self._open_state(self.state_dir)
        app = web.Application(client_max_size=1 << 20)
        app.router.add_get(WS_PATH, self._ws_handler)
        app.router.add_get(HTTP_PREFIX + "/{method:.+}", self._http_handler)
        app.router.add_post(HTTP_PREFIX + "/{method:.+}", self._http_handler)
        app.router.add_post(HTTP_PREFIX, self._http_handler)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await self._site.start()
        server = self._site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        if self.run_market:
            self._tasks.append(loop.create_task(self._market_loop()))
        self._tasks.append(loop.create_task(self._batch_loop()))
        self._tasks.append(loop.create_task(self._drop_loop()))
        if self.journal is not None:
            self._tasks.append(loop.create_task(self._save_market_loop(self.journal)))
        log.info(
            "paper.started url=%s seed=%d tick_interval_s=%s rate_limits=%s",
            self.ws_url, self.settings.seed, self.settings.tick_interval_s,
            self.state.rate_limits,
        )

    async def stop(self) -> None:
        """Close every connection and the listening socket, then commit what is pending.
        Connections closed by the shutdown do not cancel their orders: going down is not a
        client disconnecting, and a restart finds the orders as a crash would have left
        them."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for session in list(self.state.sessions):
            await self._close_session(session)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.journal is not None:
            await self.journal.close()
            self.journal = None
            self.durability = IMMEDIATE
        log.info("paper.stopped port=%d", self.port)

    async def __aenter__(self) -> PaperExchange:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def drop_connections(self, abrupt: bool = True) -> int:
        """Cut every WebSocket connection (what the ``drop_every_s`` fault does). ``abrupt``
        resets the TCP connection without a close frame, like a network failure."""
        sessions = [s for s in self.state.sessions if s.ws is not None and not s.closed]
        for session in sessions:
            if abrupt and session.transport is not None:
                session.transport.abort()
            await self._close_session(session)
        return len(sessions)

    # ---- background loops ------------------------------------------------------------------

    async def _market_loop(self) -> None:
        interval = self.settings.tick_interval_s
        next_at = time.monotonic()
        while True:
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if self.state.market_paused:
                continue
            try:
                self.engine.step_market()
                ts = time.time_ns() // 1_000_000
                self.hub.publish_market(ts)
                if self.hub.portfolio_subs:
                    self.hub.publish_portfolio()
            except Exception:
                log.exception("paper.market_tick_failed")

    async def _save_market_loop(self, journal: Journal) -> None:
        while True:
            await asyncio.sleep(self.settings.market_save_interval_s)
            journal.market()

    async def _batch_loop(self) -> None:
        while True:
            await asyncio.sleep(BATCH_INTERVAL_S)
            try:
                self.hub.flush_batches([s for s in self.state.sessions if s.batches])
            except Exception:
                log.exception("paper.batch_flush_failed")

    async def _drop_loop(self) -> None:
        while True:
            every = self.faults.drop_every_s
            if every <= 0:
                await asyncio.sleep(0.1)
                continue
            await asyncio.sleep(every)
            if self.faults.drop_every_s > 0:
                n = await self.drop_connections()
                self.faults.count("drops")
                self.faults.fired["connections_dropped"] = (
                    self.faults.fired.get("connections_dropped", 0) + n
                )
                log.info("paper.fault_drop connections=%d", n)

    def _start_heartbeat(self, session: Session) -> None:
        if session.heartbeat_task is not None:
            session.heartbeat_task.cancel()
        session.heartbeat_task = asyncio.get_running_loop().create_task(self._heartbeat(session))

    async def _heartbeat(self, session: Session) -> None:
        """Deribit's heartbeat: a ``test_request`` every interval; a client that has not
        answered the previous one with ``public/test`` is disconnected."""
        message = orjson.dumps(
            {"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "test_request"}}
        ).decode()
        while not session.closed and session.heartbeat_interval:
            await asyncio.sleep(session.heartbeat_interval)
            if session.closed or not session.heartbeat_interval:
                return
            if session.test_pending:
                log.info("paper.heartbeat_timeout session=%s", session.id)
                session.heartbeat_task = None
                await self._close_session(session)
                return
            session.test_pending = True
            session.send_text(message)

    # ---- WebSocket -------------------------------------------------------------------------

    async def _ws_handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=1 << 20, autoping=True)
        await ws.prepare(request)
        session = Session(ws, peer=str(request.remote), durability=self.durability)
        session.transport = request.transport
        self.state.sessions.add(session)
        loop = asyncio.get_running_loop()
        writer = loop.create_task(session.writer())
        delayed: deque[tuple[float, str]] | None = None
        delayed_task: asyncio.Task[None] | None = None
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    if msg.type == WSMsgType.BINARY:
                        self._on_text(session, msg.data.decode(errors="replace"))
                    continue
                latency = self.faults.latency_ms
                if latency > 0:
                    # Network latency delays but never reorders a connection's requests.
                    if delayed is None:
                        delayed = deque()
                    delayed.append((time.monotonic() + latency / 1000, msg.data))
                    if delayed_task is None or delayed_task.done():
                        delayed_task = loop.create_task(self._drain_delayed(session, delayed))
                    continue
                self._on_text(session, msg.data)
                if session.closed or session.close_after_flush:
                    break
        finally:
            if delayed_task is not None:
                delayed_task.cancel()
            if not session.close_after_flush:
                session.closed = True
                session.wake.set()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await asyncio.wait_for(writer, 5)
            await self._close_session(session)
        return ws

    async def _drain_delayed(self, session: Session, queue: deque[tuple[float, str]]) -> None:
        while queue and not session.closed:
            due, text = queue[0]
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            queue.popleft()
            self._on_text(session, text)

    def _on_text(self, session: Session, text: str) -> None:
        us_in = time.time_ns() // 1000
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            session.send(
                {"jsonrpc": "2.0", "id": None, "error": RpcError(PARSE_ERROR).to_dict(),
                 "testnet": True}
            )
            return
        if self.faults.reply_first:
            session.holding = []
            try:
                outcome = handle(self.state, session, msg, http=False, us_in=us_in)
            finally:
                held, session.holding = session.holding, None
            self._reply(session, outcome)
            for text in held:
                session.send_text(text)
            return
        outcome = handle(self.state, session, msg, http=False, us_in=us_in)
        self._reply(session, outcome)

    def _reply(self, session: Session, outcome: Outcome) -> None:
        if outcome.lost:
            # Executed, but the reply never leaves: the network died under it.
            if session.transport is not None:
                session.transport.abort()
            asyncio.get_running_loop().create_task(self._close_session(session))
            return
        if outcome.delay_s > 0:
            text = orjson.dumps(outcome.response).decode()
            asyncio.get_running_loop().call_later(outcome.delay_s, session.send_text, text)
        else:
            session.send(outcome.response)
        if outcome.close:
            session.close_soon()

    async def _close_session(self, session: Session) -> None:
        if session in self.state.sessions:
            self.state.sessions.discard(session)
            if not self._stopping:
                self._cancel_on_disconnect(session)
            self.hub.drop(session)
        session.closed = True
        session.wake.set()
        task = session.heartbeat_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        if session.ws is not None and not session.ws.closed:
            with contextlib.suppress(Exception):
                await session.ws.close()

    def _cancel_on_disconnect(self, session: Session) -> None:
        account = session.account
        if session.cancel_on_disconnect is None or account is None:
            return
        orders = [
            o for o in account.open_orders.values()
            if session.cancel_on_disconnect == "account" or o.session_id == session.id
        ]
        n = self.engine.cancel_many(account, orders, reason="cancel_on_disconnect")
        log.info("paper.cancel_on_disconnect account=%s cancelled=%d", account.account_id, n)

    # ---- HTTP ------------------------------------------------------------------------------

    async def _http_handler(self, request: web.Request) -> web.Response:
        us_in = time.time_ns() // 1000
        session = Session(None, peer=str(request.remote))
        durability = self.durability
        method = request.match_info.get("method")
        raw_body = await request.read() if request.method == "POST" else b""
        if request.method == "POST":
            try:
                body = orjson.loads(raw_body)
            except orjson.JSONDecodeError:
                return self._http_response(error_response(None, us_in, RpcError(PARSE_ERROR)))
            if isinstance(body, dict) and method and "method" not in body:
                body["method"] = method
        else:
            params: dict[str, Any] = dict(request.query)
            body = {"jsonrpc": "2.0", "id": params.pop("id", None), "method": method,
                    "params": params}
        if isinstance(body, dict) and isinstance(body.get("id"), str) and body["id"].isdigit():
            body["id"] = int(body["id"])
        auth = request.headers.get("Authorization", "")
        if auth:
            try:
                self._http_auth(session, auth, request, raw_body)
            except RpcError as exc:
                req_id = body.get("id") if isinstance(body, dict) else None
                log.info("paper.http_auth_refused peer=%s code=%d", session.peer, exc.code)
                return self._http_response(error_response(req_id, us_in, exc))
        if self.faults.latency_ms > 0:
            await asyncio.sleep(self.faults.latency_ms / 1000)
        outcome = handle(self.state, session, body, http=True, us_in=us_in)
        ticket = durability.ticket()
        if not durability.is_durable(ticket):
            await durability.wait(ticket)
        if outcome.delay_s > 0:
            await asyncio.sleep(outcome.delay_s)
        return self._http_response(outcome.response)

    def _http_auth(
        self, session: Session, header: str, request: web.Request, raw_body: bytes
    ) -> None:
        """Authenticate an HTTP request by its Authorization header: a bearer token, basic
        credentials, or Deribit's request signature (a bad signature raises Deribit's error:
        the client asked for this request to be authenticated)."""
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            session.account = self.accounts.by_access_token(value.strip())
        elif scheme == "basic":
            try:
                client_id, _, secret = base64.b64decode(value.strip()).decode().partition(":")
                session.account = self.accounts.authenticate(client_id, secret)
            except (ValueError, RpcError):
                session.account = None
        elif scheme == HTTP_SIGNATURE_SCHEME:
            claim = parse_authorization(value)
            # The URI exactly as sent (path and query, still percent-encoded).
            data = http_request_data(
                request.method, request.raw_path, raw_body.decode(errors="replace")
            )
            session.account = self.accounts.verify_signature(claim, data, now_ms())

    @staticmethod
    def _http_response(body: dict[str, Any]) -> web.Response:
        status = 400 if "error" in body else 200
        return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def describe_losses(report: dict[str, Any], dropped: dict[str, int], fresh: bool) -> list[str]:
    """What a start could not bring back, in words (empty: nothing was lost)."""
    out = []
    if not report.get("wal_header_valid", True):
        out.append("write-ahead log unreadable: every change since the last checkpoint lost")
    elif report.get("wal_dropped_bytes"):
        out.append(
            f"write-ahead log tail torn or corrupt: {report['wal_dropped_bytes']} bytes and "
            f"{report.get('wal_dropped_commits', 0)} committed batch(es) dropped; the state is "
            "the last intact batch's"
        )
    if report.get("db_corrupt"):
        out.append(
            f"database corrupt ({report.get('db_problem')}): {report.get('rows_salvaged')} rows "
            f"salvaged, the damaged file kept as {report.get('corrupt_db_moved_to')}"
        )
    for kind, n in dropped.items():
        out.append(f"{n} stored {kind} unusable (unknown instrument or account, or malformed)")
    if report.get("rows_undecodable"):
        out.append(f"{report['rows_undecodable']} stored rows undecodable")
    if report.get("ids_reserved") is None and not fresh:
        out.append("id reservation (ids.json) missing or unreadable: ids continue above the clock")
    return out


async def serve_forever(
    settings: PaperExchangeSettings | None = None,
    accounts_file: Path | str | None = None,
    faults: Faults | dict[str, Any] | None = None,
    *,
    rate_limits: bool = True,
    min_heartbeat_s: float = 10.0,
    state_dir: Path | str | None = None,
    reset: bool = False,
) -> None:
    """Run a paper exchange until SIGINT or SIGTERM, then close every session cleanly and
    (durable with ``state_dir``) commit what is pending."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with PaperExchange(
        settings=settings,
        accounts_file=accounts_file,
        faults=faults,
        rate_limits=rate_limits,
        min_heartbeat_s=min_heartbeat_s,
        state_dir=state_dir,
        reset=reset,
    ):
        await stop.wait()
