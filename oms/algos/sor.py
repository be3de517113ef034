"""Smart order routing as an execution strategy plugin (entry point ``sor``).

A routed parent (``metadata.algo = "sor"``, ``sor_venues`` and the other
:class:`~oms.orders.params.SorParams`) never goes to a venue itself: intake records it as
working (``open``), like a TWAP parent. The worker's timer then works it in attempts:

1. ask the scheduler for the order books of its venues (``Plan.books``) and wake now;
2. with the books, :func:`~oms.orders.routing.split` the remainder (within the parent's limit
   price, if it is a limit order) across them into the attempt's IOC limit children, one per
   venue, each with the deterministic request id ``sor.{parent}.{attempt}.{venue}``, and the
   ``routed`` event (the books seen, the allocation, why venues got nothing);
3. hand that to the scheduler as the attempt's :class:`~oms.orders.decisions.Decision`: it
   goes to the writer of the parent's partition (the ``release`` agent, an internal ``route``
   trigger), which records the attempt on the parent first (each child among its
   ``children`` as ``[0, 0, 0]``: live, nothing filled; the attempt in
   ``metadata.algo_decisions``) and only then emits the event and publishes the children;
4. wait while a child is live; its fills fold into the parent (``child:`` reports), which is
   ``filled`` once they sum to its amount;
5. a remainder (a venue left its IOC unfilled, rejected it, or the split could not place it
   all) is routed again on fresh books, at most ``sor_max_attempts`` times in all.

A venue that just left a child unfilled is kept among the next attempt's venues: an IOC that
missed means the liquidity it was counted against moved, and the fresh book shows what is
there now; leaving the venue out could leave the order unfilled where the only liquidity is.
Venues whose rate budget would hold a child back are left out by the split itself, and the
number of attempts bounds a venue that keeps showing liquidity it does not fill.

The parent ends with a remainder (filled part kept) when an attempt finds nothing it can place
(``no_liquidity``) or the attempts are used up (``route_exhausted``): the strategy publishes a
cancel of the parent carrying that reason. A parent cancelled by its owner has its live
children cancelled (a recorded child not heard of yet among them).

The attempts made are read from the parent's record only: the attempts recorded on it (and,
for a parent from before attempts were recorded, those with a child among its children). A
worker that takes the parent over (a restart, a rebalance) therefore never routes an attempt
whose children are out: they are on the parent, live until their news comes. Two workers
deciding the same attempt at once (the old owner's decision still on its way) is settled by
the writer, which records the first and ignores the other; an attempt this worker decided
and whose record has not come back yet (``ctx.sent``) is waited for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from oms.algos.strategy import Plan, StrategyBase, StrategyContext, VenueQuote
from oms.algos.twap import CANCEL_WINDOW_MS, child_cancel
from oms.orders.decisions import Decision, decision_key, recorded_steps
from oms.orders.params import ALGO_KEY, CANCEL_REASON_KEY, PARENT_WORKING, SOR, SorParams
from oms.orders.routing import (
    Direction,
    RoutePlan,
    VenueBook,
    child_request_id,
    child_requests,
    next_step,
    routing_event,
    split,
    venue_book,
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


def attempts_made(parent: OrderRecord, params: SorParams) -> int:
    """How many routing attempts were made, from the parent's record: the attempts recorded
    on it, or one past the last attempt with a child among its children (a parent from
    before attempts were recorded), whichever is more."""
    made = len(recorded_steps(parent))
    for attempt in range(made, params.max_attempts):
        if any(child_order_id(parent, attempt, v) in parent.children for v in params.venues):
            made = attempt + 1
    return made


def deciding(parent: OrderRecord, params: SorParams, sent: Mapping[str, int]) -> bool:
    """Did this worker send the decision of the parent's next attempt, not recorded yet?"""
    return decision_key(attempts_made(parent, params)) in sent


