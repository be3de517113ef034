"""Where an order is executed: commands go to the exchange, answers come back as reports.

The executor never writes order state itself. Every outcome (acknowledgement, fills,
refusal) is an :class:`ExecutionReport` handed to its ``publish``, and applied by the
order-state code (:func:`~oms.streams.order_state.apply_news`), so there is one way news
changes an order, whether it came from our RPC, the ``user.orders`` stream, or a
reconciliation. In the worker ``publish`` is an :class:`~oms.streams.in_place.InPlaceRoute`:
applied in place when the worker owns the order, through ``execution-reports`` otherwise.

Exactly-once towards the exchange: our order id is the exchange's client order id (Deribit's
``label``). A submit whose
outcome is unknown (connection lost, timeout, or a request that a previous worker may have
sent before it died) is first looked up by label and only resent when the exchange has no
order with that label.

The executor talks to an :class:`~oms.exchange.interface.Exchange` only (whichever venue
:func:`~oms.exchange.venues.create_exchange` chose): retries, label lookups and error
strategies live here, once, for every venue. Three parts, built in this order by the worker:

* :class:`InflightCommands`: the commands running in the background, one chain per order;
* :class:`LabelLookup`: an order looked up at the exchange by its label, with the fills we
  missed (shared with the reconciliation, :mod:`oms.lifecycle.reconcile`);
* :class:`OrderExecutor`: the commands themselves.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

from oms.algos.tuning_math import delay_bucket, retry_metric_name
from oms.backoff import Backoff
from oms.component import Component, ComponentState
from oms.exchange.errors import NEEDS_REVIEW, RETRIES_EXHAUSTED, ExchangeError, OrderNotFound
from oms.exchange.interface import Exchange
from oms.exchange.translate import report_from_error
from oms.lifecycle.lookup import LabelLookup
from oms.lifecycle.policy import policy_of
from oms.schemas import (
    CommandType,
    ExchangeOrderState,
    ExecutionReport,
    OrderRecord,
    OrderRequest,
    OrderStatus,
    ReportSource,
    now_ms,
)
from oms.settings import LifecycleSettings, WorkerSettings

log = structlog.get_logger(__name__)

Publish = Callable[[ExecutionReport], Awaitable[None]]

# Filled amounts are floats on the wire (options): compare with a tolerance.
_EPSILON = 1e-9

# How long a stopping worker lets the commands in flight finish.
DRAIN_S = 2.0

OnMissing = Callable[[OrderRecord, str], Awaitable[None]]
OnCommand = Callable[[str, float, bool], None]


class InflightCommands(Component):
    """Commands running in the background, one chain per order: the commands of an order
    reach the exchange in the order they were asked, and at most
    ``16 x max_inflight_per_account`` run at once.

    Stopping gives the running commands ``drain_s`` to finish, then cancels the rest (what a
    crash would do: a successor finds every such order by its label), and runs no command
    after that."""

    def __init__(self, settings: WorkerSettings, *, drain_s: float = DRAIN_S) -> None:
        super().__init__("commands")
        self._drain_s = drain_s
        self._running: dict[str, asyncio.Task[None]] = {}
        # order id -> when its last command finished (monotonic s), for is_inflight.
        self._finished: dict[str, float] = {}
        self._settle_s = settings.submit_timeout_s
        self._capacity = asyncio.Semaphore(max(1, settings.max_inflight_per_account) * 16)

    @property
    def count(self) -> int:
        """Orders with a command running now."""
        return len(self._running)

    def is_running(self, order_id: str) -> bool:
        """A command of this order is running right now."""
        return order_id in self._running

    def is_inflight(self, order_id: str) -> bool:
        """A command of this order is running, or just finished and its report may still
        be on its way to the order-state agent: a sweep must not act on the order yet (a
        resubmit could race a rejection or a review that is about to be applied)."""
        if order_id in self._running:
            return True
        finished = self._finished.get(order_id)
        return finished is not None and time.monotonic() - finished < self._settle_s

    def pending(self) -> list[asyncio.Task[None]]:
        """The tasks running now (to wait for them)."""
        return list(self._running.values())

    async def run(self, order_id: str, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background after the order's earlier commands (waits only for
        a free slot)."""
        if self.state is ComponentState.STOPPED:
            work.close()
            log.info("executor.stopped_command_dropped", order_id=order_id)
            return
        previous = self._running.get(order_id)
        await self._capacity.acquire()

        async def run() -> None:
            try:
                if previous is not None:
                    # Commands of one order reach the exchange in the order they were asked.
                    await asyncio.wait([previous])
                await work
            except Exception:
                log.exception("executor.command_failed", order_id=order_id)
            finally:
                self._capacity.release()
                if self._running.get(order_id) is task:
                    del self._running[order_id]
                    self._remember_finished(order_id)

        task = asyncio.create_task(run(), name=f"exec:{order_id}")
        self._running[order_id] = task

    async def on_stop(self) -> None:
        running = self.pending()
        if not running:
            return
        _, left = await asyncio.wait(running, timeout=self._drain_s)
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        log.info("executor.stopped", finished=len(running) - len(left), cancelled=len(left))

    def _remember_finished(self, order_id: str) -> None:
        now = time.monotonic()
        self._finished[order_id] = now
        if len(self._finished) > 10_000:
            cutoff = now - self._settle_s
            self._finished = {k: t for k, t in self._finished.items() if t >= cutoff}


