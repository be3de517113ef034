"""Smart order routing as an execution strategy plugin (entry point ``sor``).

A routed parent (``metadata.algo = "sor"``, ``sor_venues`` and the other
:class:`~oms.orders.params.SorParams`) never goes to a venue itself: intake records it as
working (``open``), like a TWAP parent. The worker's timer then works it in attempts:

1. ask the scheduler for the order books of its venues (``Plan.books``) and wake now;
2. with the books, :func:`~oms.orders.routing.split` the remainder (within the parent's limit
   price, if it is a limit order) across them, publish the ``routed`` event (the books seen,
   the allocation, why venues got nothing) and the attempt's IOC limit children, one per
   venue, each with the deterministic request id ``sor.{parent}.{attempt}.{venue}``;
3. wait while a child is live; its fills fold into the parent (``child:`` reports), which is
   ``filled`` once they sum to its amount;
4. a remainder (a venue left its IOC unfilled, rejected it, or the split could not place it
   all) is routed again on fresh books, at most ``sor_max_attempts`` times in all.

A venue that just left a child unfilled is kept among the next attempt's venues: an IOC that
missed means the liquidity it was counted against moved, and the fresh book shows what is
there now; leaving the venue out could leave the order unfilled where the only liquidity is.
Venues whose rate budget would hold a child back are left out by the split itself, and the
number of attempts bounds a venue that keeps showing liquidity it does not fill.

The parent ends with a remainder (filled part kept) when an attempt finds nothing it can place
(``no_liquidity``) or the attempts are used up (``route_exhausted``): the strategy publishes a
cancel of the parent carrying that reason. A parent cancelled by its owner has its live
children cancelled.

Everything is derived from the parent's record and what this worker published
(``ctx.sent``): the attempts made are the attempts with a child among the parent's children
or a child request sent, so a restart continues where the last worker stopped. A parent seen
for the first time a while after its last write (a restart, a rebalance) waits
``settle_ms`` before routing, so the news of children already sent reaches it first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from oms.algos.strategy import Plan, StrategyBase, StrategyContext, VenueQuote
from oms.algos.twap import CANCEL_WINDOW_MS
from oms.orders.params import ALGO_KEY, CANCEL_REASON_KEY, SOR, SorParams
from oms.orders.routing import (
    RoutePlan,
    VenueBook,
    child_request_id,
    child_requests,
    next_step,
    routing_event,
    split,
)
from oms.orders.state_machine import transition
from oms.schemas import (
    CommandType,
    InstrumentSpec,
    OrderEvent,
    OrderRecord,
    OrderRequest,
    OrderStatus,
    OrderType,
    ReasonCode,
    derive_order_id,
)
from oms.schemas import Direction as OrderDirection
from oms.schemas.rejection import Rejection

# A parent first seen within this long of its last write is new (intake just recorded it).
FRESH_MS = 1_000
# A parent first seen later than that waits this long before routing (restart, rebalance):
# the news of children a previous worker sent has time to fold into it.
SETTLE_MS = 3_000
_WORKING = frozenset({OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED})


def is_sor(metadata: Mapping[str, Any]) -> bool:
    """Does this metadata name smart order routing?"""
    return metadata.get(ALGO_KEY) == SOR


def params_of(parent: OrderRecord) -> SorParams:
    """The parameters of a recorded parent (checked when intake accepted it)."""
    return SorParams.from_metadata(parent.metadata)


def start_parent(order: OrderRecord) -> tuple[OrderRecord, OrderEvent]:
    """Intake's side: the routed parent becomes a working order (never sent to a venue)."""
    working, event = transition(order, OrderStatus.OPEN)
    event.details["algo"] = SOR
    event.details["venues"] = list(params_of(order).venues)
    return working, event


