"""The worker's timer side of the execution strategies (TWAP, chase, plugins): calls their
hooks and publishes the requests they ask for. Reads the table only; acts by publishing.

It never scans the table: every write of an order is noted (:meth:`AlgoScheduler.note`), and
it follows the orders running a strategy itself: by the time a strategy asked to be called
again (a deadline index: TWAP's next slice, a cancelled parent's children), and the few that
follow the ticks (chase), visited every pass.

Each order runs the strategy version it started with (``metadata.algo_version``, recorded by
intake): the scheduler holds that version in the registry while it follows the order, so a
reload never changes the code of an order in flight. An order from before the version was
recorded, or whose version is gone (a restart loads only the current ones), runs the current
version.

A plan that asks for venues' order books (``Plan.books``, e.g. a smart order router's) gets
them in its next ``on_timer``: the scheduler fetches them through the injected ``quote``
callable, every venue of every due order at once, each within ``book_timeout_s``; a venue
whose book fails or is late is given empty with the reason (``VenueQuote.error``), so a slow
venue delays a decision by the timeout at most and never stops the timer. Order events a plan
carries (``Plan.events``) go out through ``publish_event``.

A plan's decision (``Plan.decision``: a routed order's attempt) is not published here: it goes
as an internal ``route`` trigger through ``publish_trigger`` to the writer of the order's
partition, which records it on the order and then publishes its events and children
(:mod:`oms.orders.decisions`). So what a worker decided takes effect only if no other worker's
decision for the same step was recorded first."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import structlog

from oms.algos.registry import LoadedStrategy, StrategyRegistry
from oms.algos.strategy import Plan, StrategyContext, VenueQuote
from oms.orders import decisions
from oms.orders.decisions import Decision
from oms.orders.indexes import DeadlineIndex
from oms.orders.params import ALGO_KEY, ALGO_VERSION_KEY
from oms.schemas import MarketTick, OrderEvent, OrderRecord, OrderRequest, now_ms
from oms.schemas.conditions import OrderTrigger

log = structlog.get_logger(__name__)

# Request ids remembered per followed order (a TWAP's slices and its children's cancels fit).
_SENT_KEPT = 256
# How long a venue's order book may take before the decision goes on without it (s).
BOOK_TIMEOUT_S = 2.0

# One venue's book and terms for an order: (venue, order, depth) -> its quote (raises if the
# venue cannot show it).
QuoteSource = Callable[[str, OrderRecord, int], Awaitable[VenueQuote]]


@dataclass
class AlgoScheduler:
    """One pass per timer tick over the owned orders that run a strategy and are due."""

    order_of: Callable[[str], OrderRecord | None]
    owns: Callable[[str], bool]
    publish_request: Callable[[OrderRequest], Awaitable[None]]
    latest_tick: Callable[[str], MarketTick | None]
    counters: dict[str, int] = field(default_factory=dict)
    strategies: StrategyRegistry = field(default_factory=StrategyRegistry.builtin)
    # Where the order books a plan asks for come from; None: none (given empty, with why).
    quote: QuoteSource | None = None
    # Where the order events of a plan go; None: dropped (counted).
    publish_event: Callable[[OrderEvent], Awaitable[None]] | None = None
    # Where a plan's decision goes to be recorded (order-triggers); None: dropped (counted).
    publish_trigger: Callable[[OrderTrigger], Awaitable[None]] | None = None
    book_timeout_s: float = BOOK_TIMEOUT_S
    # Orders whose strategy asked to be called at a time (on_timer).
    _due: DeadlineIndex[str] = field(default_factory=DeadlineIndex)
    # Orders whose strategy follows the ticks (on_tick).
    _ticking: set[str] = field(default_factory=set)
    # Orders whose latest plan keeps them followed (their memory kept).
    _followed: set[str] = field(default_factory=set)
    # What a plan asked for when an order was written, published on the next pass.
    _pending: dict[str, Plan] = field(default_factory=dict)
    # Per order: the venues whose books its next on_timer needs, and how deep.
    _books: dict[str, tuple[tuple[str, ...], int]] = field(default_factory=dict)
    # Per followed order: request ids published -> when (ms), oldest first.
    _sent: dict[str, dict[str, int]] = field(default_factory=dict)
    # Orders holding a strategy version in the registry.
    _holding: set[str] = field(default_factory=set)
    # Set when a write asks for something now (requests to publish, a wake-up already due):
    # the pass runs at once instead of on the next tick of the timer.
    _work: asyncio.Event = field(default_factory=asyncio.Event)

    # -- what the table tells ------------------------------------------------------------------

    def note(self, order_id: str, order: OrderRecord | None) -> None:
        """An order was written (None: it left the table): its strategy says what next."""
        self._due.discard(order_id)
        self._ticking.discard(order_id)
        self._pending.pop(order_id, None)
        if order is None or ALGO_KEY not in order.metadata:
            self._followed.discard(order_id)
            self._release(order_id)
            return
        loaded = self._strategy_of(order)
        if loaded is None:
            self._followed.discard(order_id)
            self._release(order_id)
            return
        hook = "on_report" if order_id in self._followed else "on_order"
        now = now_ms()
        plan = self._call(loaded, hook, order, now)
        if plan.requests or plan.events or plan.decision is not None:
            self._pending[order_id] = plan
            self._work.set()
        elif plan.wake_at is not None and plan.wake_at <= now:
            self._work.set()
        self._follow(order, loaded, plan)

    def clear(self) -> None:
        """Forget every order (the worker rebuilds from the table after a rebalance); the
        memories of what was published stay until their orders are no longer followed."""
        self._due.clear()
        self._ticking.clear()
        self._followed.clear()
        self._pending.clear()
        self._books.clear()
        for order_id in list(self._holding):
            self._release(order_id)

    @property
    def followed(self) -> int:
        """Orders running a strategy that are followed."""
        return len(self._followed)

    # -- the timer -----------------------------------------------------------------------------

    async def wait_for_work(self, longest_s: float) -> None:
        """Return when a pass has something to do: a write asked for it, the earliest
        wake-up came, or ``longest_s`` passed (the strategies following ticks are visited at
        least that often)."""
        timeout = longest_s
        earliest = self._due.next_deadline()
        if earliest is not None:
            timeout = min(timeout, max(0.0, (earliest - now_ms()) / 1000))
        if timeout > 0 and not self._work.is_set():
            try:
                await asyncio.wait_for(self._work.wait(), timeout)
            except TimeoutError:
                pass
        else:
            # Work is due already: still let the event loop run everything else first, so
            # a strategy that keeps asking to be called now costs CPU but starves nobody.
            await asyncio.sleep(0)
        self._work.clear()

    async def run_once(self, now: int | None = None) -> None:
        """Publish what writes asked for, call the strategies whose time has come, and those
        that follow the ticks."""
        now = now if now is not None else now_ms()
        for order_id, pending in list(self._pending.items()):
            del self._pending[order_id]
            order = self.order_of(order_id)
            if order is not None and self.owns(order_id):
                await self._publish(order, pending, now)
        due: list[tuple[OrderRecord, LoadedStrategy]] = []
        for order_id in self._due.pop_due(now):
            order = self.order_of(order_id)
            if order is None or not self.owns(order_id):
                continue  # a write (or the rebuild) follows it again if need be
            loaded = self._strategy_of(order)
            if loaded is not None:
                due.append((order, loaded))
        books = await self._fetch_books([order for order, _ in due])
        for order, loaded in due:
            plan = self._call(loaded, "on_timer", order, now, books=books.get(order.order_id))
            self._follow(order, loaded, plan)
            await self._publish(order, plan, now)
        for order_id in list(self._ticking):
            order = self.order_of(order_id)
            loaded = None if order is None else self._strategy_of(order)
            if order is None or loaded is None or not self.owns(order_id):
                self._ticking.discard(order_id)
                continue
            tick = self.latest_tick(order.instrument_name)
            self._ticking.discard(order_id)
            plan = self._call(loaded, "on_tick", order, now, tick)
            self._follow(order, loaded, plan)
            await self._publish(order, plan, now)
        # Memory only for the orders still followed.
        for order_id in [k for k in self._sent if k not in self._followed]:
            del self._sent[order_id]

    # -- helpers -------------------------------------------------------------------------------

    def _strategy_of(self, order: OrderRecord) -> LoadedStrategy | None:
        name = order.metadata.get(ALGO_KEY)
        if not isinstance(name, str):
            return None
        version = order.metadata.get(ALGO_VERSION_KEY)
        loaded = self.strategies.get(name, version) if isinstance(version, str) else None
        if loaded is None:
            loaded = self.strategies.current(name)
            if loaded is None:
                self._count("strategy_unavailable")
                log.warning("order names no loaded strategy", order_id=order.order_id, algo=name)
                return None
            if version is not None:
                self._count("strategy_version_gone")
        return loaded

    def _call(
        self,
        loaded: LoadedStrategy,
        hook: str,
        order: OrderRecord,
        now: int,
        tick: MarketTick | None = None,
        *,
        books: Mapping[str, VenueQuote] | None = None,
    ) -> Plan:
        """One hook of the order's strategy; a failing one stops following the order (until
        its next write) and never stops the timer."""
        try:
            params = loaded.strategy.params_model.model_validate(dict(order.metadata))
            sent = self._sent.get(order.order_id, {})
            ctx = StrategyContext(now, params, sent, tick, books)
            plan = getattr(loaded.strategy, hook)(order, ctx)
            if not isinstance(plan, Plan):
                raise TypeError(f"{hook} returned {type(plan).__name__}, not a Plan")
            for request in plan.requests:
                if not isinstance(request, OrderRequest):
                    raise TypeError(f"{hook} asked for a {type(request).__name__}, not a request")
                if request.account_id != order.account_id:
                    raise ValueError("a strategy acts only for its order's account")
            for event in plan.events:
                if not isinstance(event, OrderEvent):
                    raise TypeError(f"{hook} asked for a {type(event).__name__}, not an event")
                if event.order_id != order.order_id:
                    raise ValueError("a strategy reports only about its own order")
            if plan.decision is not None:
                if not isinstance(plan.decision, Decision):
                    raise TypeError(f"{hook} decided a {type(plan.decision).__name__}")
                decisions.check(order, plan.decision)
        except Exception:
            self._count("strategy_errors")
            log.exception(
                "strategy hook failed",
                strategy=loaded.name,
                version=loaded.version,
                hook=hook,
                order_id=order.order_id,
            )
            return Plan.done()
        return plan

    def _follow(self, order: OrderRecord, loaded: LoadedStrategy, plan: Plan) -> None:
        order_id = order.order_id
        if plan.wake_at is not None:
            self._due.schedule(order_id, plan.wake_at)
        if plan.follow_ticks:
            self._ticking.add(order_id)
        if plan.books:
            self._books[order_id] = (plan.books, plan.depth)
        else:
            self._books.pop(order_id, None)
        if plan.following:
            self._followed.add(order_id)
        else:
            self._followed.discard(order_id)
        # Its version stays alive while the order may still need it.
        if plan.following or not order.status.is_terminal:
            self.strategies.hold(order_id, loaded)
            self._holding.add(order_id)
        else:
            self._release(order_id)

    def _release(self, order_id: str) -> None:
        if order_id in self._holding:
            self._holding.discard(order_id)
            self.strategies.release(order_id)

    async def _fetch_books(self, orders: list[OrderRecord]) -> dict[str, dict[str, VenueQuote]]:
        """The books the due ``orders`` asked for, by order and venue, all fetched at once."""
        wanted = [
            (order, venue, self._books[order.order_id][1])
            for order in orders
            if order.order_id in self._books
            for venue in self._books[order.order_id][0]
        ]
        if not wanted:
            return {}
        quotes = await asyncio.gather(
            *(self._quote_one(venue, order, depth) for order, venue, depth in wanted)
        )
        out: dict[str, dict[str, VenueQuote]] = {}
        for (order, venue, _), quote in zip(wanted, quotes, strict=True):
            out.setdefault(order.order_id, {})[venue] = quote
        return out

    async def _quote_one(self, venue: str, order: OrderRecord, depth: int) -> VenueQuote:
        """One venue's quote; its failure or lateness becomes an empty book saying why."""
        if self.quote is None:
            return VenueQuote(venue, error="no order book source")
        try:
            quote = await asyncio.wait_for(self.quote(venue, order, depth), self.book_timeout_s)
        except TimeoutError:
            self._count("book_timeouts")
            return VenueQuote(venue, error=f"book not received within {self.book_timeout_s:g}s")
        except Exception as exc:  # a venue that cannot show its book is left out, not fatal
            self._count("book_errors")
            log.warning("order book unavailable", venue=venue, order_id=order.order_id, exc=exc)
            return VenueQuote(venue, error=f"book unavailable: {type(exc).__name__}: {exc}")
        self._count("books")
        return quote

    async def _publish(self, order: OrderRecord, plan: Plan, now: int) -> None:
        if not plan.requests and not plan.events and plan.decision is None:
            return
        sent = self._sent.setdefault(order.order_id, {})
        name = str(order.metadata.get(ALGO_KEY))
        # The decision's record goes out before what it decided.
        for event in plan.events:
            key = f"event:{event.event_id}"
            if key in sent:
                continue
            self._remember(sent, key, now)
            if self.publish_event is None:
                self._count("events_dropped")
                continue
            self._count(f"{name}_{event.event_type.value}")
            await self.publish_event(event)
        decision = plan.decision
        if decision is not None and decisions.decision_key(decision.step) not in sent:
            # Its events and children go out once the order's writer recorded it.
            self._remember(sent, decisions.decision_key(decision.step), now)
            if self.publish_trigger is None:
                self._count("decisions_dropped")
            else:
                self._count(f"{name}_decisions")
                await self.publish_trigger(decisions.to_trigger(order.order_id, decision))
        for request in plan.requests:
            if request.request_id in sent:
                continue  # never twice (a restart's copy is a duplicate at intake anyway)
            self._remember(sent, request.request_id, now)
            self._count(f"{name}_{request.command.value}")
            await self.publish_request(request)

    @staticmethod
    def _remember(sent: dict[str, int], key: str, now: int) -> None:
        sent[key] = now
        while len(sent) > _SENT_KEPT:
            del sent[next(iter(sent))]

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1