class OrderExecutor:
    """Sends commands to the exchange in the background and publishes what happened.

    ``on_missing(order, what)`` is told when the exchange did not know an order a command or
    re-check looked for (the reconciliation counts it toward lost_at_venue); ``on_command``
    observes every exchange command: (command, seconds, ok)."""

    def __init__(
        self,
        exchange: Exchange,
        lookup: LabelLookup,
        commands: InflightCommands,
        publish: Publish,
        settings: LifecycleSettings,
        *,
        on_missing: OnMissing,
        on_command: OnCommand | None = None,
    ) -> None:
        self._exchange = exchange
        self._lookup = lookup
        self._commands = commands
        self._publish = publish
        self._settings = settings
        self._on_missing = on_missing
        self._on_command = on_command
        # Full jitter: the orders that fail together (a rate limit, a lost connection) retry
        # spread out; never later than retry_max_delay.
        self._retry_backoff = Backoff(settings.retry_delay, settings.retry_max_delay)
        self._jitter = random.Random()
        self._counters: dict[str, int] = {
            "submits": 0,
            "resubmits": 0,
            "label_hits": 0,
            "errors": 0,
            "retries": 0,
            "rechecks": 0,
            "recheck_not_found": 0,
        }
        # Cumulative retry outcomes (see oms.algos.tuning_math.retry_metric_name): bounded
        # by the error kinds times the wait ladder.
        self._retry_outcomes: dict[str, int] = {}

    # -- public API used by the agents -------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        """Counters of the commands, of the fills the label lookups recovered, and of retry
        outcomes per venue, error kind and wait (``retry.*``)."""
        return {**self._counters, **self._lookup.stats, **self._retry_outcomes}

    def _retried(self, venue: str, after: tuple[str, float] | None, ok: bool) -> None:
        """Count the outcome of a retry at ``venue`` (the order's) sent ``after`` = (error
        kind, wait s) a failure."""
        if after is None:
            return
        reason, waited = after
        bucket = delay_bucket(waited)
        kinds = ("attempts", "succeeded") if ok else ("attempts",)
        for kind in kinds:
            name = retry_metric_name(venue, reason, bucket, kind)
            self._retry_outcomes[name] = self._retry_outcomes.get(name, 0) + 1

    async def submit(self, order: OrderRecord, *, check_label_first: bool = False) -> None:
        """Send a new order. ``check_label_first`` for requests a previous worker may have
        sent already (replayed after a crash or rebalance)."""
        await self._commands.run(order.order_id, self._submit(order, check_label_first))

    async def cancel(self, order: OrderRecord, request_id: str) -> None:
        """Cancel by label, after any submit of the same order still in flight."""
        await self._commands.run(order.order_id, self._cancel(order, request_id))

    async def amend(self, order: OrderRecord, request: OrderRequest) -> None:
        """Edit price and/or amount, after any command of the same order still in flight."""
        await self._commands.run(order.order_id, self._amend(order, request))

    async def dispatch(
        self, order: OrderRecord, *, uncertain: bool = False, prepaid: bool = False
    ) -> None:
        """Send a queued order: first say so on the reports topic (queued -> submitted, in
        order before the exchange's answer), then submit. ``uncertain``: rebuilt after a
        takeover, so look it up by label first. ``prepaid``: the dispatcher already reserved
        the rate-limit credit."""
        await self._publish(
            ExecutionReport(
                report_id=f"{order.order_id}:dispatch:{order.version}",
                order_id=order.order_id,
                account_id=order.account_id,
                venue=order.venue,
                source=ReportSource.DISPATCH,
                command=CommandType.SUBMIT,
                request_id=order.request_id,
                instrument_name=order.instrument_name,
            )
        )
        await self._commands.run(order.order_id, self._submit(order, uncertain, prepaid=prepaid))

    async def cancel_held(self, order: OrderRecord, request_id: str) -> None:
        """Cancel a queued order this worker did not send itself (rebuilt after a takeover):
        cancel it at the exchange if a previous owner sent it, else report it cancelled."""
        await self._commands.run(order.order_id, self._cancel_held(order, request_id))

    async def reconcile(self, order: OrderRecord) -> None:
        """Look an order up by label; report it, or resubmit if the exchange never got it."""
        await self._commands.run(order.order_id, self._submit(order, check_label_first=True))

    async def recheck(self, order: OrderRecord) -> None:
        """Fetch an acknowledged order's state (by the exchange's id, else by label) and
        report it: a missed order update from the exchange's stream never leaves an order
        stale."""
        await self._commands.run(order.order_id, self._recheck(order))

    # -- internals ---------------------------------------------------------------------------

    async def _cancel_held(self, order: OrderRecord, request_id: str) -> None:
        if await self._lookup.find(order) is not None:
            await self._cancel(order, request_id)
            return
        await self._publish(
            ExecutionReport(
                report_id=f"{order.order_id}:cancel_held:{request_id}",
                order_id=order.order_id,
                account_id=order.account_id,
                venue=order.venue,
                source=ReportSource.RECONCILE,
                command=CommandType.CANCEL,
                request_id=request_id,
                instrument_name=order.instrument_name,
                order_state=ExchangeOrderState.CANCELLED,
            )
        )

    async def _submit(
        self, order: OrderRecord, check_label_first: bool, *, prepaid: bool = False
    ) -> None:
        policy = policy_of(order.metadata, self._settings)
        attempts = policy.submit_attempts
        last_error: ExchangeError | None = None
        after: tuple[str, float] | None = None  # (error kind, wait) before this attempt
        for attempt in range(attempts):
            if check_label_first or attempt > 0:
                # Before any (re)send: an order that reached the exchange is never sent twice.
                found = await self._lookup.find(order)
                if found is not None:
                    # After a failure: the failed attempt had reached the exchange after
                    # all, so no retry went out (and none is counted).
                    self._counters["label_hits"] += 1
                    await self._publish(found)
                    return
                if attempt > 0:
                    self._counters["retries"] += 1
                self._counters["resubmits"] += 1
            started = asyncio.get_running_loop().time()
            try:
                self._counters["submits"] += 1
                report = await self._exchange.place(order, prepaid=prepaid and attempt == 0)
            except ExchangeError as exc:
                self._observe("submit", started, ok=False)
                self._retried(order.venue, after, ok=False)
                last_error = exc
                self._counters["errors"] += 1
                if not exc.retryable:
                    break  # a business rejection: sending it again cannot help
                if attempt + 1 < attempts:
                    wait = self._backoff(attempt, exc.reason)
                    after = (exc.reason, wait)
                    await asyncio.sleep(wait)
                continue
            self._observe("submit", started, ok=True)
            self._retried(order.venue, after, ok=True)
            await self._publish(report)
            return
        assert last_error is not None
        if last_error.outcome_unknown or last_error.retryable:
            # Never give up on an order that may be live: one last label lookup.
            found = await self._lookup.find(order)
            if found is not None:
                await self._publish(found)
                return
        await self._publish_error(
            order,
            _strategy_outcome(last_error, policy.error_handling, attempts),
            CommandType.SUBMIT,
            order.request_id,
        )

    async def _publish_error(
        self, order: OrderRecord, error: ExchangeError, command: CommandType, request_id: str
    ) -> None:
        """Report a command the exchange refused (or that could not be sent)."""
        await self._publish(
            report_from_error(
                error,
                order_id=order.order_id,
                account_id=order.account_id,
                instrument_name=order.instrument_name,
                command=command,
                request_id=request_id,
            )
        )

    async def _missing(self, order: OrderRecord, source: str) -> None:
        await self._on_missing(order, source)

    async def _recheck(self, order: OrderRecord) -> None:
        # Never a resubmit from here: the order was acknowledged once, so only look.
        self._counters["rechecks"] += 1
        if order.exchange_order_id:
            try:
                # Checked to carry our label: ids restart when an exchange loses its orders.
                report = await self._exchange.refresh(order)
                report = await self._lookup.with_missed_fills(order, report)
            except OrderNotFound as exc:
                # Not (or no longer) under that id: the label decides, below.
                self._counters["recheck_not_found"] += 1
                log.info(
                    "executor.recheck_not_found",
                    order_id=order.order_id,
                    exchange_order_id=order.exchange_order_id,
                    error=str(exc),
                )
            except ExchangeError as exc:
                log.info("executor.recheck_failed", order_id=order.order_id, error=str(exc))
                return
            else:
                await self._publish(report)
                return
        try:
            found = await self._lookup.find(order)
        except (ExchangeError, TimeoutError) as exc:
            log.info("executor.recheck_failed", order_id=order.order_id, error=str(exc))
            return
        if found is None:
            await self._missing(order, "recheck")
            return
        await self._publish(found)

    async def _cancel(self, order: OrderRecord, request_id: str) -> None:
        if order.status is OrderStatus.NEEDS_REVIEW:
            # Parked after a failed submit: the exchange should not have it. If it does after
            # all, cancel it there; otherwise the cancel is ours alone to record.
            found = await self._lookup.find(order)
            if found is None:
                await self._publish(_unsent_cancelled(order, request_id))
                return
        await self._command(order, request_id, CommandType.CANCEL, lambda: self._cancel_once(order))

    async def _amend(self, order: OrderRecord, request: OrderRequest) -> None:
        amount = request.amount or order.amount
        price = request.price if request.price is not None else order.price
        await self._command(
            order,
            request.request_id,
            CommandType.AMEND,
            lambda: self._exchange.amend(order, amount, price),
        )

    async def _cancel_once(self, order: OrderRecord) -> None:
        await self._exchange.cancel(order)

    async def _command(
        self,
        order: OrderRecord,
        request_id: str,
        command: CommandType,
        send: Callable[[], Awaitable[ExecutionReport | None]],
    ) -> None:
        # Cancels by label and edits (absolute amount and price) are idempotent: safe to send
        # again after a retryable failure, e.g. while the connection is being re-established.
        attempts = 1 + self._settings.retry_attempts
        result: ExecutionReport | None = None
        after: tuple[str, float] | None = None  # (error kind, wait) before this attempt
        for attempt in range(attempts):
            started = asyncio.get_running_loop().time()
            try:
                # Never race the reconciliation after a reconnect (duplicate live orders).
                await self._exchange.settled(order.account_id)
                result = await send()
            except ExchangeError as exc:
                self._observe(command.value, started, ok=False)
                self._retried(order.venue, after, ok=False)
                if exc.retryable and attempt + 1 < attempts:
                    self._counters["retries"] += 1
                    wait = self._backoff(attempt, exc.reason)
                    after = (exc.reason, wait)
                    await asyncio.sleep(wait)
                    continue
                await self._publish_error(order, exc, command, request_id)
                if isinstance(exc, OrderNotFound):
                    # No open order with our label (or the id named another one).
                    await self._missing(order, command.value)
                return
            self._observe(command.value, started, ok=True)
            self._retried(order.venue, after, ok=True)
            break
        if command is CommandType.CANCEL:
            # A cancel answers with a count; the order's new state follows on the stream,
            # and we fetch it now so the cancel never depends on that stream.
            result = await self._lookup.find(order)
            if result is None:
                await self._missing(order, command.value)
        if result is None:
            return
        await self._publish(
            result.model_copy(
                update={"source": ReportSource.RPC, "command": command, "request_id": request_id}
            )
        )

    def _backoff(self, attempt: int, reason: str = "") -> float:
        """The wait after failed attempt ``attempt`` (0 = the first), at most retry_max_delay:
        the tuned wait of the error kind if there is one, else exponential backoff."""
        tuned = retry_wait(self._settings, attempt, reason)
        if tuned is None:
            return self._retry_backoff.delay(attempt + 1)
        # Equal jitter below the tuned wait: orders that failed together still retry spread
        # out, and each wait is still counted at (about) the tuned step of the ladder.
        return self._jitter.uniform(max(self._settings.retry_delay, tuned / 2), tuned)

    def _observe(self, command: str, started: float, *, ok: bool) -> None:
        if self._on_command is not None:
            self._on_command(command, asyncio.get_running_loop().time() - started, ok)


def retry_wait(settings: LifecycleSettings, attempt: int, reason: str) -> float | None:
    """The tuned wait (``retry_schedule``) after failed attempt ``attempt`` (0 = the first) of
    an error of kind ``reason``, within retry_delay .. retry_max_delay; None: not tuned."""
    schedule = settings.retry_schedule.get(reason) or settings.retry_schedule.get("*")
    if not schedule:
        return None
    wait = schedule[min(attempt, len(schedule) - 1)]
    return min(settings.retry_max_delay, max(settings.retry_delay, wait))


def _strategy_outcome(error: ExchangeError, strategy: str, attempts: int) -> ExchangeError:
    """What a failed submit becomes under the order's error strategy.

    Business rejections are final whatever the strategy. A retryable failure is reported as
    is under ``cancel``, as retries exhausted under ``retry``, and parks the order for a
    human under ``manual``.
    """
    if not error.retryable:
        return error
    if strategy == "manual":
        return ExchangeError(
            NEEDS_REVIEW, f"submit failed ({error.reason}: {error.message}); waiting for review"
        )
    if strategy == "retry":
        return ExchangeError(
            RETRIES_EXHAUSTED,
            f"{attempts} attempts failed, last: {error.reason}: {error.message}",
        )
    return error


def _unsent_cancelled(order: OrderRecord, request_id: str) -> ExecutionReport:
    """A cancel of an order the exchange never had (checked by label just before)."""
    return ExecutionReport(
        report_id=f"reconcile:unsent-cancel:{order.order_id}:{request_id}",
        order_id=order.order_id,
        account_id=order.account_id,
        venue=order.venue,
        source=ReportSource.RECONCILE,
        command=CommandType.CANCEL,
        request_id=request_id,
        instrument_name=order.instrument_name,
        order_state=ExchangeOrderState.CANCELLED,
        amount=order.amount,
        price=order.price,
        filled_amount=0.0,
        exchange_timestamp=now_ms(),
    )