def child_order_id(parent: OrderRecord, attempt: int, venue: str) -> str:
    """The order id (the label at its venue) of the parent's child at ``venue`` in
    ``attempt``."""
    return derive_order_id(parent.account_id, child_request_id(parent.order_id, attempt, venue))


def attempts_made(parent: OrderRecord, params: SorParams, sent: Mapping[str, int]) -> int:
    """How many routing attempts were made: one past the last attempt with a child among the
    parent's children or a child request published (``sent``), 0 if none."""
    made = 0
    for attempt in range(params.max_attempts):
        for venue in params.venues:
            if (
                child_order_id(parent, attempt, venue) in parent.children
                or child_request_id(parent.order_id, attempt, venue) in sent
            ):
                made = attempt + 1
                break
    return made


def sent_children(
    parent: OrderRecord, params: SorParams, sent: Mapping[str, int]
) -> dict[str, list[float]]:
    """The parent's children, plus those published but not heard of yet (live, nothing
    filled): a child sent a moment ago is waited for like a live one."""
    children = dict(parent.children)
    for attempt in range(params.max_attempts):
        for venue in params.venues:
            if child_request_id(parent.order_id, attempt, venue) in sent:
                children.setdefault(child_order_id(parent, attempt, venue), [0.0, 0.0, 0.0])
    return children


def end_request(parent: OrderRecord, reason: ReasonCode) -> OrderRequest:
    """The cancel that ends a parent with a remainder (its filled part kept), with why."""
    return OrderRequest(
        command=CommandType.CANCEL,
        request_id=f"sor_end.{parent.order_id}",
        account_id=parent.account_id,
        order_id=parent.order_id,
        metadata={CANCEL_REASON_KEY: reason.value},
    )


def children_cancels(
    parent: OrderRecord, params: SorParams, sent: Mapping[str, int]
) -> list[OrderRequest]:
    """Cancels of a cancelled parent's children that are live or were published and not
    heard of as done."""
    out = []
    for child_id, entry in sent_children(parent, params, sent).items():
        if entry[2]:
            continue  # that child is done
        out.append(
            OrderRequest(
                command=CommandType.CANCEL,
                request_id=f"parent_cancelled.{child_id}",
                account_id=parent.account_id,
                order_id=child_id,
                metadata={CANCEL_REASON_KEY: ReasonCode.LINKED_ORDER_CANCELLED.value},
            )
        )
    return out


def venue_books(
    direction: OrderDirection, venues: tuple[str, ...], quotes: Mapping[str, VenueQuote]
) -> list[VenueBook]:
    """What :func:`split` needs of each venue, in the parent's order of venues."""
    books = []
    for venue in venues:
        quote = quotes.get(venue) or VenueQuote(venue, error="no book")
        side = quote.book.asks if direction is OrderDirection.BUY else quote.book.bids
        books.append(
            VenueBook(
                venue,
                side,
                taker_fee=quote.taker_fee,
                lot=quote.lot,
                tick=quote.tick,
                entry_delay_s=quote.entry_delay_s,
            )
        )
    return books


def decide(
    parent: OrderRecord,
    params: SorParams,
    quotes: Mapping[str, VenueQuote],
    attempt: int,
    remainder: float,
) -> tuple[RoutePlan, OrderEvent, list[OrderRequest]]:
    """One routing attempt: the split of ``remainder`` over the venues' books, its ``routed``
    event and its children (none when nothing could be placed)."""
    books = venue_books(parent.direction, params.venues, quotes)
    plan = split(
        "buy" if parent.direction is OrderDirection.BUY else "sell",
        remainder,
        books,
        limit_price=parent.price if parent.order_type is OrderType.LIMIT else None,
        max_entry_delay_s=params.max_entry_delay_s,
    )
    failed = {v: q.error for v, q in quotes.items() if q.error is not None}
    if failed:
        # A venue whose book could not be had says so, rather than "empty book".
        plan = replace(plan, skipped={**plan.skipped, **failed})
    event = routing_event(parent, books, plan, attempt, remainder)
    return plan, event, child_requests(parent, plan, attempt)


