"""AccountSessions: one client per account, opened once, never again after the stop."""

from __future__ import annotations

import asyncio

import pytest

from oms.exchange.errors import ConnectionLost
from oms.exchange.sessions import AccountSessions


class Client:
    """A client of the holder: records whether it was closed."""

    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        self.closed = False

    async def close(self) -> None:
        self.closed = True


class Opener:
    """The holder's factory; each opening waits for ``release`` while it is cleared."""

    def __init__(self) -> None:
        self.opened: list[Client] = []
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()
        self.failures = 0

    async def __call__(self, account_id: str) -> Client:
        self.started.set()
        await self.release.wait()
        if self.failures:
            self.failures -= 1
            raise OSError("cannot connect")
        client = Client(account_id)
        self.opened.append(client)
        return client


async def test_concurrent_first_calls_open_one_client() -> None:
    opener = Opener()
    opener.release.clear()
    sessions = AccountSessions(opener)
    calls = [asyncio.create_task(sessions.get("acct")) for _ in range(5)]
    await opener.started.wait()
    opener.release.set()
    clients = await asyncio.gather(*calls)
    assert len(opener.opened) == 1 and all(c is opener.opened[0] for c in clients)
    assert await sessions.get("acct") is clients[0] and sessions.current("acct") is clients[0]
    other = await sessions.get("other")
    assert other.account_id == "other" and len(opener.opened) == 2


async def test_get_after_close_all_raises_connection_lost() -> None:
    opener = Opener()
    sessions = AccountSessions(opener)
    client = await sessions.get("acct")
    assert not sessions.stopped
    await sessions.close_all()
    assert sessions.stopped and client.closed and sessions.current("acct") is None
    for account_id in ("acct", "never-opened"):
        with pytest.raises(ConnectionLost, match="the venue is stopped") as caught:
            await sessions.get(account_id)
        assert caught.value.outcome_unknown is False  # nothing was sent: safe to retry
    assert len(opener.opened) == 1


async def test_a_failed_opening_is_not_kept() -> None:
    opener = Opener()
    opener.failures = 1
    sessions = AccountSessions(opener)
    with pytest.raises(OSError, match="cannot connect"):
        await sessions.get("acct")
    assert sessions.current("acct") is None
    client = await sessions.get("acct")  # tried again, and opened this time
    assert opener.opened == [client]


async def test_a_client_opened_while_stopping_is_closed_not_handed_out() -> None:
    opener = Opener()
    opener.release.clear()
    sessions = AccountSessions(opener)
    opening = asyncio.create_task(sessions.get("acct"))
    waiting = asyncio.create_task(sessions.get("acct"))  # queued behind the opening
    await opener.started.wait()
    await sessions.close_all()
    opener.release.set()
    for call in (opening, waiting):
        with pytest.raises(ConnectionLost, match="the venue is stopped"):
            await call
    assert [c.closed for c in opener.opened] == [True]  # opened once, and closed
    assert sessions.current("acct") is None
