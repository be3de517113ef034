"""The durable paper exchange in-process: what a stop and a start on the same state directory
bring back, ``reset``, bounded history, and that nothing is sent before it is stored.

Real components throughout: the exchange on its own sockets, SQLite files in ``tmp_path``,
the test client over WebSocket. With ``volatility=0`` the index (hence perpetual marks) stays
put, so answers that depend on the mark can be compared exactly across a restart.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from oms.exchange.paper import PaperExchange
from oms.exchange.paper.accounts import AccountStore
from oms.exchange.paper.engine import Engine
from oms.exchange.paper.instruments import default_instruments
from oms.exchange.paper.journal import Journal
from oms.exchange.paper.market import SyntheticMarket
from oms.exchange.paper.store import Store, inspect_wal
from oms.exchange.paper.testing import RpcClient, RpcFailed
from oms.settings import PaperExchangeSettings
from tests.exchange.paper_scenario import PERP, answers, number, trade_a_little


@asynccontextmanager
async def exchange(
    state_dir: Path, settings: dict[str, Any] | None = None, **kw: Any
) -> AsyncIterator[PaperExchange]:
    kw.setdefault("volatility", 0.0)
    s = PaperExchangeSettings(port=0, tick_interval_s=0.05, **(settings or {}))
    async with PaperExchange(settings=s, state_dir=state_dir, **kw) as px:
        yield px


@asynccontextmanager
async def connected(
    px: PaperExchange, who: str = "alice", secret: str = "alice-secret"
) -> AsyncIterator[RpcClient]:
    c = await RpcClient.connect(px.ws_url)
    try:
        await c.auth(who, secret)
        yield c
    finally:
        await c.close()


async def test_restart_brings_everything_back(tmp_path: Path) -> None:
    async with exchange(tmp_path) as px, connected(px) as c:
        seen = await trade_a_little(c)
        before = await answers(c)
    assert len(before["open"]) == 4 and before["trades"]["trades"] and before["positions"]

    async with exchange(tmp_path) as px, connected(px) as c:
        assert px.recovery["open_orders"] == 3 and px.recovery["untriggered_orders"] == 1
        after = await answers(c)
        assert after == before
        placed = await c.result("private/buy", instrument_name=PERP, amount=10, type="market")
    assert number(placed["order"]["order_id"]) > max(map(number, seen["orders"]))
    assert placed["trades"]
    assert number(placed["trades"][0]["trade_id"]) > max(map(number, seen["trades"]))


async def test_price_time_priority_and_untriggered_stops_survive(tmp_path: Path) -> None:
    async with exchange(tmp_path, run_market=False) as px:
        async with connected(px, "a") as a, connected(px, "b") as b:
            first = await a.result("private/sell", instrument_name=PERP, amount=10,
                                   price=95_100.0)
            second = await b.result("private/sell", instrument_name=PERP, amount=10,
                                    price=95_100.0)
            stop = await a.result("private/sell", instrument_name=PERP, amount=10,
                                  type="stop_market", trigger="last_price",
                                  trigger_price=94_000.0)
    assert stop["order"]["order_state"] == "untriggered"

    async with exchange(tmp_path, run_market=False) as px:
        async with connected(px, "a") as a, connected(px, "b") as b, connected(px, "c") as c:
            taken = await c.result("private/buy", instrument_name=PERP, amount=10,
                                   price=95_100.0)
            assert taken["order"]["order_state"] == "filled"
            # The older order at the level trades first, as before the restart.
            older = await a.result("private/get_order_state", order_id=first["order"]["order_id"])
            newer = await b.result("private/get_order_state",
                                   order_id=second["order"]["order_id"])
            assert (older["order_state"], newer["order_state"]) == ("filled", "open")
            stop_id = stop["order"]["order_id"]
            state = await a.result("private/get_order_state", order_id=stop_id)
            assert state["order_state"] == "untriggered" and state["triggered"] is False
            # A trade at the trigger price, then a tick: the stop fires.
            await c.result("private/buy", instrument_name=PERP, amount=10, price=94_000.0)
            await b.result("private/sell", instrument_name=PERP, amount=10, price=94_000.0)
            await a.result("admin/step_market")
            state = await a.result("private/get_order_state", order_id=stop_id)
            assert state["triggered"] is True and state["order_state"] == "filled"


async def test_good_til_day_expiry_still_applies(tmp_path: Path) -> None:
    async with exchange(tmp_path, run_market=False) as px, connected(px) as c:
        day = await c.result("private/buy", instrument_name=PERP, amount=10, price=94_000.0,
                             time_in_force="good_til_day")
        # The day ends while the exchange is down (its 08:00 UTC passes).
        px.engine.day_end_ms = int(time.time() * 1000) - 1
    async with exchange(tmp_path) as px, connected(px) as c:
        state = await c.result("private/get_order_state", order_id=day["order"]["order_id"])
    assert state["order_state"] == "cancelled" and state["cancel_reason"] == "settlement"


async def test_accounts_keep_credentials_and_balances(tmp_path: Path) -> None:
    accounts = tmp_path / "accounts.json"
    accounts.write_text(orjson.dumps(
        {"accounts": {"desk": {"client_id": "desk-id", "client_secret": "s3cret",
                               "balances": {"BTC": 2}}}}
    ).decode())
    state = tmp_path / "state"
    async with exchange(state, accounts_file=accounts) as px:
        async with connected(px, "desk-id", "s3cret") as desk:
            await desk.result("private/buy", instrument_name=PERP, amount=100, type="market")
            desk_balance = (await desk.result("private/get_account_summary",
                                              currency="BTC"))["balance"]
        async with connected(px, "zed", "zed-secret") as zed:
            await zed.result("admin/set_balance", currency="ETH", balance=12.5)
    assert desk_balance != 2

    async with exchange(state, accounts_file=accounts) as px:
        async with connected(px, "desk-id", "s3cret") as desk:
            # The accounts file is loaded again, but the balance is the traded one.
            summary = await desk.result("private/get_account_summary", currency="BTC")
            assert summary["balance"] == desk_balance
        stranger = await RpcClient.connect(px.ws_url)
        try:
            with pytest.raises(RpcFailed) as exc:
                await stranger.auth("zed", "not-the-secret")
            assert exc.value.code == 13004
        finally:
            await stranger.close()
        async with connected(px, "zed", "zed-secret") as zed:
            summary = await zed.result("private/get_account_summary", currency="ETH")
            assert summary["balance"] == 12.5


async def test_shutdown_cancels_nothing(tmp_path: Path) -> None:
    """Cancel-on-disconnect is for clients going away, not for the exchange going down."""
    async with exchange(tmp_path) as px, connected(px) as c:
        await c.result("private/enable_cancel_on_disconnect", scope="account")
        resting = await c.result("private/buy", instrument_name=PERP, amount=10,
                                 price=94_000.0)
        await px.stop()  # with the client still connected
    async with exchange(tmp_path) as px, connected(px) as c:
        open_orders = await c.result("private/get_open_orders")
    assert [o["order_id"] for o in open_orders] == [resting["order"]["order_id"]]


async def test_reset_starts_empty_with_new_ids(tmp_path: Path) -> None:
    async with exchange(tmp_path) as px, connected(px) as c:
        seen = await trade_a_little(c)
    async with exchange(tmp_path, reset=True) as px, connected(px) as c:
        assert await c.result("private/get_open_orders") == []
        assert await c.result("private/get_positions", currency="BTC") == []
        summary = await c.result("private/get_account_summary", currency="BTC")
        assert summary["balance"] == PaperExchangeSettings().starting_btc
        placed = await c.result("private/buy", instrument_name=PERP, amount=10, type="market")
    assert number(placed["order"]["order_id"]) > max(map(number, seen["orders"]))
    assert number(placed["trades"][0]["trade_id"]) > max(map(number, seen["trades"]))


async def test_history_cap_bounds_the_store_not_the_ids(tmp_path: Path) -> None:
    limits = {"history_limit": 3}
    async with exchange(tmp_path, limits) as px, connected(px) as c:
        ids = [
            (await c.result("private/buy", instrument_name=PERP, amount=10, price=94_000.0,
                            time_in_force="immediate_or_cancel"))["order"]["order_id"]
            for _ in range(10)
        ]
    db = sqlite3.connect(tmp_path / "paper.db")
    try:
        stored = [k for (k,) in db.execute("SELECT key FROM state WHERE kind = 'order'")]
    finally:
        db.close()
    assert sorted(stored) == sorted(ids[-3:])
    async with exchange(tmp_path, limits) as px, connected(px) as c:
        with pytest.raises(RpcFailed):
            await c.result("private/get_order_state", order_id=ids[0])  # evicted
        again = await c.result("private/buy", instrument_name=PERP, amount=10, price=94_000.0)
    assert number(again["order"]["order_id"]) > max(map(number, ids))


async def test_market_continues_where_it_was(tmp_path: Path) -> None:
    async with exchange(tmp_path, run_market=False, volatility=2e-4) as px, connected(px) as c:
        moved = await c.result("admin/step_market", steps=300)
    async with exchange(tmp_path, run_market=False, volatility=2e-4) as px, connected(px) as c:
        after = await c.result("admin/step_market")
    assert after["steps"] == moved["steps"] + 1
    # The same seed stepped as often, without a restart, is exactly where it is now.
    insts = default_instruments(int(time.time() * 1000))
    accounts = AccountStore({"BTC": 1.0}, 4, auto_create=True)
    reference = Engine(insts, SyntheticMarket(insts, seed=7, volatility=2e-4), accounts)
    for _ in range(after["steps"]):
        reference.step_market()
    assert after["index"] == reference.market.index


async def test_nothing_is_sent_before_it_is_stored(tmp_path: Path) -> None:
    async with exchange(tmp_path) as px, connected(px) as c:
        await c.result("private/subscribe", channels=["user.orders.any.any.raw"])
        # Another process holds SQLite's write lock: the exchange cannot commit.
        blocker = sqlite3.connect(tmp_path / "paper.db", timeout=0, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            reply = await c.send("private/buy", instrument_name=PERP, amount=10,
                                 price=94_000.0, label="held")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(asyncio.shield(reply), 0.5)
            assert not [m for m in c.inbox if m.get("method") == "subscription"]
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        order_id = (await asyncio.wait_for(reply, 10))["result"]["order"]["order_id"]
        await c.notification("user.orders.any.any.raw")
        db = sqlite3.connect(tmp_path / "paper.db")
        try:
            assert db.execute(
                "SELECT count(*) FROM state WHERE kind = 'order' AND key = ?", (order_id,)
            ).fetchone() == (1,)
        finally:
            db.close()


async def test_failed_commit_is_retried(tmp_path: Path) -> None:
    """A commit that fails (the database is locked past the busy timeout) is retried with
    what changed since; waiters are released by the retry."""
    store = Store(tmp_path, busy_timeout_s=0.05)
    await asyncio.to_thread(store.open)
    insts = default_instruments(int(time.time() * 1000))
    accounts = AccountStore({"BTC": 1.0}, 4, auto_create=True)
    engine = Engine(insts, SyntheticMarket(insts, seed=1), accounts)
    journal = Journal(store, engine)
    accounts.recorder = journal
    blocker = sqlite3.connect(tmp_path / "paper.db", timeout=0, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    accounts.add("x", "x", "secret")
    waiting = asyncio.ensure_future(journal.flush())
    try:
        # Ten times the busy timeout: the commit has failed (at least once) meanwhile.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiting), 0.5)
        assert journal.stats()["failures"] >= 1
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await asyncio.wait_for(waiting, 10)
    await journal.close()
    reopened = await asyncio.to_thread(Store(tmp_path).open)
    assert "x" in reopened.rows["account"]


async def test_wal_inspection_matches_sqlite_recovery(tmp_path: Path) -> None:
    """After a crash-like end (no checkpoint), the WAL holds one commit per batch; a torn
    tail is reported as dropped."""
    store = Store(tmp_path)
    await asyncio.to_thread(store.open)
    wal = tmp_path / "paper.db-wal"
    created = inspect_wal(wal).commits  # creating the schema commits too
    for i in range(5):
        await asyncio.to_thread(
            store.commit, [("label", f"l{i}", i)], (1, 1)
        )
    intact = inspect_wal(wal)
    assert intact.commits == created + 5 and intact.dropped_bytes == 0 and intact.header_valid
    data = wal.read_bytes()
    copy = tmp_path / "torn-wal"
    copy.write_bytes(data[:-100])
    torn = inspect_wal(copy)
    assert torn.commits == created + 4 and torn.dropped_commits == 1 and torn.dropped_bytes > 0
    store.close()
