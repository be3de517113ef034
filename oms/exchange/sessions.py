"""One venue client per account, opened on first use and closed for good when the venue
stops: :class:`AccountSessions`, what the venue adapters share of their session handling."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

from oms.exchange.errors import CONNECTION_LOST, ConnectionLost


class Closable(Protocol):
    """A client that holds a connection (or a pool of them) until closed."""

    async def close(self) -> None:
        """Release the client's connections."""


C = TypeVar("C", bound=Closable)


class AccountSessions(Generic[C]):
    """The clients of a venue's accounts: one per account, created by ``open_client`` on the
    first :meth:`get` of the account and reused after.

    Concurrent first calls of an account wait for the one client being opened rather than
    open two. A failure of ``open_client`` is raised to the caller that opened and to
    nobody else, and not kept: the next call tries again. Once :meth:`close_all` has run,
    every :meth:`get` raises :class:`~oms.exchange.errors.ConnectionLost` (with
    ``outcome_unknown`` False: nothing was sent).
    """

    def __init__(self, open_client: Callable[[str], Awaitable[C]]) -> None:
        self._open_client = open_client
        self._clients: dict[str, C] = {}
        # One per account seen: bounded by the venue's accounts.
        self._locks: dict[str, asyncio.Lock] = {}
        self._stopped = False

    @property
    def stopped(self) -> bool:
        """Whether :meth:`close_all` was called (the clients are closed for good)."""
        return self._stopped

    def current(self, account_id: str) -> C | None:
        """The account's client if it is open, without opening one."""
        return self._clients.get(account_id)

    async def get(self, account_id: str) -> C:
        """The account's client, opened on the first call.

        Raises whatever ``open_client`` raises, and :class:`ConnectionLost` once stopped.
        """
        client = self._clients.get(account_id)
        if client is not None:
            return client
        if self._stopped:
            raise _stopped()
        async with self._locks.setdefault(account_id, asyncio.Lock()):
            client = self._clients.get(account_id)
            if client is not None:
                return client
            if self._stopped:  # stopped while this call waited for the lock
                raise _stopped()
            client = await self._open_client(account_id)
            if self._stopped:
                # Stopped while it was being opened: close_all did not see it.
                await client.close()
                raise _stopped()
            self._clients[account_id] = client
            return client

    async def close_all(self) -> None:
        """Close every client, for good: later :meth:`get` calls raise."""
        self._stopped = True
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()


def _stopped() -> ConnectionLost:
    error = ConnectionLost(CONNECTION_LOST, "the venue is stopped")
    error.outcome_unknown = False  # nothing was sent
    return error
