"""The matching engine: order entry, price-time matching, fills, positions and balances.

Everything here is synchronous and single-threaded (one asyncio loop), so a request is
atomic. Side effects leave through :class:`EventSink` so transports can fan out
notifications without the engine knowing about connections.
"""

from __future__ import annotations

import itertools
import logging
import math
import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from oms.exchange.paper import errors
from oms.exchange.paper.accounts import Account, AccountStore
from oms.exchange.paper.book import Book
from oms.exchange.paper.candles import Candles
from oms.exchange.paper.errors import RpcError, invalid_param
from oms.exchange.paper.instruments import Instrument, index_name
from oms.exchange.paper.market import OPTION_VOL, YEAR_MS, SyntheticMarket, option_delta
from oms.exchange.paper.orders import EPS, TRIGGER_TYPES, Order
from oms.exchange.paper.positions import Position, order_margin
from oms.exchange.paper.recorder import NULL_RECORDER, Recorder
from oms.exchange.paper.validation import check_amount, check_label, price_ticks, to_price

log = logging.getLogger("oms.paper")

# Price band around the mark: buys above max_price and sells below min_price are refused.
FUTURE_BAND = 0.025
OPTION_TYPES_LIMIT = ("limit", "stop_limit", "take_limit")
TIME_IN_FORCE = ("good_til_cancelled", "good_til_day", "fill_or_kill", "immediate_or_cancel")
TRIGGERS = ("index_price", "mark_price", "last_price")
# User trades kept per account for get_user_trades_by_instrument/currency.
TRADES_PER_ACCOUNT = 10_000
# Public trades kept per instrument for get_last_trades_by_instrument (in memory only).
PUBLIC_TRADES_KEPT = 1_000
# Deribit's funding: max(damper, premium) + min(-damper, premium) per 8 hours.
FUNDING_DAMPER = 0.00025
FUNDING_PERIOD_MS = 8 * 3_600_000
# Historical volatility: minute returns of the index over up to 15 days, annualized.
VOLATILITY_WINDOW_MS = 15 * 86_400_000
MINUTES_PER_YEAR = 365 * 1440
HOUR_MS = 3_600_000
# First ids of an exchange that keeps no state (a durable one continues from its store).
FIRST_ORDER_NUMBER = 10_000_001
FIRST_TRADE_NUMBER = 1


class EventSink(Protocol):
    """Receives every user-visible change."""

    def on_order(self, order: Order) -> None: ...

    def on_trade(self, account_id: str, inst: Instrument, trade: dict[str, Any]) -> None: ...

    def on_position(self, account_id: str, position: Position) -> None: ...


class NullSink:
    """Discards events (engine unit tests)."""

    def on_order(self, order: Order) -> None:
        return None

    def on_trade(self, account_id: str, inst: Instrument, trade: dict[str, Any]) -> None:
        return None

    def on_position(self, account_id: str, position: Position) -> None:
        return None


@dataclass(slots=True)
class InstrumentStats:
    """Last trade and rolling statistics shown in the ticker."""

    last_price: float
    last_ticks: int = 0
    tick_direction: int = 0
    volume: float = 0.0
    volume_usd: float = 0.0
    high: float = 0.0
    low: float = 0.0
    open_price: float = 0.0
    open_interest: float = 0.0


@dataclass(slots=True)
class OrderRequest:
    """Validated-by-type parameters of ``private/buy`` / ``private/sell``."""

    instrument_name: str
    amount: float | None = None
    contracts: float | None = None
    type: str = "limit"
    label: str | None = None
    price: float | None = None
    time_in_force: str = "good_til_cancelled"
    max_show: float | None = None
    post_only: bool = False
    reject_post_only: bool = False
    reduce_only: bool = False
    trigger_price: float | None = None
    trigger: str | None = None
    trigger_offset: float | None = None
    valid_until: int | None = None
    linked_order_type: str | None = None
    trigger_fill_condition: str | None = None
    # The linked orders: (is_buy, request) each, on the same instrument.
    otoco_config: list[tuple[bool, OrderRequest]] = field(default_factory=list)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


DAY_MS = 86_400_000
DAY_END_OFFSET_MS = 8 * 3_600_000  # good_til_day orders expire at 08:00 UTC


def next_day_end(ts: int) -> int:
    """The first 08:00 UTC strictly after ``ts``."""
    start = (ts - DAY_END_OFFSET_MS) // DAY_MS * DAY_MS + DAY_END_OFFSET_MS
    return start + DAY_MS


