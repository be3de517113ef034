"""One client connection (WebSocket) or one HTTP request, and its outbound queue."""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

import orjson

if TYPE_CHECKING:
    from aiohttp import web

    from oms.exchange.paper.accounts import Account
    from oms.exchange.paper.ratelimit import RateLimiter

_ids = itertools.count(1)


class Durability(Protocol):
    """When what a message reports is safely stored (:class:`~oms.exchange.paper.journal.
    Journal`): messages carry a ticket taken when queued and leave once it is durable."""

    def ticket(self) -> int: ...

    def is_durable(self, ticket: int) -> bool: ...

    async def wait(self, ticket: int) -> None: ...


class Immediate:
    """The in-memory exchange: nothing to wait for."""

    def ticket(self) -> int:
        return 0

    def is_durable(self, ticket: int) -> bool:
        return True

    async def wait(self, ticket: int) -> None:
        return None


IMMEDIATE = Immediate()


class Session:
    """Connection state: who is logged in, what it subscribed to, what is waiting to go out.

    Messages are queued and written by one writer task so notifications and replies keep
    the order in which the exchange produced them; each waits until the changes it may
    report are durable.
    """

    def __init__(
        self,
        ws: web.WebSocketResponse | None,
        peer: str = "",
        durability: Durability = IMMEDIATE,
    ) -> None:
        self.id = next(_ids)
        self.ws = ws
        self.peer = peer
        self.account: Account | None = None
        self.channels: set[str] = set()
        self.books_sent: set[str] = set()  # book channels that had their snapshot
        self.durability = durability
        self.out: deque[tuple[int, str]] = deque()  # (durability ticket, message)
        self.wake = asyncio.Event()
        self.closed = False
        self.close_after_flush = False
        self.heartbeat_interval: float | None = None
        self.heartbeat_task: asyncio.Task[None] | None = None
        self.test_pending = False
        self.cancel_on_disconnect: str | None = None  # None | "connection" | "account"
        # 100ms channels: channel -> buffered data items.
        self.batches: dict[str, list[Any]] = {}
        self.limiter: RateLimiter | None = None  # for unauthenticated requests
        self.transport: asyncio.Transport | None = None
        self.holding: list[str] | None = None  # notifications held back until the reply

    def send_text(self, text: str) -> None:
        if self.closed or self.ws is None:
            return
        if self.holding is not None:
            self.holding.append(text)
            return
        self.out.append((self.durability.ticket(), text))
        self.wake.set()

    def send(self, message: dict[str, Any]) -> None:
        self.send_text(orjson.dumps(message).decode())

    def notify(self, channel: str, data: Any) -> None:
        self.send_text(notification(channel, data))

    def close_soon(self) -> None:
        """Close once everything queued so far (e.g. a 10028 answer) is written."""
        self.close_after_flush = True
        self.wake.set()

    async def writer(self) -> None:
        """Drain the outbound queue onto the socket until the session ends."""
        ws = self.ws
        assert ws is not None
        durability = self.durability
        try:
            while not self.closed:
                await self.wake.wait()
                self.wake.clear()
                while self.out and not ws.closed:
                    ticket, text = self.out[0]
                    if not durability.is_durable(ticket):
                        await durability.wait(ticket)
                        continue
                    self.out.popleft()
                    await ws.send_str(text)
                if self.close_after_flush:
                    self.closed = True
                    await ws.close()
                    return
        except (ConnectionError, RuntimeError):
            # The peer went away mid-write; the read loop notices and cleans up.
            self.closed = True


def notification(channel: str, data: Any) -> str:
    """A subscription notification, serialized."""
    return orjson.dumps(
        {"jsonrpc": "2.0", "method": "subscription", "params": {"channel": channel, "data": data}}
    ).decode()
