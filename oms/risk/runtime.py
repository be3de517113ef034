"""Pre-trade risk inside a worker: what intake calls, what runs beside it.

:class:`IntakeGuard` is the one component the worker builds and intake calls (requests arrive
authenticated by the edge, :mod:`oms.streams.edge`):

* ``check_submit(order, at_release=...)`` for new orders (and queued ones at release);
* ``check_command(order, request)`` for cancels and amends;
* ``note_accepted(order)`` once an order is accepted.

Beside intake it runs the risk feeds (a group-less consumer filling the book; started and
stopped with the guard), the automatic ``reducing`` switch on the daily loss limit, and the
cancel sweep of halted accounts (:meth:`IntakeGuard.cancel_halted`, run periodically by the
worker). Prices come from the worker's market cache, through ``mark`` and ``index_price``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import structlog

from oms.component import Component
from oms.kafka.partitioning import partition_of
from oms.market.cache import LatestPrice
from oms.risk.book import RiskBook, utc_day
from oms.risk.controls import Send, account_subject, publish_change
from oms.risk.engine import RiskEngine
from oms.risk.feeds import RiskFeeds
from oms.schemas import (
    CommandType,
    DeadLetter,
    InstrumentSpec,
    OrderRecord,
    OrderRequest,
    OrderStatus,
    now_ms,
)
from oms.schemas.decode import KafkaMessage, Undecodable
from oms.schemas.rejection import Rejection
from oms.schemas.risk import AccountControls, TradingState
from oms.settings import Settings

log = structlog.get_logger(__name__)

# Orders a halt cancels: those the exchange may hold.
_AT_EXCHANGE = frozenset({OrderStatus.SUBMITTED, OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED})


class IntakeGuard(Component):
    """Pre-trade risk for one worker."""

    def __init__(
        self,
        settings: Settings,
        *,
        orders_changelog: str,
        instrument: Callable[[str | None], InstrumentSpec | None],
        mark: LatestPrice,
        index_price: LatestPrice,
        send: Send,
        dead_letter: Callable[[DeadLetter], Awaitable[None]],
        owned_partitions: Callable[[], set[int]],
        cancel: Callable[[OrderRecord, str], Awaitable[None]],
        orders: Callable[[], Iterable[tuple[str, OrderRecord | None]]],
    ) -> None:
        super().__init__("intake-guard")
        self.settings = settings
        self.checks_enabled = settings.risk.checks_enabled
        self.book = RiskBook(settings.risk, instrument)
        self.engine = RiskEngine(self.book, mark=mark, index_price=index_price)
        self.feeds = RiskFeeds(
            settings,
            self.book,
            orders_changelog,
            on_undecodable=self._undecodable,
            on_positions=self._auto_reduce,
            # A lowered loss limit can be breached already: switch without waiting for a fill.
            on_controls=lambda controls: self._auto_reduce({controls.account_id}),
        )
        self._send = send
        self._dead_letter = dead_letter
        self._owned = owned_partitions
        self._cancel = cancel
        self._orders = orders
        self._auto_pending: set[tuple[str, int]] = set()
        self._halt_cancelled: set[tuple[str, int]] = set()

    # -- called by intake ---------------------------------------------------------------------

    def check_submit(self, order: OrderRecord, *, at_release: bool = False) -> Rejection | None:
        """Permissions, trading state and limits of a new (or released) order."""
        if not self.checks_enabled:
            return None
        return self.engine.check_submit(order, at_release=at_release)

    def check_command(self, order: OrderRecord, request: OrderRequest) -> Rejection | None:
        """Permissions and trading state of a cancel or amend of an account's own order."""
        if not self.checks_enabled:
            return None
        if request.command is CommandType.CANCEL:
            return self.engine.check_cancel(order.account_id)
        return self.engine.check_amend(order, request)

    def note_accepted(self, order: OrderRecord) -> None:
        if self.checks_enabled:
            self.engine.note_accepted(order)

    def is_ready(self) -> bool:
        """Does the book hold everything that was on the risk topics at start?"""
        return not self.checks_enabled or self.feeds.ready.is_set()

    async def ready(self) -> None:
        """Wait until the book holds everything that was on the risk topics at start."""
        if self.checks_enabled:
            await self.feeds.ready.wait()

    # -- background -----------------------------------------------------------------------------

    async def on_start(self) -> None:
        if self.checks_enabled:
            await self.feeds.start()

    async def on_stop(self) -> None:
        await self.feeds.stop()

    def owns(self, key: str) -> bool:
        """Does this worker own the request partition of ``key`` (one writer per account)?"""
        return partition_of(key, self.settings.kafka.partitions) in self._owned()

    def owns_partition(self, partition: int) -> bool:
        """Does this worker answer for ``partition`` of a topic every worker reads in full
        (ticks, risk controls, positions)? Its owner is the owner of the same partition of
        the request topic, so exactly one worker does, as long as no rebalance is under way."""
        return partition % self.settings.kafka.partitions in self._owned()

    async def _undecodable(self, message: KafkaMessage, failure: Undecodable) -> None:
        """A message of a topic every worker reads that none can use: logged by every worker,
        dead-lettered by the owner of its partition (one letter, not one per worker)."""
        log.warning(
            "risk.feed_undecodable",
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            reason_code=failure.reason_code.value,
            error=failure.error[:300],
        )
        if self.owns_partition(message.partition):
            await self._dead_letter(failure.letter_for(message, consumer="worker"))

    async def _auto_reduce(self, accounts: set[str]) -> None:
        """Daily loss limit reached: switch the account to ``reducing`` (published once, by
        the worker owning the account's subject key; every worker enforces it at once)."""
        today = utc_day(now_ms())
        for account in accounts:
            controls = self.book.controls_of(account)
            if controls.trading_state is not TradingState.ACTIVE:
                continue
            state, why = self.book.effective_state(account)
            if state is not TradingState.REDUCING or (account, today) in self._auto_pending:
                continue
            if not self.owns(account_subject(account)):
                continue
            self._auto_pending.add((account, today))
            after = controls.model_copy(
                update={"trading_state": TradingState.REDUCING, "state_reason": why}
            )
            await publish_change(
                self._send,
                self.settings,
                controls,
                after,
                actor="risk-engine",
                action="auto:daily_loss",
            )

    async def cancel_halted(self) -> int:
        """Cancel open orders (of this worker's partitions) of accounts halted with
        ``cancel_open_orders``; each order once per halt."""
        halted: dict[str, AccountControls] = {
            c.account_id: c
            for c in self.book.accounts_with_controls()
            if c.trading_state is TradingState.HALTED and c.cancel_open_orders
        }
        if not halted:
            return 0
        owned, partitions = self._owned(), self.settings.kafka.partitions
        sent = 0
        for order_id, order in list(self._orders()):
            if order is None or order.status not in _AT_EXCHANGE:
                continue
            controls = halted.get(order.account_id)
            if controls is None or (order_id, controls.version) in self._halt_cancelled:
                continue
            if partition_of(order_id, partitions) not in owned:
                continue
            self._halt_cancelled.add((order_id, controls.version))
            log.info("risk.halt_cancel", order_id=order_id, account_id=order.account_id)
            await self._cancel(order, f"risk-halt-{controls.version}")
            sent += 1
        return sent
