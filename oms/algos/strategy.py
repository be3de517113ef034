"""The interface of an execution strategy (TWAP, chase, or a plugin of your own).

A strategy is pure: its hooks read an order and a :class:`StrategyContext` and return a
:class:`Plan` (the requests to publish, when to be called again), never doing I/O. The
worker's :class:`~oms.algos.scheduler.AlgoScheduler` calls the hooks and publishes the
requests on ``order-requests``, so a strategy's child orders, re-quotes and cancels pass the
same intake, validation, rate limit and audit as anyone's.

Hooks, for an order whose ``metadata.algo`` names the strategy:

* ``check(request, spec, params)``: at intake, once its parameters parsed: a rejection, or
  None to accept;
* ``on_order(order, ctx)``: the first time the worker's timer side sees the order (after it
  was accepted, or again after a rebalance);
* ``on_report(order, ctx)``: every later write of the order (a fill, a status change, a
  child's news folded into a parent);
* ``on_timer(order, ctx)``: once the ``wake_at`` of its last plan has come;
* ``on_tick(order, ctx)``: on every pass of the timer while its last plan ``follow_ticks``
  (``ctx.tick`` is then the instrument's newest tick).

A plan may also ask for the order books of some venues (``books``): the next ``on_timer``
then gets them in ``ctx.books`` (one :class:`VenueQuote` per venue, fetched by the scheduler
with a timeout; a venue whose book could not be had comes empty, with the reason), and may
carry order events to publish (``events``: e.g. a routing decision, for the audit trail).

A plan may carry a :class:`~oms.orders.decisions.Decision` (``decision``: numbered child
submits and the events telling about them) instead of publishing children itself: the
scheduler sends it to the writer of the order's partition, which records it on the order
(the children live, nothing filled) and only then publishes it, so a decision takes effect
once even if another worker makes the same step's decision after a restart or rebalance.
The steps recorded are in the order (:func:`~oms.orders.decisions.recorded_steps`); a
decision sent and not recorded yet is in ``ctx.sent`` under
:func:`~oms.orders.decisions.decision_key`.

Its parameters are a pydantic model (``params_model``) read from the flat ``metadata`` keys.
Plugins are loaded by :class:`~oms.algos.registry.StrategyRegistry`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel

from oms.orders.decisions import Decision
from oms.orders.routing import BookSnapshot
from oms.schemas import InstrumentSpec, MarketTick, OrderEvent, OrderRecord, OrderRequest
from oms.schemas.rejection import Rejection

# The hooks a strategy object must have (checked when a plugin is loaded).
HOOKS = ("check", "on_order", "on_report", "on_tick", "on_timer")


# Book levels per side a plan gets when it does not say (``Plan.depth``).
DEFAULT_BOOK_DEPTH = 10
EMPTY_BOOK = BookSnapshot((), ())


@dataclass(frozen=True)
class VenueQuote:
    """One venue's order book for an order's instrument, with what deciding on it needs:
    the venue's taker fee (fraction of the notional), the instrument's lot (minimum trade
    amount) and tick at that venue, and how long its rate budget holds the next order back.
    ``error``: why the book could not be had (it is then empty)."""

    venue: str
    book: BookSnapshot = EMPTY_BOOK
    taker_fee: float = 0.0
    lot: float = 1.0
    tick: float = 0.5
    entry_delay_s: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class StrategyContext:
    """What a hook knows besides the order."""

    now: int  # ms
    # The order's parameters, parsed with the strategy's ``params_model``.
    params: Any
    # Request ids this worker published for the order (most recent last) -> when (ms): the
    # scheduler never publishes one of them twice, and a strategy can tell what it asked.
    sent: Mapping[str, int]
    # The newest tick of the order's instrument (``on_tick``; None elsewhere or if none yet).
    tick: MarketTick | None = None
    # The books the last plan asked for (``on_timer`` after a plan with ``books``), by venue;
    # None when none were asked for.
    books: Mapping[str, VenueQuote] | None = None


@dataclass(frozen=True)
class Plan:
    """What a hook asks for."""

    # Published in order, each at most once per order (by request id).
    requests: tuple[OrderRequest, ...] = ()
    # Call ``on_timer`` at this time (ms); None: no timer.
    wake_at: int | None = None
    # Call ``on_tick`` on every pass.
    follow_ticks: bool = False
    # False: nothing more to do for this order (its memory is dropped) until its next write.
    following: bool = True
    # Venues whose order books (``depth`` levels per side) the next ``on_timer`` needs.
    books: tuple[str, ...] = ()
    depth: int = DEFAULT_BOOK_DEPTH
    # Order events to publish (each at most once per order, by event id), before the requests.
    events: tuple[OrderEvent, ...] = ()
    # A decision to record on the order before its children and events go out (each step at
    # most once per order from this worker; the order's writer applies each step once).
    decision: Decision | None = None

    @classmethod
    def done(cls, *requests: OrderRequest) -> Plan:
        """Publish ``requests`` (if any), then stop following the order."""
        return cls(requests=requests, following=False)


@runtime_checkable
class ExecutionStrategy(Protocol):
    """An execution strategy: its parameters' model and its pure hooks."""

    params_model: type[BaseModel]

    def check(
        self, request: OrderRequest, spec: InstrumentSpec, params: Any
    ) -> Rejection | None: ...

    def on_order(self, order: OrderRecord, ctx: StrategyContext) -> Plan: ...

    def on_report(self, order: OrderRecord, ctx: StrategyContext) -> Plan: ...

    def on_tick(self, order: OrderRecord, ctx: StrategyContext) -> Plan: ...

    def on_timer(self, order: OrderRecord, ctx: StrategyContext) -> Plan: ...


class StrategyBase:
    """Defaults for the hooks a strategy does not need: accept every order, follow it (on the
    first sight and on every write) as ``on_report`` says, nothing on ticks and timers.
    Subclasses set ``params_model`` and override what they use; the settings of the plugin
    arrive in the constructor."""

    params_model: type[BaseModel]

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        self.settings: Mapping[str, Any] = dict(settings or {})

    def check(self, request: OrderRequest, spec: InstrumentSpec, params: Any) -> Rejection | None:
        """Accept every order whose parameters parsed."""
        return None

    def on_order(self, order: OrderRecord, ctx: StrategyContext) -> Plan:
        """The first sight of an order is handled like any later write."""
        return self.on_report(order, ctx)

    def on_report(self, order: OrderRecord, ctx: StrategyContext) -> Plan:
        """Nothing to do by default."""
        return Plan.done()

    def on_tick(self, order: OrderRecord, ctx: StrategyContext) -> Plan:
        """Keep following, nothing to publish."""
        return Plan(follow_ticks=True)

    def on_timer(self, order: OrderRecord, ctx: StrategyContext) -> Plan:
        """Nothing to do by default."""
        return Plan.done()