class SorStrategy(StrategyBase):
    """Smart order routing across venues (see the module's documentation).

    Settings: ``settle_ms`` (how long a parent seen again after a restart waits before
    routing, default 3 s), ``cancel_window_ms`` (how long after its parent was cancelled its
    children are still cancelled, default 120 s)."""

    params_model = SorParams

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(settings)
        self.settle_ms = int(self.settings.get("settle_ms", SETTLE_MS))
        self.cancel_window_ms = int(self.settings.get("cancel_window_ms", CANCEL_WINDOW_MS))

    def check(self, request: OrderRequest, spec: InstrumentSpec, params: Any) -> Rejection | None:
        """Children are IOC takers: a post-only routed order cannot be worked."""
        if request.post_only:
            return Rejection(
                ReasonCode.NOT_SUPPORTED, "a routed order takes liquidity: post_only cannot apply"
            )
        if request.order_type not in (OrderType.LIMIT, OrderType.MARKET):
            return Rejection(
                ReasonCode.NOT_SUPPORTED,
                f"a routed order is a limit or market order, not {request.order_type.value}",
            )
        return None

    def on_order(self, order: OrderRecord, ctx: StrategyContext) -> Plan:
        """A working parent seen for the first time a while after its last write (a restart
        or rebalance) lets the news of children already sent arrive before routing."""
        if order.status in _WORKING and ctx.now - order.updated_at > FRESH_MS:
            return Plan(wake_at=max(ctx.now, order.updated_at + self.settle_ms))
        return self.on_report(order, ctx)

    def on_report(self, order: OrderRecord, ctx: StrategyContext) -> Plan:
        """A working parent waits for its live children, else routes now; a cancelled one
        has its children cancelled (on the timer, at once)."""
        if order.status in _WORKING:
            return self._next(order, ctx)
        if order.status is OrderStatus.CANCELLED:
            return Plan(wake_at=order.updated_at)
        return Plan.done()

    def on_timer(self, order: OrderRecord, ctx: StrategyContext) -> Plan:
        """With the books asked for: route the remainder; without: what comes next."""
        if order.status is OrderStatus.CANCELLED:
            if ctx.now - order.updated_at > self.cancel_window_ms:
                return Plan.done()
            params = params_of(order)
            return Plan(
                requests=tuple(children_cancels(order, params, ctx.sent)),
                wake_at=order.updated_at + self.cancel_window_ms + 1,
            )
        if order.status not in _WORKING:
            return Plan.done()
        if ctx.books is None:
            return self._next(order, ctx)
        params = params_of(order)
        attempts = attempts_made(order, params, ctx.sent)
        step, remainder = next_step(
            order.amount, sent_children(order, params, ctx.sent), attempts, params.max_attempts
        )
        if step != "route":
            return self._next(order, ctx)  # the children changed while the books came
        _, event, children = decide(order, params, ctx.books, attempts, remainder)
        if not children:
            return Plan(
                requests=(end_request(order, ReasonCode.NO_LIQUIDITY),),
                events=(event,),
                wake_at=None,
            )
        # Their news wakes the parent (on_report); nothing to do until then.
        return Plan(requests=tuple(children), events=(event,))

    def _next(self, order: OrderRecord, ctx: StrategyContext) -> Plan:
        params = params_of(order)
        attempts = attempts_made(order, params, ctx.sent)
        step, remainder = next_step(
            order.amount, sent_children(order, params, ctx.sent), attempts, params.max_attempts
        )
        if step == "wait":
            return Plan()
        if step == "route":
            return Plan(books=params.venues, depth=params.depth, wake_at=ctx.now)
        if remainder > 0:
            return Plan(requests=(end_request(order, ReasonCode.ROUTE_EXHAUSTED),))
        return Plan()  # filled: the last child's news makes it so
