"""Group commit of the paper exchange's changes, and holding back what reports them.

The engine runs on the event loop and records every durable change here
(:class:`~oms.exchange.paper.recorder.Recorder`) before it notifies anyone. Changes collect in
the *open batch* (by object, so an order changed ten times is written once). Batches are
numbered; one at a time is committed by the writer thread (:class:`Store`), and everything
recorded meanwhile goes into the next one, so the commit rate adapts to the load without a
timer: one fsync covers every request that arrived during the previous one.

Every message the transports queue is tagged with :meth:`Journal.ticket` (the batch that
covers everything changed so far) and leaves only once that batch is durable
(:meth:`Journal.wait`), so a client that received an order id, a fill or an account can
find it after a crash. The loop never blocks: it awaits a future resolved when the commit
returns.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import structlog

from oms.exchange.paper.restore import (
    account_record,
    engine_record,
    market_record,
    order_record,
    position_record,
    trade_key,
)
from oms.exchange.paper.store import Key, Row, Store, encode_batch

if TYPE_CHECKING:
    from oms.exchange.paper.accounts import Account
    from oms.exchange.paper.engine import Engine
    from oms.exchange.paper.orders import Order
    from oms.exchange.paper.positions import Position

log = structlog.get_logger("oms.paper.journal")

# Pending value meaning "save the market as it is at commit time".
_MARKET = object()
MAX_RETRY_DELAY_S = 5.0


class Journal:
    """The loop side of durability (see the module docstring). Create it on the event loop
    that runs the engine."""

    def __init__(self, store: Store, engine: Engine) -> None:
        self._store = store
        self._engine = engine
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="paper-journal")
        self._pending: dict[Key, Any] = {}  # None: delete the row
        self._open = 1  # number of the batch collecting changes
        self._durable = 0  # highest batch number known to be on disk
        self._committing = False
        self._scheduled = False
        self._retry: asyncio.TimerHandle | None = None
        self._failures = 0
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._closed = False
        # Figures for admin/get_stats and the benchmark.
        self.batches = 0
        self.rows = 0
        self.commit_s = 0.0
        self.last_commit_ms = 0

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
        if not (self._scheduled or self._committing or self._retry or self._closed):
            # Not now: the rest of the current request (and whatever else is ready to run)
            # joins the batch first.
            self._scheduled = True
            self._loop.call_soon(self._submit)

    # ---- Durability (for the transports) -----------------------------------------------------

    def ticket(self) -> int:
        """The batch whose commit covers every change recorded so far."""
        return self._open if self._pending else self._open - 1

    def is_durable(self, ticket: int) -> bool:
        return ticket <= self._durable

    async def wait(self, ticket: int) -> None:
        """Return once batch ``ticket`` (and every earlier one) is durable."""
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

    def _submit(self) -> None:
        self._scheduled = False
        if self._committing or self._retry or not self._pending:
            return
        batch, self._pending = self._pending, {}
        number = self._open
        self._open += 1
        upserts: list[Row] = []
        deletes: list[Key] = []
        for (kind, key), value in batch.items():
            if value is None:
                deletes.append((kind, key))
            else:
                upserts.append((kind, key, self._encode(kind, value)))
        # Id numbers, counters and the priority counter move with every request: always.
        upserts.append(("meta", "engine", engine_record(self._engine)))
        last_ids = self._engine.last_ids()
        upserts_json, deletes_json = encode_batch(upserts, deletes)
        self._committing = True
        started = time.perf_counter()
        fut = self._loop.run_in_executor(
            self._executor, self._store.commit, upserts_json, deletes_json, last_ids
        )
        fut.add_done_callback(
            lambda f: self._committed(f, number, batch, len(upserts) + len(deletes), started)
        )

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

    def _committed(
        self,
        fut: asyncio.Future[None],
        number: int,
        batch: dict[Key, Any],
        rows: int,
        started: float,
    ) -> None:
        self._committing = False
        exc = fut.exception()
        if exc is not None:
            # Nothing of the batch is acknowledged: its changes go back into the open batch
            # (where newer changes of the same objects win) and are retried; every reply
            # waiting for it keeps waiting.
            for key, value in batch.items():
                self._pending.setdefault(key, value)
            self._failures += 1
            delay = min(MAX_RETRY_DELAY_S, 0.05 * 2**self._failures)
            log.error(
                "paper.journal_commit_failed",
                error=repr(exc), batch=number, attempt=self._failures, retry_in_s=delay,
            )
            self._retry = self._loop.call_later(delay, self._retry_now)
            return
        self._failures = 0
        self._durable = number
        self.batches += 1
        self.rows += rows
        self.commit_s += time.perf_counter() - started
        self.last_commit_ms = time.time_ns() // 1_000_000
        for ticket in [t for t in self._waiters if t <= number]:
            fut_done = self._waiters.pop(ticket)
            if not fut_done.done():
                fut_done.set_result(None)
        if self._pending:
            self._submit()  # the group commit: everything recorded during this one

    def _retry_now(self) -> None:
        self._retry = None
        self._submit()

    # ---- lifecycle ---------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Commit figures (admin/get_stats)."""
        return {
            "batches": self.batches,
            "rows": self.rows,
            "rows_per_batch": round(self.rows / self.batches, 2) if self.batches else 0.0,
            "commit_ms_avg": round(self.commit_s / self.batches * 1000, 3) if self.batches else 0,
            "durable_batch": self._durable,
            "open_batch": self._open,
            "failures": self._failures,
            "last_commit_ms": self.last_commit_ms,
        }

    async def close(self, timeout_s: float = 30.0) -> None:
        """Save the market, commit what is pending and close the store. A clean close narrows
        the id reservation to the ids handed out, so the next start continues without a gap."""
        self.market()
        clean = True
        try:
            await asyncio.wait_for(self.flush(), timeout_s)
        except TimeoutError:
            clean = False
            log.error("paper.journal_close_timeout", pending=len(self._pending))
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        last_ids = self._engine.last_ids() if clean else None
        try:
            await self._loop.run_in_executor(self._executor, self._store.close, last_ids)
        except Exception as exc:  # the state is committed; only the tidy-up failed
            log.error("paper.journal_close_failed", error=repr(exc))
        self._executor.shutdown(wait=False)
