"""Smart order routing: how one order is split across venues (pure, no I/O).

:func:`split` takes, per venue, the visible side of its order book that the order would take
(asks for a buy, bids for a sell), the venue's taker fee, its instrument rules (lot and tick)
and whether its rate budget lets an order in now, and returns the child allocations: the
cheapest liquidity net of fees first, across venues, never more than a venue shows, never
more than the order's amount, in whole lots of each venue and at prices on each venue's tick.

Each allocation is meant as an IOC limit child at the worst price it takes at its venue: it
sweeps the levels counted for it and nothing beyond. What a venue rejects or leaves unfilled
is routed again by calling :func:`split` with the remainder and fresh books (a venue that
just failed can be left out by the caller).

:func:`decision_details` is the payload of the order event that records a decision: the
books it saw (top levels) and the allocation, so a routing can be audited after the fact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from oms.orders.params import PARENT_KEY
from oms.orders.state_machine import make_event
from oms.schemas import (
    CommandType,
    OrderEvent,
    OrderEventType,
    OrderRecord,
    OrderRequest,
    OrderType,
    TimeInForce,
)
from oms.schemas import Direction as OrderDirection

Direction = Literal["buy", "sell"]
# Floats that differ by less than this are the same amount or price.
EPSILON = 1e-9
# Deribit's taker fee on perpetuals and futures (0.05%), the default of a venue.
DERIBIT_TAKER_FEE = 0.0005
# Levels per side a decision event records (the books are bounded in the event).
RECORDED_LEVELS = 5


@dataclass(frozen=True)
class Level:
    """One price level of a book side: ``amount`` (in the instrument's units) at ``price``."""

    price: float
    amount: float


@dataclass(frozen=True)
class BookSnapshot:
    """The top levels of one venue's order book (best first on each side)."""

    bids: tuple[Level, ...]
    asks: tuple[Level, ...]

    def side(self, direction: Direction) -> tuple[Level, ...]:
        """The levels an order of ``direction`` takes: asks for a buy, bids for a sell."""
        return self.asks if direction == "buy" else self.bids

    @classmethod
    def from_pairs(
        cls, bids: Sequence[Sequence[Any]], asks: Sequence[Sequence[Any]]
    ) -> BookSnapshot:
        """From ``[[price, amount], ...]`` per side (Deribit's ``public/get_order_book`` and
        ccxt's ``fetch_order_book`` alike); levels without a positive amount are dropped."""

        def levels(rows: Sequence[Sequence[Any]]) -> tuple[Level, ...]:
            out = []
            for row in rows:
                price, amount = float(row[0]), float(row[1])
                if amount > EPSILON and math.isfinite(price):
                    out.append(Level(price, amount))
            return tuple(out)

        return cls(levels(bids), levels(asks))


@dataclass(frozen=True)
class VenueBook:
    """What the router knows about one venue for one order.

    ``levels``: the side the order takes (asks for a buy, bids for a sell), best first;
    ``taker_fee``: fraction of the notional (0.0005 = 5 bp); ``lot``: the venue's minimum
    trade amount (every child a whole multiple of it); ``tick``: the venue's tick size;
    ``entry_delay_s``: how long the venue's rate budget makes the next order wait."""

    venue: str
    levels: tuple[Level, ...]
    taker_fee: float = DERIBIT_TAKER_FEE
    lot: float = 1.0
    tick: float = 0.5
    entry_delay_s: float = 0.0


@dataclass(frozen=True)
class Allocation:
    """One child: ``amount`` at ``venue`` as an IOC limit at ``price`` (on the venue's tick);
    ``average_price`` is what the levels it takes average to, ``net_price`` the same net of
    the venue's taker fee (higher for a buy, lower for a sell)."""

    venue: str
    amount: float
    price: float
    average_price: float
    net_price: float


@dataclass(frozen=True)
class RoutePlan:
    """A routing decision: the children, what could not be placed, and venues left out."""

    allocations: tuple[Allocation, ...]
    unallocated: float
    # venue -> why it got nothing although it was offered (rate budget, limit, no depth).
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def allocated(self) -> float:
        return sum(a.amount for a in self.allocations)


def net_price(price: float, fee: float, direction: Direction) -> float:
    """What one unit at ``price`` costs (buy) or yields (sell) after the taker fee."""
    return price * (1 + fee) if direction == "buy" else price * (1 - fee)


def split(
    direction: Direction,
    amount: float,
    books: Sequence[VenueBook],
    *,
    limit_price: float | None = None,
    max_entry_delay_s: float = 0.0,
) -> RoutePlan:
    """Split ``amount`` over ``books`` by the best price net of fees.

    Levels of every venue are taken best net price first (ties: the venue listed first);
    a venue whose ``entry_delay_s`` exceeds ``max_entry_delay_s`` is left out (its budget
    would hold the child back), so are levels beyond ``limit_price`` (the order's own
    limit, compared with the venue's price before fees: the price the child would carry).
    Each venue's share is a whole number of its lots within its visible depth; whatever
    cannot be placed so is ``unallocated``."""
    if amount < 0 or not math.isfinite(amount):
        raise ValueError(f"amount must be a finite non-negative number, got {amount}")
    buy = direction == "buy"
    skipped: dict[str, str] = {}
    candidates: list[tuple[float, int, int, VenueBook]] = []
    for order, book in enumerate(books):
        if book.lot <= 0 or book.tick <= 0:
            raise ValueError(f"venue {book.venue}: lot and tick must be positive")
        if book.entry_delay_s > max_entry_delay_s + EPSILON:
            skipped[book.venue] = f"rate budget: next order in {book.entry_delay_s:.3f}s"
            continue
        usable = 0
        for index, level in enumerate(book.levels):
            if level.amount <= EPSILON:
                continue
            if limit_price is not None and (
                level.price > limit_price + EPSILON if buy else level.price < limit_price - EPSILON
            ):
                continue
            key = net_price(level.price, book.taker_fee, direction)
            candidates.append((key if buy else -key, order, index, book))
            usable += 1
        if usable == 0:
            skipped[book.venue] = "no depth within the limit" if book.levels else "empty book"
    candidates.sort(key=lambda c: (c[0], c[1], c[2]))

    depth: dict[str, float] = {}  # visible depth counted so far per venue
    taken: dict[str, float] = {}  # allocated per venue (whole lots)
    notional: dict[str, float] = {}
    worst: dict[str, float] = {}
    remaining = amount
    for _, _, index, book in candidates:
        level = book.levels[index]
        depth[book.venue] = depth.get(book.venue, 0.0) + level.amount
        if remaining < book.lot - EPSILON:
            continue  # another venue's smaller lot may still use it
        have = taken.get(book.venue, 0.0)
        # Whole lots within the venue's depth so far: a fraction of a lot left on one level
        # completes with the next level of the same venue.
        room = _floor_lots(depth[book.venue], book.lot) - have
        want = _floor_lots(remaining, book.lot)
        take = min(room, want)
        if take <= EPSILON:
            continue
        taken[book.venue] = _round_amount(have + take, book.lot)
        notional[book.venue] = notional.get(book.venue, 0.0) + take * level.price
        worst[book.venue] = level.price
        remaining -= take
    allocations = []
    for book in books:
        got = taken.get(book.venue, 0.0)
        if got <= EPSILON:
            if book.venue not in skipped and book.levels:
                skipped[book.venue] = "better venues took the amount"
            continue
        average = notional[book.venue] / got
        allocations.append(
            Allocation(
                venue=book.venue,
                amount=got,
                price=_child_price(worst[book.venue], book.tick, buy, limit_price),
                average_price=average,
                net_price=net_price(average, book.taker_fee, direction),
            )
        )
    allocations.sort(key=lambda a: a.net_price if buy else -a.net_price)
    unallocated = max(0.0, amount - sum(a.amount for a in allocations))
    return RoutePlan(tuple(allocations), 0.0 if unallocated < EPSILON else unallocated, skipped)


def decision_details(
    direction: Direction,
    amount: float,
    books: Sequence[VenueBook],
    plan: RoutePlan,
    *,
    attempt: int = 0,
    levels: int = RECORDED_LEVELS,
) -> dict[str, Any]:
    """The ``details`` of the order event recording a routing decision (JSON-ready): the top
    ``levels`` of every book it saw, each venue's fee, the children and what was left."""
    return {
        "routing": {
            "attempt": attempt,
            "direction": direction,
            "amount": amount,
            "books": {
                book.venue: {
                    "levels": [[lv.price, lv.amount] for lv in book.levels[:levels]],
                    "taker_fee": book.taker_fee,
                    "lot": book.lot,
                    "tick": book.tick,
                    "entry_delay_s": book.entry_delay_s,
                }
                for book in books
            },
            "allocations": [
                {
                    "venue": a.venue,
                    "amount": a.amount,
                    "price": a.price,
                    "average_price": a.average_price,
                    "net_price": a.net_price,
                }
                for a in plan.allocations
            ],
            "unallocated": plan.unallocated,
            "skipped": dict(plan.skipped),
        }
    }


def venue_book(
    venue: str,
    snapshot: BookSnapshot,
    direction: Direction,
    *,
    lot: float,
    tick: float,
    taker_fee: float = DERIBIT_TAKER_FEE,
    entry_delay_s: float = 0.0,
) -> VenueBook:
    """What :func:`split` needs of one venue: the side of its book the order takes, its fee,
    and its own instrument's lot (minimum trade amount) and tick."""
    return VenueBook(
        venue,
        snapshot.side(direction),
        taker_fee=taker_fee,
        lot=lot,
        tick=tick,
        entry_delay_s=entry_delay_s,
    )


RouteStep = Literal["wait", "route", "done"]


def next_step(
    amount: float,
    children: Mapping[str, Sequence[float]],
    attempts: int,
    max_attempts: int,
) -> tuple[RouteStep, float]:
    """What a routed parent does next, from its children (child id -> [filled, average
    price, done 1.0/0.0], as :attr:`OrderRecord.children` keeps them) and the decisions made
    so far: ``wait`` while a child is live; ``route`` the remainder again while attempts are
    left; else ``done`` (filled, or what is left is given up). The amount is the remainder."""
    if any(not entry[2] for entry in children.values()):
        return "wait", 0.0
    remainder = amount - sum(entry[0] for entry in children.values())
    if remainder < EPSILON:
        return "done", 0.0
    if attempts >= max_attempts:
        return "done", remainder
    return "route", remainder


def child_request_id(parent_id: str, attempt: int, venue: str) -> str:
    """The deterministic request id of one child: one per parent, attempt and venue, so a
    decision published again is a duplicate at intake, never a second order (and the
    child's order id, its label at the venue, is derived from it)."""
    return f"sor.{parent_id}.{attempt}.{venue}"


def child_requests(parent: OrderRecord, plan: RoutePlan, attempt: int) -> list[OrderRequest]:
    """The children of one decision: IOC limit orders, each naming one venue, at the price
    of the worst level counted for it; they point at ``parent`` (``parent_id``) so their
    fills fold into it as a TWAP slice's do."""
    return [
        OrderRequest(
            command=CommandType.SUBMIT,
            request_id=child_request_id(parent.order_id, attempt, a.venue),
            account_id=parent.account_id,
            venue=a.venue,
            instrument_name=parent.instrument_name,
            amount=a.amount,
            direction=parent.direction,
            order_type=OrderType.LIMIT,
            price=a.price,
            time_in_force=TimeInForce.IMMEDIATE_OR_CANCEL,
            reduce_only=parent.reduce_only,
            priority=parent.priority,
            metadata={PARENT_KEY: parent.order_id, "sor_attempt": attempt},
        )
        for a in plan.allocations
    ]


def routing_event(
    parent: OrderRecord,
    books: Sequence[VenueBook],
    plan: RoutePlan,
    attempt: int,
    amount: float,
) -> OrderEvent:
    """The ``routed`` event of one decision about ``parent`` (``amount``: what was routed,
    the parent's remainder), carrying :func:`decision_details`; one event id per attempt."""
    direction: Direction = "buy" if parent.direction is OrderDirection.BUY else "sell"
    details = decision_details(direction, amount, books, plan, attempt=attempt)
    event = make_event(parent, OrderEventType.ROUTED, details=details)
    return event.model_copy(update={"event_id": f"{parent.order_id}:routed:{attempt}"})


def _floor_lots(value: float, lot: float) -> float:
    return _round_amount(math.floor(value / lot + EPSILON) * lot, lot)


def _round_amount(value: float, lot: float) -> float:
    # Keep lot multiples exact for fractional lots: no 0.30000000000000004.
    digits = max(0, -math.floor(math.log10(lot))) + 2 if lot < 1 else 0
    return round(value, digits) if digits else round(value, 9)


def _child_price(worst: float, tick: float, buy: bool, limit_price: float | None) -> float:
    """The child's limit: the worst level it takes, on the venue's tick, never beyond the
    order's own limit (itself put on this venue's tick inwards)."""
    price = _on_tick(worst, tick, up=buy)
    if limit_price is None:
        return price
    bound = _on_tick(limit_price, tick, up=not buy)
    return min(price, bound) if buy else max(price, bound)


def _on_tick(price: float, tick: float, *, up: bool) -> float:
    """``price`` on the venue's tick: up for a buy, down for a sell, so the child's limit
    still reaches the level it was counted for."""
    steps = price / tick
    steps = math.ceil(steps - EPSILON) if up else math.floor(steps + EPSILON)
    digits = max(0, -math.floor(math.log10(tick))) + 2 if tick < 1 else 0
    value = steps * tick
    return round(value, digits) if digits else float(value)
