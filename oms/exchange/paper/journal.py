"""Group commit of the paper exchange's changes, and holding back what reports them.

The engine runs on the event loop and records every durable change here
(:class:`~oms.exchange.paper.recorder.Recorder`) before it notifies anyone. Changes collect by
object (an order changed ten times in a loop iteration is written once). At the end of the
loop iteration they are *sealed*: snapshotted into rows on the loop, at a request boundary,
numbered, and queued for the writer thread. The writer commits whatever is queued when it
gets to it as one transaction (:class:`Store`), then reports the highest number it covered:
while it commits, the next group collects, so the commit rate adapts to the load without a
timer, and the writer never waits for the loop between commits.

Every message the transports queue is tagged with :meth:`Journal.ticket` (the number that
covers everything changed so far) and leaves only once that number is durable
(:meth:`Journal.wait`), so a client that received an order id, a fill or an account can
find it after a crash. The loop never blocks: it awaits a future resolved when the commit
returns.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

import structlog

from oms.backoff import Backoff
from oms.exchange.paper.restore import (
    account_record,
    engine_record,
    market_record,
    order_record,
    position_record,
    trade_key,
)
from oms.exchange.paper.store import Key, Row, Store

if TYPE_CHECKING:
    from oms.exchange.paper.accounts import Account
    from oms.exchange.paper.engine import Engine
    from oms.exchange.paper.orders import Order
    from oms.exchange.paper.positions import Position

log = structlog.get_logger("oms.paper.journal")

# Pending value meaning "save the market as it is when sealed".
_MARKET = object()
# Queued after the last group: the writer thread ends.
_STOP = None
# A failed commit is retried no sooner than this after the previous attempt (decorrelated
# jitter never goes below it), and no later than MAX_RETRY_DELAY_S.
MIN_RETRY_DELAY_S = 0.1
MAX_RETRY_DELAY_S = 5.0


class Journal:
    """The loop side of durability (see the module docstring), and its writer thread. Create
    it on the event loop that runs the engine."""

    def __init__(self, store: Store, engine: Engine) -> None:
        self._store = store
        self._engine = engine
        self._loop = asyncio.get_running_loop()
        self._pending: dict[Key, Any] = {}  # None: delete the row
        self._open = 1  # number of the group collecting changes
        self._durable = 0  # highest number known to be on disk
        self._scheduled = False
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._closed = False
        # (number, rows, last ids) from the loop to the writer thread.
        self._queue: queue.SimpleQueue[tuple[int, list[Row], tuple[int, int]] | None] = (
            queue.SimpleQueue()
        )
        self._stopping = threading.Event()
        # Figures for admin/get_stats and the benchmark (written by the writer thread).
        self.batches = 0
        self.rows = 0
        self.commit_s = 0.0
        self.last_commit_ms = 0
        self.failures = 0
        self._writer = threading.Thread(target=self._write_loop, name="paper-journal", daemon=True)
        self._writer.start()

    # ---- Recorder ----------------------------------------------------------------------------

    def order(self, order: Order) -> None:
        self._put(("order", order.order_id), order)
        if order.account is not None:
            # The account's margin sums follow the margin its orders hold.
            account = self._engine.accounts.by_id.get(order.account)
            if account is not None:
                self._put(("account", order.account), account)

    def order_gone(self, order_id: str) -> None:
        self._put(("order", order_id), None)

    def trade(self, account_id: str, trade: dict[str, Any]) -> None:
        self._put(("trade", trade_key(trade)), (account_id, trade))

    def trade_gone(self, trade: dict[str, Any]) -> None:
        self._put(("trade", trade_key(trade)), None)

    def position(self, account_id: str, position: Position) -> None:
        self._put(("position", f"{account_id}/{position.inst.name}"), (account_id, position))

    def account(self, account: Account) -> None:
        self._put(("account", account.account_id), account)

    def duplicate_label(self, label: str, count: int) -> None:
        self._put(("label", label), count)

    def market(self) -> None:
        """Save the synthetic market with the next batch (called periodically)."""
        self._put(("meta", "market"), _MARKET)

    def meta(self, key: str, value: Any) -> None:
        """Store a small JSON-able value under ``meta/key``."""
        self._put(("meta", key), value)

    def _put(self, key: Key, value: Any) -> None:
        self._pending[key] = value
        if not (self._scheduled or self._closed):
            # Not now: the rest of the current request (and whatever else is ready to run)
            # joins the group first.
            self._scheduled = True
            self._loop.call_soon(self._seal)

    # ---- Durability (for the transports) -----------------------------------------------------

    def ticket(self) -> int:
        """The number whose commit covers every change recorded so far."""
        return self._open if self._pending else self._open - 1

    def is_durable(self, ticket: int) -> bool:
        return ticket <= self._durable

    async def wait(self, ticket: int) -> None:
        """Return once group ``ticket`` (and every earlier one) is durable."""
        if ticket <= self._durable:
            return
        fut = self._waiters.get(ticket)
        if fut is None:
            fut = self._waiters[ticket] = self._loop.create_future()
        # Shielded: one waiter giving up (its connection closed) leaves the others waiting.
        await asyncio.shield(fut)

    async def flush(self) -> None:
        """Wait until everything recorded so far is durable."""
        await self.wait(self.ticket())

    # ---- commit ------------------------------------------------------------------------------

    def _seal(self) -> None:
        """Snapshot the pending changes (at a request boundary) and queue them."""
        self._scheduled = False
        if not self._pending or (self._queue.qsize() and not self._closed):
            # A group already waits for the writer: keep collecting (by object, so memory
            # stays bounded however long a commit takes); the next commit seals this one.
            return
        pending, self._pending = self._pending, {}
        rows: list[Row] = [
            (kind, key, None if value is None else self._encode(kind, value))
            for (kind, key), value in pending.items()
        ]
        # Id numbers, counters and the priority counter move with every request: always.
        rows.append(("meta", "engine", engine_record(self._engine)))
        self._queue.put((self._open, rows, self._engine.last_ids()))
        self._open += 1

    def _encode(self, kind: str, value: Any) -> Any:
        """A snapshot of ``value`` taken now, on the loop: the object changes afterwards."""
        if kind == "order":
            return order_record(value)
        if kind == "trade":
            account_id, trade = value
            return {"account": account_id, "trade": trade}  # trades never change
        if kind == "position":
            return position_record(*value)
        if kind == "account":
            return account_record(value)
        if value is _MARKET:
            return market_record(self._engine)
        return value

    def _write_loop(self) -> None:
        """The writer thread: commit everything queued as one transaction, report, repeat."""
        stop = False
        while not stop:
            item = self._queue.get()
            groups = []
            while item is not _STOP:
                groups.append(item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            stop = item is _STOP
            if not groups:
                continue
            # Later groups hold newer versions of the same rows: the last one wins.
            merged: dict[Key, Row] = {}
            for _, rows, _ in groups:
                for row in rows:
                    merged[(row[0], row[1])] = row
            number, _, last_ids = groups[-1]
            if self._commit(list(merged.values()), last_ids, number):
                self._loop.call_soon_threadsafe(self._committed, number)

    def _commit(self, rows: list[Row], last_ids: tuple[int, int], number: int) -> bool:
        """Commit, retrying until it works or the journal is closed (then False: nothing of
        it is acknowledged, and everything waiting for it keeps waiting)."""
        # A plain loop rather than tenacity: closing the journal ends the wait and gives up.
        delays = Backoff(MIN_RETRY_DELAY_S, MAX_RETRY_DELAY_S, jitter="decorrelated").delays()
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                self._store.commit(rows, last_ids)
            except Exception as exc:
                attempt += 1
                self.failures += 1
                delay = next(delays)
                log.error(
                    "paper.journal_commit_failed",
                    error=repr(exc), upto=number, attempt=attempt, retry_in_s=delay,
                )
                if self._stopping.wait(delay):
                    return False
                continue
            self.batches += 1
            self.rows += len(rows)
            self.commit_s += time.perf_counter() - started
            self.last_commit_ms = time.time_ns() // 1_000_000
            return True

    def _committed(self, number: int) -> None:
        """On the loop: everything up to ``number`` is durable."""
        self._durable = max(self._durable, number)
        for ticket in [t for t in self._waiters if t <= self._durable]:
            fut = self._waiters.pop(ticket)
            if not fut.done():
                fut.set_result(None)
        if self._pending and not self._scheduled:
            self._seal()

    # ---- lifecycle ---------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Commit figures (admin/get_stats)."""
        return {
            "batches": self.batches,
            "rows": self.rows,
            "rows_per_batch": round(self.rows / self.batches, 2) if self.batches else 0.0,
            "commit_ms_avg": round(self.commit_s / self.batches * 1000, 3) if self.batches else 0,
            "durable": self._durable,
            "open": self._open,
            "failures": self.failures,
            "last_commit_ms": self.last_commit_ms,
        }

    async def close(self, timeout_s: float = 30.0) -> None:
        """Save the market, commit what is pending and close the store. A clean close narrows
        the id reservation to the ids handed out, so the next start continues without a gap."""
        self.market()
        self._closed = True  # no new groups from now on; this one is sealed regardless
        self._seal()
        clean = True
        try:
            await asyncio.wait_for(self.flush(), timeout_s)
        except TimeoutError:
            clean = False
            log.error("paper.journal_close_timeout", open=self._open, durable=self._durable)
        self._stopping.set()
        self._queue.put(_STOP)
        await asyncio.to_thread(self._writer.join)
        last_ids = self._engine.last_ids() if clean else None
        try:
            await asyncio.to_thread(self._store.close, last_ids)
        except Exception as exc:  # the state is committed; only the tidy-up failed
            log.error("paper.journal_close_failed", error=repr(exc))