class Engine:
    """Books, orders and accounts of the whole exchange."""

    def __init__(
        self,
        instruments: list[Instrument],
        market: SyntheticMarket,
        accounts: AccountStore,
        sink: EventSink | None = None,
        history_limit: int = 200_000,
        recorder: Recorder | None = None,
    ) -> None:
        self.instruments = {i.name: i for i in instruments}
        self.market = market
        self.accounts = accounts
        self.sink: EventSink = sink or NullSink()
        # Durable changes are recorded before the sink hears of them (see recorder.py).
        self.recorder: Recorder = recorder or NULL_RECORDER
        self.books = {name: Book() for name in self.instruments}
        self.stats = {
            name: InstrumentStats(last_price=market.marks[name]) for name in self.instruments
        }
        self.orders: dict[str, Order] = {}
        self.by_label: dict[tuple[str, str], list[Order]] = {}
        self.trades_by_order: dict[str, list[dict[str, Any]]] = {}
        self.trades_by_account: dict[str, deque[dict[str, Any]]] = {}
        self.untriggered: dict[str, list[Order]] = {name: [] for name in self.instruments}
        self.public_trades: dict[str, deque[dict[str, Any]]] = {
            name: deque(maxlen=PUBLIC_TRADES_KEPT) for name in self.instruments
        }
        self.candles = Candles()
        # One-cancels-other groups by oco_ref (their open, entered members), and the linked
        # orders a fill or a close touched since the last settlement.
        self.oco_groups: dict[str, list[Order]] = {}
        self._linked: dict[int, Order] = {}
        self.mm_orders: dict[str, list[tuple[int, Order]]] = {n: [] for n in self.instruments}
        # Labels used by more than one order (kept forever: small, and what tests look for).
        self.duplicate_labels: dict[str, int] = {}
        self.counters: dict[str, int] = {
            "orders": 0, "trades": 0, "cancels": 0, "edits": 0, "rejects": 0,
        }
        self.history_limit = history_limit
        self._closed: deque[str] = deque()
        self._order_seq = FIRST_ORDER_NUMBER - 1  # the last order number handed out
        self._trade_seq = FIRST_TRADE_NUMBER  # the next trade number
        self._time_seq = 0
        self._touched: dict[int, Order] = {}
        # Changed orders nobody is notified about (a refused edit re-queues the order).
        self._dirty: dict[int, Order] = {}
        self.day_end_ms = next_day_end(now_ms())
        self._moved_positions: dict[tuple[str, str], Position] = {}

    # ---- ids ---------------------------------------------------------------------------------

    def last_ids(self) -> tuple[int, int]:
        """(order number, trade number) last handed out."""
        return self._order_seq, self._trade_seq - 1

    def continue_ids(self, last_order: int, last_trade: int) -> None:
        """Hand out only numbers above these from now on (restore, reset)."""
        self._order_seq = max(self._order_seq, last_order)
        self._trade_seq = max(self._trade_seq, last_trade + 1)

    @property
    def time_seq(self) -> int:
        """The last priority number given to a resting (or untriggered) order."""
        return self._time_seq

    def continue_time_seq(self, last: int) -> None:
        """Give resting orders priority numbers above ``last`` from now on (restore)."""
        self._time_seq = max(self._time_seq, last)

    # ---- lookups ---------------------------------------------------------------------------

    def instrument(self, name: object, param: str = "instrument_name") -> Instrument:
        """The instrument called ``name`` or Deribit's invalid-params error."""
        inst = self.instruments.get(name) if isinstance(name, str) else None
        if inst is None:
            raise invalid_param(param, "instrument not found")
        return inst

    def mark(self, inst: Instrument) -> float:
        return self.market.marks[inst.name]

    def index(self, currency: str) -> float:
        return self.market.index[currency]

    def band(self, inst: Instrument) -> tuple[int, int]:
        """(min_price, max_price) in ticks."""
        mark = self.mark(inst)
        if inst.is_option:
            lo, hi = inst.tick_size, mark * 2 + 0.05
        else:
            lo, hi = mark * (1 - FUTURE_BAND), mark * (1 + FUTURE_BAND)
        return max(1, math.ceil(lo / inst.tick_size)), math.floor(hi / inst.tick_size)

    def order_of(self, account: Account, order_id: object) -> Order:
        order = self.orders.get(order_id) if isinstance(order_id, str) else None
        if order is None or order.account != account.account_id:
            raise RpcError(errors.ORDER_NOT_FOUND)
        return order

    # ---- order entry -----------------------------------------------------------------------

    def place(
        self, account: Account, is_buy: bool, req: OrderRequest, session_id: int | None = None
    ) -> tuple[Order, list[dict[str, Any]]]:
        """``private/buy`` and ``private/sell``: validate, match, rest; returns the order
        and the trades it made. The orders of ``otoco_config`` are validated with it (all or
        nothing) and linked to it as ``linked_order_type`` says."""
        if req.valid_until is not None and now_ms() > req.valid_until:
            raise RpcError(errors.TIMED_OUT, {"reason": "valid_until has passed"})
        link = req.linked_order_type
        if link is not None and not req.otoco_config:
            raise invalid_param("otoco_config", "value required")
        if link is None and req.otoco_config:
            raise invalid_param("linked_order_type", "value required")
        if link == "one_triggers_one_cancels_other" and len(req.otoco_config) != 2:
            raise invalid_param("otoco_config", "one_triggers_one_cancels_other takes two orders")
        order = self._new_order(account, is_buy, req, session_id)
        # Secondaries of a one-triggers-other wait for fills of the primary: their funds and
        # reduce-only checks are made when they are placed.
        waits = link in ("one_triggers_other", "one_triggers_one_cancels_other")
        legs = [
            self._new_order(account, leg_buy, leg, session_id, waits=waits, inst=order.inst)
            for leg_buy, leg in req.otoco_config
        ]
        if order.post_only and not order.is_trigger:
            # Refused before anything exists (11054), like any post-only order.
            self._apply_post_only(order, round(order.price / order.inst.tick_size))
        try:
            self._register(account, order)
            if link is None:
                return order, self._enter(account, order)
            for leg in legs:
                self._register(account, leg)
            condition = req.trigger_fill_condition or "first_hit"
            for linked in (order, *legs):
                linked.trigger_fill_condition = condition
                linked.linked_amount = linked.amount
            if link == "one_cancels_other":
                return order, self._place_oco(account, [order, *legs])
            pair = link == "one_triggers_one_cancels_other"
            return order, self._place_oto(account, order, legs, pair)
        finally:
            self._flush()

    def _place_oco(self, account: Account, group: list[Order]) -> list[dict[str, Any]]:
        """Place a one-cancels-other group, first order first; returns the first one's
        trades. A member that filled before the others' turn closes them unplaced."""
        ref = f"OCO-{group[0].order_id}"
        for member in group:
            member.oco_ref = ref
        self.oco_groups[ref] = list(group)
        trades = self._enter_oco_member(account, group[0])
        self._settle_links()
        for member in group[1:]:
            self._enter_oco_member(account, member)
            self._settle_links()
        return trades

    def _place_oto(
        self, account: Account, primary: Order, secondaries: list[Order], pair: bool
    ) -> list[dict[str, Any]]:
        """Park the secondaries (``pair``: as one one-cancels-other group), then place the
        primary, whose fills place them; returns the primary's trades."""
        primary.oto_order_ids = [o.order_id for o in secondaries]
        for order in secondaries:
            self._park_secondary(account, order, primary)
        if pair:
            primary.is_primary_otoco = True
            ref = f"OCO-{primary.order_id}"
            for order in secondaries:
                order.oco_ref = ref
            # One group from the start: closing one, even before it is placed, closes both.
            self.oco_groups[ref] = list(secondaries)
        return self._enter(account, primary)

    def _new_order(
        self,
        account: Account,
        is_buy: bool,
        req: OrderRequest,
        session_id: int | None,
        *,
        waits: bool = False,
        inst: Instrument | None = None,
    ) -> Order:
        """A validated order, not yet registered (no id). ``waits``: a secondary placed
        later, whose funds and reduce-only checks wait until then."""
        if inst is None:
            inst = self.instrument(req.instrument_name)
        otype = req.type
        if otype == "market_limit":
            raise RpcError(errors.NOT_IMPLEMENTED, {"reason": f"{otype} is not supported"})
        if otype not in ("limit", "market", *TRIGGER_TYPES):
            raise invalid_param("type", "unknown order type")
        if req.time_in_force not in TIME_IN_FORCE:
            raise invalid_param("time_in_force", "unknown time_in_force")
        amount = self._amount(inst, req.amount, req.contracts)
        label = check_label(req.label)
        is_limit = otype in OPTION_TYPES_LIMIT
        band_lo, band_hi = self.band(inst)
        if is_limit:
            if req.price is None:
                raise invalid_param("price", "price is required for limit orders")
            ticks = price_ticks(inst, req.price)
            if not waits and is_buy and ticks > band_hi:
                raise RpcError(errors.PRICE_TOO_HIGH, {"max_price": to_price(band_hi, inst)})
            if not waits and not is_buy and ticks < band_lo:
                raise RpcError(errors.PRICE_TOO_LOW, {"min_price": to_price(band_lo, inst)})
        else:
            ticks = band_hi if is_buy else band_lo
        if req.max_show is not None and not 0 <= req.max_show <= amount:
            raise RpcError(errors.INVALID_MAX_SHOW)
        trigger_price = None
        if otype in TRIGGER_TYPES:
            if req.trigger not in TRIGGERS:
                raise invalid_param("trigger", f"must be one of {', '.join(TRIGGERS)}")
            if otype == "trailing_stop":
                if req.trigger_offset is None:
                    raise invalid_param("trigger_offset", "trigger_offset is required")
                if not req.trigger_offset > 0:
                    raise invalid_param("trigger_offset", "must be positive")
            else:
                if req.trigger_price is None:
                    raise invalid_param("trigger_price", "trigger_price is required")
                trigger_price = to_price(
                    price_ticks(inst, req.trigger_price, "trigger_price"), inst
                )
        if req.reduce_only and not waits:
            amount = self._reducible(account, inst, is_buy, amount)
        ts = now_ms()
        order = Order(
            order_id="",
            account=account.account_id,
            inst=inst,
            is_buy=is_buy,
            price=to_price(ticks, inst),
            amount=amount,
            order_type=otype,
            time_in_force=req.time_in_force,
            label=label,
            post_only=req.post_only and is_limit,
            reject_post_only=req.reject_post_only and req.post_only and is_limit,
            reduce_only=req.reduce_only,
            max_show=req.max_show,
            created_ms=ts,
            updated_ms=ts,
            session_id=session_id,
        )
        if otype in TRIGGER_TYPES:
            order.trigger = req.trigger
            order.trigger_price = trigger_price
            order.trigger_offset = req.trigger_offset if otype == "trailing_stop" else None
        if not req.reduce_only and not waits:
            self._check_funds(account, order)
        return order

    def _enter(self, account: Account, order: Order) -> list[dict[str, Any]]:
        """Put a registered order to work: a trigger order waits for its trigger, anything
        else is matched (market orders at the band's edge) and the rest rests or not."""
        inst = order.inst
        if order.is_trigger:
            order.state = "untriggered"
            order.triggered = False
            order.market_price = order.is_market
            if order.order_type == "trailing_stop":
                self._start_trailing(order)
            # Not a book priority: the order's place among the account's open orders.
            self._time_seq += 1
            order.seq = self._time_seq
            account.open_orders[order.order_id] = order
            self.untriggered[inst.name].append(order)
            self._emit_order(order)
            return []
        order.state = "open"
        if order.is_market:
            lo, hi = self.band(inst)
            order.price = to_price(hi if order.is_buy else lo, inst)
        ticks = round(order.price / inst.tick_size)
        if order.post_only:
            self._apply_post_only(order, ticks)
            ticks = round(order.price / inst.tick_size)
        return self._execute(account, order, ticks)

    def _start_trailing(self, order: Order) -> None:
        """A trailing stop starts ``trigger_offset`` away from its trigger's price now."""
        ref = self._trigger_refs(order.inst)[order.trigger or "last_price"]
        order.trigger_reference_price = ref
        order.trigger_price = self._trail_price(order, ref)

    def _trail_price(self, order: Order, ref: float) -> float:
        offset = order.trigger_offset or 0.0
        level = ref + offset if order.is_buy else ref - offset
        return to_price(max(1, round(level / order.inst.tick_size)), order.inst)

    def _amount(self, inst: Instrument, amount: float | None, contracts: float | None) -> float:
        if amount is None:
            if contracts is None:
                raise invalid_param("amount", "amount or contracts is required")
            amount = contracts * inst.contract_size
        elif contracts is not None and abs(contracts * inst.contract_size - amount) > EPS:
            raise invalid_param("contracts", "contracts do not match amount")
        return check_amount(inst, amount)

    def _reducible(self, account: Account, inst: Instrument, is_buy: bool, amount: float) -> float:
        pos = account.positions.get(inst.name)
        size = pos.size if pos else 0.0
        available = -size if is_buy else size
        if available <= EPS:
            raise RpcError(errors.OTHER_REJECT, {"reason": "reduce_only"})
        return min(amount, available)

    def _check_funds(self, account: Account, order: Order) -> None:
        needed = order_margin(order)
        if needed <= 0:
            return
        available = account.available_funds(order.inst.currency, self.mark, self.instruments)
        if needed > available:
            self.counters["rejects"] += 1
            raise RpcError(
                errors.NOT_ENOUGH_FUNDS,
                {"reason": "insufficient available funds", "available_funds": available},
            )

    def _apply_post_only(self, order: Order, ticks: int) -> None:
        """Deribit's post-only: reject (11054) or reprice one tick inside the spread."""
        opp = self.books[order.inst.name].opposite(order.is_buy)
        best = opp.best_ticks()
        if best is None:
            return
        crosses = ticks >= best if order.is_buy else ticks <= best
        if not crosses:
            return
        if order.reject_post_only:
            raise RpcError(errors.POST_ONLY_REJECT)
        new = best - 1 if order.is_buy else best + 1
        if new < 1:
            raise RpcError(errors.POST_ONLY_REJECT)
        order.price = to_price(new, order.inst)

    def _register(self, account: Account, order: Order) -> None:
        """Give a new order its id and index it."""
        self._order_seq += 1
        order.order_id = f"{order.inst.base}-{self._order_seq}"
        self.orders[order.order_id] = order
        self.counters["orders"] += 1
        if order.label:
            key = (account.account_id, order.label)
            same = self.by_label.setdefault(key, [])
            same.append(order)
            if len(same) > 1:
                self.duplicate_labels[order.label] = len(same)
                self.recorder.duplicate_label(order.label, len(same))

    def _execute(self, account: Account, order: Order, ticks: int) -> list[dict[str, Any]]:
        """Match a new (or re-priced, or triggered) order, then rest or cancel the rest."""
        inst = order.inst
        book = self.books[inst.name]
        if order.time_in_force == "fill_or_kill":
            available = book.opposite(order.is_buy).crossing_amount(
                ticks, order.is_buy, order.remaining
            )
            if available + EPS < order.remaining:
                self._close(account, order, "cancelled")
                self._emit_order(order)
                return []
        trades = self._match(order, ticks)
        if order.remaining <= EPS:
            self._close(account, order, "filled")
        elif order.is_market or order.time_in_force in (
            "immediate_or_cancel", "fill_or_kill",
        ):
            self._close(account, order, "cancelled")
        else:
            self._time_seq += 1
            order.seq = self._time_seq
            book.side(order.is_buy).add(ticks, order)
            account.open_orders[order.order_id] = order
            account.hold(order, order_margin(order))
            if order.reduce_only:
                account.reduce_only[order.order_id] = order
        self._emit_order(order)
        return trades

    def _close(self, account: Account, order: Order, state: str, reason: str | None = None) -> None:
        if order.is_linked:
            self._linked[id(order)] = order
        order.state = state
        if reason:
            order.cancel_reason = reason
        account.open_orders.pop(order.order_id, None)
        account.reduce_only.pop(order.order_id, None)
        if order.reserved:
            account.hold(order, 0.0)
        self._closed.append(order.order_id)
        if len(self._closed) > self.history_limit:
            self._evict(self._closed.popleft())

    def _evict(self, order_id: str) -> None:
        order = self.orders.pop(order_id, None)
        trades = self.trades_by_order.pop(order_id, None)
        self.recorder.order_gone(order_id)
        if trades and order is not None and order.account is not None:
            history = self.trades_by_account.get(order.account)
            for trade in trades:
                if history is None or not _retained(history, trade):
                    self.recorder.trade_gone(trade)
        if order is not None and order.label and order.account is not None:
            key = (order.account, order.label)
            lst = self.by_label.get(key)
            if lst is not None:
                try:
                    lst.remove(order)
                except ValueError:
                    pass
                if not lst:
                    del self.by_label[key]

    # ---- matching ----------------------------------------------------------------------------

    def _match(self, taker: Order, limit_ticks: int) -> list[dict[str, Any]]:
        inst = taker.inst
        opp = self.books[inst.name].opposite(taker.is_buy)
        taker_trades: list[dict[str, Any]] = []
        is_buy = taker.is_buy
        while taker.amount - taker.filled > EPS:
            level = opp.best_level()
            if level is None:
                break
            best = opp.best_ticks()
            assert best is not None
            if (best > limit_ticks) if is_buy else (best < limit_ticks):
                break
            maker = level[0]
            qty = round(min(taker.amount - taker.filled, maker.amount - maker.filled), 8)
            trade = self._fill(taker, maker, qty, best)
            if trade is not None:
                taker_trades.append(trade)
            if maker.amount - maker.filled <= EPS:
                level.popleft()
                if maker.account is not None:
                    acc = self.accounts.by_id[maker.account]
                    self._close(acc, maker, "filled")
                opp.pop_best_if_empty()
        return taker_trades

    def _fill(self, taker: Order, maker: Order, qty: float, ticks: int) -> dict[str, Any] | None:
        """Book one fill for both sides; returns the taker's user trade (None for the MM)."""
        inst = taker.inst
        price = to_price(ticks, inst)
        st = self.stats[inst.name]
        if ticks > st.last_ticks:
            st.tick_direction = 0
        elif ticks < st.last_ticks:
            st.tick_direction = 2
        else:
            st.tick_direction = 1 if st.tick_direction in (0, 1) else 3
        st.last_ticks = ticks
        st.last_price = price
        if st.high == 0 or price > st.high:
            st.high = price
        if st.low == 0 or price < st.low:
            st.low = price
        if st.open_price == 0:
            st.open_price = price
        coin = qty / price if inst.inverse else qty
        st.volume += coin
        st.volume_usd += qty if inst.inverse else qty * price * self.index(inst.base)
        ts = now_ms()
        self.candles.fill(inst.name, ts, price, coin, qty if inst.inverse else qty * price)
        self._public_trade(taker, qty, price, ts, st.tick_direction)
        matching_id = str(self._trade_seq)
        taker_trade = None
        for order, liquidity in ((maker, "M"), (taker, "T")):
            order.filled = round(order.filled + qty, 8)
            order.notional += qty * price
            order.updated_ms = ts
            if order.account is None:
                continue
            trade = self._user_fill(order, qty, price, liquidity, ts, matching_id)
            if order is taker:
                taker_trade = trade
            else:
                self._touched[id(order)] = order
        self._trade_seq += 1
        self.counters["trades"] += 1
        return taker_trade

    def _public_trade(
        self, taker: Order, qty: float, price: float, ts: int, tick_direction: int
    ) -> None:
        """The tape's side of a fill (``get_last_trades_by_instrument``): the taker's
        direction, no account."""
        inst = taker.inst
        trade: dict[str, Any] = {
            "trade_id": f"{inst.base}-{self._trade_seq}",
            "trade_seq": self._trade_seq,
            "instrument_name": inst.name,
            "timestamp": ts,
            "direction": taker.direction,
            "tick_direction": tick_direction,
            "price": price,
            "amount": qty,
            "contracts": qty / inst.contract_size,
            "mark_price": self.mark(inst),
            "index_price": self.index(inst.base),
        }
        if inst.is_option:
            trade["iv"] = OPTION_VOL * 100
        self.public_trades[inst.name].append(trade)

    def funding_8h(self, inst: Instrument) -> float:
        """A perpetual's funding rate per 8 hours at the current mark and index (the
        synthetic perpetual trades at the index, so this is zero); 0 for anything else."""
        if inst.settlement_period != "perpetual":
            return 0.0
        return funding_rate(self.mark(inst), self.index(inst.base))

    def historical_volatility(self, currency: str, now: int) -> list[dict[str, Any]]:
        """``public/get_historical_volatility``: for each hour of the last 15 days the index
        has bars for, the annualized volatility (%) of its minute returns up to then."""
        bars = self.candles.chart(index_name(currency), now - VOLATILITY_WINDOW_MS, now, 1)
        ticks = bars["ticks"]
        returns = [math.log(b / a) for a, b in itertools.pairwise(bars["close"])]
        out: list[dict[str, Any]] = []
        for i in range(2, len(ticks)):  # bar i closes return i - 1; two needed at least
            last_of_hour = i == len(ticks) - 1 or ticks[i + 1] // HOUR_MS != ticks[i] // HOUR_MS
            if last_of_hour:
                vol = statistics.stdev(returns[:i]) * math.sqrt(MINUTES_PER_YEAR) * 100
                out.append({"timestamp": ticks[i] - ticks[i] % HOUR_MS, "value": vol})
        return out

    def funding_history(self, inst: Instrument, start: int, end: int) -> list[dict[str, Any]]:
        """``public/get_funding_rate_history``: per hour since the exchange started, the
        index at the end of the hour and the funding rate of the mark against it."""
        marks = self.candles.chart(inst.name, start, end, 60)
        index = self.candles.chart(index_name(inst.base), start, end, 60)
        closes = dict(zip(index["ticks"], index["close"], strict=True))
        out: list[dict[str, Any]] = []
        prev: float | None = None
        for hour, mark in zip(marks["ticks"], marks["close"], strict=True):
            idx = closes.get(hour)
            if idx is None:
                continue
            rate = funding_rate(mark, idx)
            out.append({
                "timestamp": hour, "index_price": idx,
                "prev_index_price": idx if prev is None else prev,
                "interest_8h": rate, "interest_1h": rate / 8,
            })
            prev = idx
        return out

    def _user_fill(
        self, order: Order, qty: float, price: float, liquidity: str, ts: int, matching_id: str
    ) -> dict[str, Any]:
        inst = order.inst
        account = self.accounts.by_id[order.account]  # type: ignore[index]
        rate = inst.maker_commission if liquidity == "M" else inst.taker_commission
        if inst.inverse:
            fee = qty / price * rate
        else:
            fee = min(rate * qty, 0.125 * price * qty)
        order.commission += fee
        pos = account.position(inst)
        old_size = pos.size
        pnl = pos.apply_fill(order.is_buy, qty, price)
        st = self.stats[inst.name]
        st.open_interest += max(pos.size, 0.0) - max(old_size, 0.0)
        cur = inst.currency
        balance = account.balances.get(cur, 0.0) - fee
        if inst.is_option:
            balance += -qty * price if order.is_buy else qty * price
        else:
            balance += pnl
        account.balances[cur] = balance
        self.recorder.account(account)
        if order.state == "open" and order.reserved:
            account.hold(order, order_margin(order))
        trade_id = f"{inst.base}-{self._trade_seq}"
        trade: dict[str, Any] = {
            "trade_id": trade_id,
            "trade_seq": self._trade_seq,
            "instrument_name": inst.name,
            "timestamp": ts,
            "order_id": order.order_id,
            "order_type": "market" if order.is_market else "limit",
            "matching_id": matching_id,
            "direction": order.direction,
            "tick_direction": st.tick_direction,
            "index_price": self.index(inst.base),
            "mark_price": self.mark(inst),
            "price": price,
            "amount": qty,
            "contracts": qty / inst.contract_size,
            "fee": fee,
            "fee_currency": cur,
            "liquidity": liquidity,
            "state": "filled" if order.amount - order.filled <= EPS else "open",
            "label": order.label,
            "profit_loss": pnl,
            "api": True,
            "mmp": False,
            "risk_reducing": False,
        }
        if inst.is_option:
            trade["underlying_price"] = self.index(inst.base)
            trade["iv"] = OPTION_VOL * 100
        self.trades_by_order.setdefault(order.order_id, []).append(trade)
        history = self.trades_by_account.get(account.account_id)
        if history is None:
            history = self.trades_by_account[account.account_id] = deque(
                maxlen=TRADES_PER_ACCOUNT
            )
        dropped = history[0] if len(history) == history.maxlen else None
        history.append(trade)
        self.recorder.trade(account.account_id, trade)
        if dropped is not None and dropped["order_id"] not in self.orders:
            # Out of the account's history and its order is gone: no query serves it.
            self.recorder.trade_gone(dropped)
        self.sink.on_trade(account.account_id, inst, trade)
        self._moved_positions[(account.account_id, inst.name)] = pos
        if order.is_linked:
            self._linked[id(order)] = order
        return trade

    def _emit_order(self, order: Order) -> None:
        self._touched[id(order)] = order

    def _flush(self) -> None:
        """Record, then publish, every order and position the last operation changed, once
        each."""
        while True:
            # Linked orders react to what happened (which may trade, move positions and
            # close more linked orders), and reduce-only orders follow the positions.
            self._settle_links()
            for (account_id, _), pos in list(self._moved_positions.items()):
                account = self.accounts.by_id[account_id]
                if account.reduce_only:
                    self._enforce_reduce_only(account, pos)
            if not self._linked:
                break
        recorder = self.recorder
        if self._dirty:
            dirty, self._dirty = self._dirty, {}
            for order in dirty.values():
                recorder.order(order)
        touched = moved = None
        if self._touched:
            touched, self._touched = self._touched, {}
            for order in touched.values():
                if order.account is not None:
                    recorder.order(order)
        if self._moved_positions:
            moved, self._moved_positions = self._moved_positions, {}
            for (account_id, _), pos in moved.items():
                recorder.position(account_id, pos)
        if touched:
            for order in touched.values():
                self.sink.on_order(order)
        if moved:
            for (account_id, _), pos in moved.items():
                self.sink.on_position(account_id, pos)

    def _enforce_reduce_only(self, account: Account, pos: Position) -> None:
        """Resting reduce-only orders never outgrow the position they reduce: trim them to
        it, or cancel them once there is nothing left on their side to reduce."""
        for order in list(account.reduce_only.values()):
            if order.inst is not pos.inst or order.state != "open":
                continue
            reducible = -pos.size if order.is_buy else pos.size
            if reducible <= EPS:
                self._unlink(order)
                order.updated_ms = now_ms()
                self._close(account, order, "cancelled")
                self._emit_order(order)
            elif order.amount - order.filled > reducible + EPS:
                order.amount = round(order.filled + reducible, 8)
                order.updated_ms = now_ms()
                self._emit_order(order)

    # ---- linked orders -----------------------------------------------------------------------

    def _park_secondary(self, account: Account, order: Order, primary: Order) -> None:
        """A one-triggers-other secondary: listed (untriggered) until its primary's fills
        place it."""
        order.is_secondary_oto = True
        order.oto_waiting = True
        order.primary_order_id = primary.order_id
        order.state = "untriggered"
        order.triggered = False
        order.market_price = order.is_market
        self._time_seq += 1
        order.seq = self._time_seq
        account.open_orders[order.order_id] = order
        self._emit_order(order)

    def _enter_oco_member(self, account: Account, order: Order) -> list[dict[str, Any]]:
        """Enter one order of a one-cancels-other group, unless the group closed it first
        (another member filled or closed before this one's turn)."""
        if not order.is_open:
            return []
        try:
            return self._enter(account, order)
        except RpcError as exc:
            self._reject_linked(account, order, exc)
            return []

    def _reject_linked(self, account: Account, order: Order, exc: RpcError) -> None:
        """A linked order that could not be placed when its time came: rejected, with the
        reason Deribit would have answered the request with."""
        log.info("paper.linked_order_rejected order=%s code=%d", order.order_id, exc.code)
        order.updated_ms = now_ms()
        self._close(account, order, "rejected")
        self._emit_order(order)

    def _settle_links(self) -> None:
        """Apply the fills and closes of linked orders: place or cancel the secondaries of
        primaries, cancel or shrink the rest of one-cancels-other groups."""
        while self._linked:
            batch, self._linked = self._linked, {}
            for order in batch.values():
                if order.oto_order_ids:
                    self._settle_primary(order)
                if order.oco_ref is not None:
                    self._settle_oco(order)

    def _settle_primary(self, primary: Order) -> None:
        account = self.accounts.by_id[primary.account]  # type: ignore[index]
        condition = primary.trigger_fill_condition
        share = primary.filled / primary.amount if primary.amount > EPS else 0.0
        for order_id in primary.oto_order_ids or ():
            order = self.orders.get(order_id)
            if order is None or not order.is_open:
                continue
            if condition == "incremental":
                target = _scaled(order, share)
                if order.oto_waiting and target > EPS:
                    order.amount = target
                    self._release(account, order)
                elif not order.oto_waiting and target > order.amount + EPS:
                    self._resize(account, order, target)
                elif order.oto_waiting and not primary.is_open:
                    self._cancel_one(account, order, "oto_primary_closed")
                continue
            due = (primary.filled > EPS) if condition == "first_hit" else primary.state == "filled"
            if order.oto_waiting and due:
                self._release(account, order)
            elif order.oto_waiting and not primary.is_open:
                self._cancel_one(account, order, "oto_primary_closed")

    def _release(self, account: Account, order: Order) -> None:
        """Place a waiting secondary now: the checks its request skipped, then to work."""
        order.oto_waiting = False
        order.updated_ms = now_ms()
        account.open_orders.pop(order.order_id, None)
        try:
            inst = order.inst
            if not order.is_market and not order.is_trigger:
                lo, hi = self.band(inst)
                ticks = round(order.price / inst.tick_size)
                if order.is_buy and ticks > hi:
                    raise RpcError(errors.PRICE_TOO_HIGH, {"max_price": to_price(hi, inst)})
                if not order.is_buy and ticks < lo:
                    raise RpcError(errors.PRICE_TOO_LOW, {"min_price": to_price(lo, inst)})
            if order.reduce_only:
                order.amount = self._reducible(account, inst, order.is_buy, order.amount)
            else:
                self._check_funds(account, order)
            if order.oco_ref is not None:
                self._enter_oco_member(account, order)
            else:
                self._enter(account, order)
        except RpcError as exc:
            self._reject_linked(account, order, exc)

    def _settle_oco(self, order: Order) -> None:
        ref = order.oco_ref
        assert ref is not None
        group = self.oco_groups.get(ref)
        if not group:
            return
        account = self.accounts.by_id[order.account]  # type: ignore[index]
        condition = order.trigger_fill_condition
        others = [o for o in group if o is not order and o.is_open]
        if not order.is_open:
            for other in others:
                self._cancel_one(account, other, "oco_other_closed")
        elif order.filled > EPS and condition == "first_hit":
            for other in others:
                self._cancel_one(account, other, "oco_other_closed")
        elif order.filled > EPS and condition == "incremental":
            left = 1.0 - order.filled / order.amount
            for other in others:
                target = _scaled(other, left)
                if target <= other.filled + EPS:
                    self._cancel_one(account, other, "oco_other_closed")
                elif target < other.amount - EPS:
                    self._resize(account, other, target)
        live = [o for o in group if o.is_open]
        if live:
            self.oco_groups[ref] = live
        else:
            del self.oco_groups[ref]

    def _resize(self, account: Account, order: Order, amount: float) -> None:
        """Set a linked order's amount (incremental fill conditions): smaller keeps its
        place in the book, larger goes to the back of its price level."""
        order.updated_ms = now_ms()
        if order.state != "open":
            order.amount = amount
        elif amount < order.amount:
            order.amount = amount
            account.hold(order, order_margin(order))
        else:
            self._unlink(order)
            order.amount = amount
            self._rest(account, order, round(order.price / order.inst.tick_size))
        self._emit_order(order)

    # ---- cancel / edit ---------------------------------------------------------------------

    def cancel(self, account: Account, order: Order, reason: str = "user_request") -> Order:
        """Cancel one open or untriggered order."""
        if not order.is_open:
            raise RpcError(errors.NOT_OPEN_ORDER)
        self._cancel_one(account, order, reason)
        self._flush()
        return order

    def _cancel_one(self, account: Account, order: Order, reason: str) -> None:
        """Take an open order out of the book (or its trigger's watch) as cancelled."""
        self._unlink(order)
        order.updated_ms = now_ms()
        self._close(account, order, "cancelled", reason)
        self.counters["cancels"] += 1
        self._emit_order(order)

    def _unlink(self, order: Order) -> None:
        if order.state == "untriggered":
            try:
                self.untriggered[order.inst.name].remove(order)
            except ValueError:
                pass
        else:
            ticks = round(order.price / order.inst.tick_size)
            self.books[order.inst.name].side(order.is_buy).remove(ticks, order)

    def cancel_many(
        self, account: Account, orders: list[Order], reason: str = "user_request"
    ) -> int:
        """Cancel every open order in ``orders``; returns how many."""
        n = 0
        for order in orders:
            if order.is_open:
                self._cancel_one(account, order, reason)
                n += 1
        self._flush()
        return n

    def edit(
        self,
        account: Account,
        order: Order,
        amount: float | None,
        contracts: float | None,
        price: float | None,
        post_only: bool | None,
        reject_post_only: bool | None,
        reduce_only: bool | None,
        trigger_price: float | None,
        trigger_offset: float | None = None,
        valid_until: int | None = None,
    ) -> tuple[Order, list[dict[str, Any]]]:
        """``private/edit``: change price and/or amount; a lower amount at the same price
        keeps time priority, anything else re-queues (and may trade). A trailing stop's
        ``trigger_offset`` changes the distance it keeps from the best price so far."""
        if valid_until is not None and now_ms() > valid_until:
            raise RpcError(errors.TIMED_OUT, {"reason": "valid_until has passed"})
        if not order.is_open:
            raise RpcError(errors.NOT_OPEN_ORDER)
        inst = order.inst
        if trigger_offset is not None:
            if order.order_type != "trailing_stop":
                raise invalid_param("trigger_offset", "only for trailing_stop orders")
            if not trigger_offset > 0:
                raise invalid_param("trigger_offset", "must be positive")
        new_amount = order.amount
        if amount is not None or contracts is not None:
            new_amount = self._amount(inst, amount, contracts)
        if new_amount + EPS < order.filled:
            raise invalid_param("amount", "amount is lower than the filled amount")
        is_limit = order.order_type in OPTION_TYPES_LIMIT
        old_ticks = round(order.price / inst.tick_size)
        ticks = old_ticks
        if price is not None and is_limit:
            ticks = price_ticks(inst, price)
            lo, hi = self.band(inst)
            if order.is_buy and ticks > hi:
                raise RpcError(errors.PRICE_TOO_HIGH, {"max_price": to_price(hi, inst)})
            if not order.is_buy and ticks < lo:
                raise RpcError(errors.PRICE_TOO_LOW, {"min_price": to_price(lo, inst)})
        if trigger_offset is not None and order.state == "untriggered" and not order.oto_waiting:
            old = order.trigger_offset or 0.0
            trig = order.trigger_price or 0.0
            best = trig - old if order.is_buy else trig + old
            order.trigger_offset = trigger_offset
            order.trigger_price = self._trail_price(order, best)
        elif trigger_offset is not None:
            order.trigger_offset = trigger_offset
        elif trigger_price is not None and order.state == "untriggered":
            order.trigger_price = to_price(price_ticks(inst, trigger_price, "trigger_price"), inst)
        if post_only is not None:
            order.post_only = post_only and is_limit
        if reject_post_only is not None:
            order.reject_post_only = reject_post_only and order.post_only
        if reduce_only is not None:
            order.reduce_only = reduce_only
            if reduce_only and order.state == "open":
                account.reduce_only[order.order_id] = order
            else:
                account.reduce_only.pop(order.order_id, None)
        self.counters["edits"] += 1
        order.replaced = True
        order.updated_ms = now_ms()
        if order.state == "untriggered":
            order.amount = new_amount
            if order.oto_waiting:
                order.linked_amount = new_amount
            order.price = to_price(ticks, inst)
            self._emit_order(order)
            self._flush()
            return order, []
        if new_amount - order.filled <= EPS:
            self._unlink(order)
            order.amount = new_amount
            self._close(account, order, "filled")
            self._emit_order(order)
            self._flush()
            return order, []
        if ticks == old_ticks and new_amount <= order.amount:
            order.amount = new_amount
            account.hold(order, order_margin(order))
            self._emit_order(order)
            self._flush()
            return order, []
        self._unlink(order)
        old_amount, old_price = order.amount, order.price
        order.amount, order.price = new_amount, to_price(ticks, inst)
        account.hold(order, 0.0)
        try:
            if not order.reduce_only:
                self._check_funds(account, order)
            if order.post_only:
                self._apply_post_only(order, ticks)
                ticks = round(order.price / inst.tick_size)
        except RpcError as exc:
            if exc.code == errors.POST_ONLY_REJECT:
                self._close(account, order, "cancelled", "edit_post_only_reject")
                self._emit_order(order)
                self._flush()
                raise
            # Refused edits leave the order as it was (it re-enters the queue at the back).
            order.amount, order.price = old_amount, old_price
            ticks = old_ticks
            self._rest(account, order, ticks)
            self._dirty[id(order)] = order
            self._flush()
            raise
        account.open_orders.pop(order.order_id, None)
        trades = self._execute(account, order, ticks)
        self._flush()
        return order, trades

    def _rest(self, account: Account, order: Order, ticks: int) -> None:
        self._time_seq += 1
        order.seq = self._time_seq
        self.books[order.inst.name].side(order.is_buy).add(ticks, order)
        # Re-queued at the back: also last among the account's open orders (as a restore
        # puts it, since it orders them by ``seq``).
        account.open_orders.pop(order.order_id, None)
        account.open_orders[order.order_id] = order
        account.hold(order, order_margin(order))
        if order.reduce_only:
            account.reduce_only[order.order_id] = order

    # ---- queries -----------------------------------------------------------------------------

    def open_orders(
        self,
        account: Account,
        currency: str | None = None,
        kind: str | None = None,
        instrument: str | None = None,
        order_type: str | None = None,
        label: str | None = None,
    ) -> list[Order]:
        """The account's open (and untriggered) orders, filtered."""
        out = []
        for order in account.open_orders.values():
            inst = order.inst
            if instrument is not None and inst.name != instrument:
                continue
            if currency is not None and currency != "any" and inst.currency != currency:
                continue
            if kind is not None and kind != "any" and inst.kind != kind:
                continue
            if label is not None and order.label != label:
                continue
            if not _type_matches(order, order_type):
                continue
            out.append(order)
        return out

    def order_history(
        self,
        account: Account,
        currency: str | None = None,
        kind: str | None = None,
        instrument: str | None = None,
        include_unfilled: bool = False,
        count: int = 20,
        offset: int = 0,
    ) -> list[Order]:
        """The account's closed orders, newest first (``get_order_history_*``): those with
        fills, and unfilled ones too with ``include_unfilled``."""
        out: list[Order] = []
        skip = offset
        account_id = account.account_id
        for order_id in reversed(self._closed):
            order = self.orders.get(order_id)
            if order is None or order.account != account_id:
                continue
            inst = order.inst
            if instrument is not None and inst.name != instrument:
                continue
            if currency is not None and inst.currency != currency:
                continue
            if kind is not None and kind != "any" and inst.kind != kind:
                continue
            if order.filled <= EPS and not include_unfilled:
                continue
            if skip:
                skip -= 1
                continue
            out.append(order)
            if len(out) >= count:
                break
        return out

    def label_counts(self) -> dict[str, int]:
        """Orders per label over the retained history (``history_limit`` closed orders)."""
        counts: dict[str, int] = {}
        for (_, label), orders in self.by_label.items():
            counts[label] = counts.get(label, 0) + len(orders)
        return counts

    def orders_by_label(self, account: Account, label: str) -> list[Order]:
        return list(self.by_label.get((account.account_id, label), ()))

    def set_position(
        self, account: Account, inst: Instrument, size: float, average_price: float | None
    ) -> Position:
        """Overwrite a position (admin): an external change the OMS did not cause."""
        pos = account.position(inst)
        st = self.stats[inst.name]
        st.open_interest += max(size, 0.0) - max(pos.size, 0.0)
        pos.size = size
        pos.avg = average_price if average_price else (self.mark(inst) if size else 0.0)
        self._moved_positions[(account.account_id, inst.name)] = pos
        self._flush()
        return pos

    def set_balance(self, account: Account, currency: str, amount: float) -> None:
        """Overwrite a balance (admin)."""
        account.balances[currency] = amount
        self.recorder.account(account)

    # ---- restore (durable exchange) ----------------------------------------------------------

    def restore_orders(self, orders: list[Order]) -> list[str]:
        """Take back stored user orders: the history and its label index, resting orders in
        their book in time priority, untriggered orders waiting for their trigger, and the
        margin they hold. Returns the ids of closed orders evicted to respect
        ``history_limit``."""
        for order in sorted(orders, key=order_number):  # creation order
            self.orders[order.order_id] = order
            if order.label and order.account is not None:
                self.by_label.setdefault((order.account, order.label), []).append(order)
        # Eviction order: by closing time (the last update of a closed order).
        closed = sorted(
            (o for o in orders if not o.is_open), key=lambda o: (o.updated_ms, order_number(o))
        )
        self._closed.extend(o.order_id for o in closed)
        # ``seq`` orders resting orders within their price level, and every open order
        # (untriggered ones too) among its account's open orders.
        for order in sorted((o for o in orders if o.is_open), key=lambda o: o.seq):
            account = self.accounts.by_id[order.account]  # type: ignore[index]
            account.open_orders[order.order_id] = order
            self._time_seq = max(self._time_seq, order.seq)
            if order.oco_ref is not None:
                self.oco_groups.setdefault(order.oco_ref, []).append(order)
            if order.oto_waiting:
                continue  # placed by its primary's fills, not by a price
            if order.state == "untriggered":
                self.untriggered[order.inst.name].append(order)
                continue
            ticks = round(order.price / order.inst.tick_size)
            self.books[order.inst.name].side(order.is_buy).add(ticks, order)
            reserved, order.reserved = order.reserved, 0.0
            account.hold(order, reserved)
            if order.reduce_only:
                account.reduce_only[order.order_id] = order
        evicted = []
        while len(self._closed) > self.history_limit:
            order_id = self._closed.popleft()
            self._evict(order_id)
            evicted.append(order_id)
        return evicted

    def restore_trades(self, trades: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Take back stored user trades (account id, trade): per order for retained orders,
        and each account's latest ``TRADES_PER_ACCOUNT``. Returns the trades neither keeps."""
        # A fill books the maker's side before the taker's, under one trade number.
        ordered = sorted(trades, key=lambda at: (at[1]["trade_seq"], at[1]["liquidity"]))
        for account_id, trade in ordered:
            if trade["order_id"] in self.orders:
                self.trades_by_order.setdefault(trade["order_id"], []).append(trade)
            history = self.trades_by_account.get(account_id)
            if history is None:
                history = self.trades_by_account[account_id] = deque(maxlen=TRADES_PER_ACCOUNT)
            history.append(trade)
        return [
            trade
            for account_id, trade in ordered
            if trade["order_id"] not in self.orders
            and not _retained(self.trades_by_account[account_id], trade)
        ]

    # ---- market ------------------------------------------------------------------------------

    def step_market(self) -> None:
        """One market tick: move prices, replace the market maker's quotes (they trade
        against any user order they cross) and fire triggered orders."""
        self.market.step()
        ts = now_ms()
        for name, mark in self.market.marks.items():
            self.candles.price(name, ts, mark)
        for currency, index in self.market.index.items():
            self.candles.price(index_name(currency), ts, index)
        if ts >= self.day_end_ms:
            self.expire_day_orders()
            self.day_end_ms = next_day_end(ts)
        for name, inst in self.instruments.items():
            book = self.books[name]
            for ticks, order in self.mm_orders[name]:
                if order.amount - order.filled > EPS:
                    book.side(order.is_buy).remove(ticks, order)
            fresh: list[tuple[int, Order]] = []
            for is_buy, ticks, amount in self.market.quotes(inst):
                order = Order("mm", None, inst, is_buy, to_price(ticks, inst), amount)
                self._match(order, ticks)
                if order.amount - order.filled > EPS:
                    self._time_seq += 1
                    order.seq = self._time_seq
                    book.side(is_buy).add(ticks, order)
                    fresh.append((ticks, order))
            self.mm_orders[name] = fresh
            if self.untriggered[name]:
                self._check_triggers(inst)
        self._flush()

    def expire_day_orders(self) -> int:
        """Cancel every open good_til_day order (Deribit does so at 08:00 UTC)."""
        n = 0
        for account in self.accounts.by_id.values():
            day = [o for o in account.open_orders.values() if o.time_in_force == "good_til_day"]
            if day:
                n += self.cancel_many(account, day, reason="settlement")
        return n

    def check_triggers(self, inst: Instrument) -> None:
        """Fire (and trail) ``inst``'s trigger orders at the current prices, as a market
        tick does."""
        self._check_triggers(inst)
        self._flush()

    def _trigger_refs(self, inst: Instrument) -> dict[str, float]:
        """The price each kind of trigger watches."""
        return {
            "index_price": self.index(inst.base),
            "mark_price": self.mark(inst),
            "last_price": self.stats[inst.name].last_price,
        }

    def _check_triggers(self, inst: Instrument) -> None:
        refs = self._trigger_refs(inst)
        fired = []
        for order in self.untriggered[inst.name]:
            ref = refs[order.trigger or "last_price"]
            if order.order_type == "trailing_stop":
                self._trail(order, ref)
            trig = order.trigger_price or 0.0
            # Stops (and trailing stops) buy on the way up and sell on the way down; take
            # orders the other way round.
            is_stop = not order.order_type.startswith("take")
            up = ref >= trig
            down = ref <= trig
            if (up if order.is_buy == is_stop else down):
                fired.append(order)
        for order in fired:
            self.untriggered[inst.name].remove(order)
            account = self.accounts.by_id[order.account]  # type: ignore[index]
            order.triggered = True
            order.state = "open"
            order.market_price = False
            order.updated_ms = now_ms()
            if order.is_market:
                lo, hi = self.band(inst)
                ticks = hi if order.is_buy else lo
                order.price = to_price(ticks, inst)
            else:
                ticks = round(order.price / inst.tick_size)
            account.open_orders.pop(order.order_id, None)
            self._execute(account, order, ticks)

    def _trail(self, order: Order, ref: float) -> None:
        """Follow the trigger's best price: a sell stop only ever moves up, a buy stop down."""
        level = self._trail_price(order, ref)
        trig = order.trigger_price or 0.0
        if (level < trig) if order.is_buy else (level > trig):
            order.trigger_price = level
            order.updated_ms = now_ms()
            self._emit_order(order)

    def ticker(self, inst: Instrument, ts: int | None = None) -> dict[str, Any]:
        """The spec's ticker object for ``public/ticker`` and ``ticker.*`` channels."""
        book = self.books[inst.name]
        st = self.stats[inst.name]
        mark = self.mark(inst)
        index = self.index(inst.base)
        lo, hi = self.band(inst)
        bid = next(book.bids.depth(1), None)
        ask = next(book.asks.depth(1), None)
        d: dict[str, Any] = {
            "instrument_name": inst.name,
            "timestamp": ts or now_ms(),
            "state": "open",
            "best_bid_price": to_price(bid[0], inst) if bid else 0.0,
            "best_bid_amount": bid[1] if bid else 0.0,
            "best_ask_price": to_price(ask[0], inst) if ask else 0.0,
            "best_ask_amount": ask[1] if ask else 0.0,
            "last_price": st.last_price,
            "mark_price": mark,
            "index_price": index,
            "min_price": to_price(lo, inst),
            "max_price": to_price(hi, inst),
            "open_interest": st.open_interest,
            "settlement_price": mark,
            "estimated_delivery_price": index,
            "stats": {
                "volume": st.volume,
                "volume_usd": st.volume_usd,
                "high": st.high or st.last_price,
                "low": st.low or st.last_price,
                "price_change": (
                    (st.last_price / st.open_price - 1) * 100 if st.open_price else 0.0
                ),
            },
        }
        if inst.is_option:
            years = max(0.0, (inst.expiry_ms - now_ms()) / YEAR_MS)
            delta = option_delta(
                index, inst.strike or index, years, OPTION_VOL, inst.option_type == "call"
            )
            d.update(
                underlying_price=index,
                interest_rate=0.0,
                mark_iv=OPTION_VOL * 100,
                bid_iv=OPTION_VOL * 100 * 0.97,
                ask_iv=OPTION_VOL * 100 * 1.03,
                greeks={"delta": delta, "gamma": 0.0, "rho": 0.0, "theta": 0.0, "vega": 0.0},
            )
        else:
            funding = self.funding_8h(inst)
            d.update(funding_8h=funding, current_funding=funding, interest_value=0.0)
        return d

    def order_book(self, inst: Instrument, depth: int) -> dict[str, Any]:
        """``public/get_order_book``: the ticker plus ``depth`` levels per side."""
        book = self.books[inst.name]
        d = self.ticker(inst)
        d["bids"] = [[to_price(t, inst), a] for t, a in book.bids.depth(depth)]
        d["asks"] = [[to_price(t, inst), a] for t, a in book.asks.depth(depth)]
        d["change_id"] = self._time_seq
        return d


def funding_rate(mark: float, index: float) -> float:
    """Deribit's funding per 8 hours: the premium of the mark over the index, less a damper
    of 0.025% either way."""
    premium = mark / index - 1.0
    return max(FUNDING_DAMPER, premium) + min(-FUNDING_DAMPER, premium)


def order_number(order: Order) -> int:
    """The number in an order id (``BTC-10000042`` -> 10000042): creation order."""
    return int(order.order_id.rsplit("-", 1)[-1])


def _retained(history: deque[dict[str, Any]], trade: dict[str, Any]) -> bool:
    """Whether ``trade`` is still in an account's trade history (oldest first, by number;
    both sides of a self-trade share a number)."""
    if not history:
        return False
    seq, first = trade["trade_seq"], history[0]["trade_seq"]
    if seq != first:
        return seq > first
    for kept in history:
        if kept["trade_seq"] != seq:
            return False
        if kept is trade:
            return True
    return False


def _scaled(order: Order, share: float) -> float:
    """``share`` of the amount ``order`` was linked with, rounded down to its contract size
    (what an incremental fill condition gives it)."""
    full = order.linked_amount if order.linked_amount is not None else order.amount
    step = order.inst.min_trade_amount
    return round(math.floor(full * share / step + 1e-9) * step, 8)


def _type_matches(order: Order, wanted: str | None) -> bool:
    if wanted is None or wanted == "all":
        return True
    if wanted == "limit":
        return order.order_type == "limit"
    if wanted == "trigger_all":
        return order.order_type in TRIGGER_TYPES
    if wanted == "stop_all":
        return order.order_type.startswith("stop")
    if wanted == "take_all":
        return order.order_type.startswith("take")
    if wanted == "trailing_all":
        return order.order_type == "trailing_stop"
    if wanted == "stop_limit":
        return order.order_type == "stop_limit"
    return order.order_type == wanted