def end_request(parent: OrderRecord, reason: ReasonCode) -> OrderRequest:
    """The cancel that ends a parent with a remainder (its filled part kept), with why."""
    return OrderRequest(
        command=CommandType.CANCEL,
        request_id=f"sor_end.{parent.order_id}",
        account_id=parent.account_id,
        order_id=parent.order_id,
        metadata={CANCEL_REASON_KEY: reason.value},
    )


def children_cancels(parent: OrderRecord) -> list[OrderRequest]:
    """Cancels of a cancelled parent's children not heard of as done (a recorded child whose
    news has not come yet among them)."""
    children = parent.children.items()
    return [child_cancel(parent, child_id) for child_id, entry in children if not entry[2]]


def venue_books(
    direction: Direction, venues: tuple[str, ...], quotes: Mapping[str, VenueQuote]
) -> list[VenueBook]:
    """What :func:`split` needs of each venue, in the parent's order of venues."""
    books = []
    for venue in venues:
        quote = quotes.get(venue) or VenueQuote(venue, error="no book")
        books.append(
            venue_book(
                venue,
                quote.book,
                direction,
                lot=quote.lot,
                tick=quote.tick,
                taker_fee=quote.taker_fee,
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
    direction: Direction = "buy" if parent.direction is OrderDirection.BUY else "sell"
    books = venue_books(direction, params.venues, quotes)
    plan = split(
        direction,
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

    Settings: ``cancel_window_ms`` (how long after its parent was cancelled its children are
    still cancelled, default 120 s)."""

    params_model = SorParams

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(settings)
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

    def on_report(self, order: OrderRecord, ctx: StrategyContext) -> Plan:
        """A working parent waits for its live children, else routes now; a cancelled one
        has its children cancelled (on the timer, at once)."""
        if order.status in PARENT_WORKING:
            return self._next(order, ctx)
        if order.status is OrderStatus.CANCELLED:
            return Plan(wake_at=order.updated_at)
        return Plan.done()

    def on_timer(self, order: OrderRecord, ctx: StrategyContext) -> Plan:
        """With the books asked for: route the remainder; without: what comes next."""
        if order.status is OrderStatus.CANCELLED:
            if ctx.now - order.updated_at > self.cancel_window_ms:
                return Plan.done()
            return Plan(
                requests=tuple(children_cancels(order)),
                wake_at=order.updated_at + self.cancel_window_ms + 1,
            )
        if order.status not in PARENT_WORKING:
            return Plan.done()
        if ctx.books is None:
            return self._next(order, ctx)
        params = params_of(order)
        attempts = attempts_made(order, params)
        step, remainder = next_step(order.amount, order.children, attempts, params.max_attempts)
        if step != "route" or deciding(order, params, ctx.sent):
            return self._next(order, ctx)  # the children changed while the books came
        _, event, children = decide(order, params, ctx.books, attempts, remainder)
        if not children:
            return Plan(
                requests=(end_request(order, ReasonCode.NO_LIQUIDITY),),
                events=(event,),
                wake_at=None,
            )
        # Recorded on the parent before its children go out; the write that records it wakes
        # the parent (on_report), which then waits for the children's news.
        return Plan(decision=Decision(attempts, tuple(children), (event,)))

    def _next(self, order: OrderRecord, ctx: StrategyContext) -> Plan:
        params = params_of(order)
        attempts = attempts_made(order, params)
        step, remainder = next_step(order.amount, order.children, attempts, params.max_attempts)
        if step == "wait" or (step == "route" and deciding(order, params, ctx.sent)):
            return Plan()  # a live child, or this worker's decision not recorded yet
        if step == "route":
            return Plan(books=params.venues, depth=params.depth, wake_at=ctx.now)
        if remainder > 0:
            return Plan(requests=(end_request(order, ReasonCode.ROUTE_EXHAUSTED),))
        return Plan()  # filled: the last child's news makes it so
