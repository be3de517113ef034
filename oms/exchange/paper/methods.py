"""The JSON-RPC methods: Deribit's (``public/*``, ``private/*``) and the test-only
``admin/*`` ones. Each handler takes the exchange state, the calling session and the params
and returns the ``result``; errors are raised as :class:`RpcError`. A handler registers
itself in :data:`METHODS` with :func:`method`, saying how it is treated (private, counted
against the matching engine, WebSocket only, admin, subject to the order-entry faults).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from oms.exchange.paper import errors
from oms.exchange.paper.accounts import CURRENCIES, Account, AccountStore, currency_info
from oms.exchange.paper.candles import RESOLUTIONS
from oms.exchange.paper.engine import (
    FUNDING_PERIOD_MS,
    TIME_IN_FORCE,
    TRIGGERS,
    Engine,
    OrderRequest,
    now_ms,
)
from oms.exchange.paper.errors import RpcError, invalid_param
from oms.exchange.paper.faults import Faults
from oms.exchange.paper.params import Params
from oms.exchange.paper.positions import initial_margin
from oms.exchange.paper.session import Session
from oms.exchange.paper.signatures import SignedClaim
from oms.exchange.paper.subscriptions import Hub
from oms.exchange.paper.validation import check_amount, to_price

if TYPE_CHECKING:
    from oms.exchange.paper.journal import Journal

log = logging.getLogger("oms.paper")

VERSION = "1.2.26"
ORDER_TYPES = (
    "limit", "market", "stop_limit", "stop_market", "take_limit", "take_market",
    "market_limit", "trailing_stop",
)
KINDS = ("future", "option", "spot", "future_combo", "option_combo", "combo", "any")
OPEN_ORDER_TYPES = (
    "all", "limit", "trigger_all", "stop_all", "stop_limit", "stop_market", "take_all",
    "take_limit", "take_market", "trailing_all", "trailing_stop",
)


@dataclass
class State:
    """Everything the handlers need."""

    engine: Engine
    accounts: AccountStore
    hub: Hub
    faults: Faults
    min_heartbeat_s: float = 10.0
    rate_limits: bool = True
    sessions: set[Session] = field(default_factory=set)
    method_counts: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    heartbeat_starter: Callable[[Session], None] | None = None
    journal: Journal | None = None  # a durable exchange's
    # The market loop stands still (prices and the market maker's quotes kept): a test can
    # then arrange a book and trade against exactly it.
    market_paused: bool = False


Handler = Callable[[State, Session, Params], Any]


@dataclass(frozen=True, slots=True)
class Method:
    """A method's handler and how it is treated by the transports and rate limiter."""

    handler: Handler
    private: bool = False
    matching: bool = False  # counts against the matching-engine limit
    ws_only: bool = False
    admin: bool = False
    order_entry: bool = False  # subject to the reject / rate-limit fault knobs


# Method name -> its handler and treatment, filled by :func:`method` below.
METHODS: dict[str, Method] = {}


def method(name: str, **flags: bool) -> Callable[[Handler], Handler]:
    """Register the decorated handler as the method ``name``; ``flags`` are how it is
    treated (the fields of :class:`Method`)."""

    def register(handler: Handler) -> Handler:
        METHODS[name] = Method(handler, **flags)
        return handler

    return register


def _account(s: Session) -> Account:
    assert s.account is not None
    return s.account


def _currency(
    p: Params, name: str = "currency", allow_any: bool = False, default: str | None = None
) -> str:
    """A currency param, upper-cased; Deribit answers an unknown one with -32602 "invalid
    currency"."""
    raw = p.text(name, default, required=default is None)
    assert raw is not None
    value = raw.upper()
    if value not in CURRENCIES and not (allow_any and value == "ANY"):
        raise invalid_param(name, "invalid currency")
    return value


# ---- public ----------------------------------------------------------------------------------


@method("public/auth")
def public_auth(st: State, s: Session, p: Params) -> Any:
    grant = p.choice("grant_type", ("client_credentials", "refresh_token", "client_signature"),
                     required=True)
    if grant == "client_credentials":
        account = st.accounts.authenticate(p.req_str("client_id"), p.req_str("client_secret"))
    elif grant == "refresh_token":
        account = st.accounts.by_refresh_token(p.req_str("refresh_token"))
    else:
        timestamp = p.integer("timestamp", required=True)
        raw_ts = p.raw["timestamp"]
        # The signature covers the timestamp as the client wrote it.
        claim = SignedClaim(
            p.req_str("client_id"), raw_ts if isinstance(raw_ts, str) else str(timestamp),
            p.text("nonce") or "", p.req_str("signature"),
        )
        account = st.accounts.verify_signature(claim, p.text("data") or "", now_ms())
    if s.account is not None and s.account is not account:
        # A connection belongs to one account: re-authenticating as another starts over.
        st.hub.drop(s)
    s.account = account
    log.info(
        "paper.auth session=%s account=%s client_id=%s grant=%s",
        s.id, account.account_id, account.client_id, grant,
    )
    result = st.accounts.issue(account)
    if p.has("state"):
        result["state"] = p.text("state")
    return result


@method("public/get_time")
def public_get_time(st: State, s: Session, p: Params) -> Any:
    return time.time_ns() // 1_000_000


@method("public/test")
def public_test(st: State, s: Session, p: Params) -> Any:
    s.test_pending = False
    if p.text("expected_result") == "exception":
        raise RpcError(errors.INVALID_PARAMS, {"reason": "expected_result", "param": "exception"})
    return {"version": VERSION}


@method("public/hello")
def public_hello(st: State, s: Session, p: Params) -> Any:
    p.req_str("client_name")
    p.req_str("client_version")
    return {"version": VERSION}


@method("public/status")
def public_status(st: State, s: Session, p: Params) -> Any:
    return {"locked": "false", "locked_indices": []}


@method("public/set_heartbeat", ws_only=True)
def public_set_heartbeat(st: State, s: Session, p: Params) -> Any:
    interval = p.num("interval", required=True)
    assert interval is not None
    if interval < st.min_heartbeat_s:
        raise invalid_param("interval", f"must be at least {st.min_heartbeat_s:g}")
    s.heartbeat_interval = interval
    s.test_pending = False
    if st.heartbeat_starter is not None:
        st.heartbeat_starter(s)
    return "ok"


@method("public/disable_heartbeat", ws_only=True)
def public_disable_heartbeat(st: State, s: Session, p: Params) -> Any:
    s.heartbeat_interval = None
    if s.heartbeat_task is not None:
        s.heartbeat_task.cancel()
        s.heartbeat_task = None
    return "ok"


@method("public/get_currencies")
def public_get_currencies(st: State, s: Session, p: Params) -> Any:
    return [currency_info(c) for c in CURRENCIES]


@method("public/get_instruments")
def public_get_instruments(st: State, s: Session, p: Params) -> Any:
    # Deribit lists every currency's instruments when ``currency`` is left out (ccxt's
    # load_markets relies on it), as with "any".
    currency = _currency(p, allow_any=True, default="any")
    kind = p.choice("kind", KINDS)
    if p.flag("expired"):
        return []
    return [
        i.to_dict()
        for i in st.engine.instruments.values()
        if currency in ("ANY", i.currency) and kind in (None, "any", i.kind)
    ]


@method("public/get_instrument")
def public_get_instrument(st: State, s: Session, p: Params) -> Any:
    return st.engine.instrument(p.req_str("instrument_name")).to_dict()


@method("public/ticker")
def public_ticker(st: State, s: Session, p: Params) -> Any:
    return st.engine.ticker(st.engine.instrument(p.req_str("instrument_name")))


@method("public/get_order_book")
def public_get_order_book(st: State, s: Session, p: Params) -> Any:
    inst = st.engine.instrument(p.req_str("instrument_name"))
    depth = p.integer("depth", 20) or 20
    return st.engine.order_book(inst, max(1, min(depth, 10_000)))


@method("public/get_index_price")
def public_get_index_price(st: State, s: Session, p: Params) -> Any:
    name = p.req_str("index_name")
    cur = name.split("_")[0].upper()
    if cur not in st.engine.market.index:
        raise invalid_param("index_name", "unknown index")
    price = st.engine.index(cur)
    return {"index_price": price, "estimated_delivery_price": price}


def _book_summary(st: State, inst: Any) -> dict[str, Any]:
    """The spec's ``book_summary`` of one instrument, from its ticker."""
    t = st.engine.ticker(inst)
    bid = t["best_bid_price"] or None
    ask = t["best_ask_price"] or None
    stats = t["stats"]
    d: dict[str, Any] = {
        "instrument_name": inst.name,
        "base_currency": inst.base,
        "quote_currency": "USD" if inst.inverse else inst.base,
        "creation_timestamp": t["timestamp"],
        "bid_price": bid,
        "ask_price": ask,
        "mid_price": (bid + ask) / 2 if bid is not None and ask is not None else None,
        "mark_price": t["mark_price"],
        "last": t["last_price"],
        "high": stats["high"],
        "low": stats["low"],
        "price_change": stats["price_change"],
        "volume": stats["volume"],
        "volume_usd": stats["volume_usd"],
        "volume_notional": stats["volume_usd"],
        "open_interest": t["open_interest"],
        "estimated_delivery_price": t["estimated_delivery_price"],
    }
    if inst.is_option:
        d.update(
            underlying_index=inst.index_name, underlying_price=t["underlying_price"],
            interest_rate=0.0, mark_iv=t["mark_iv"],
        )
    elif inst.settlement_period == "perpetual":
        d.update(funding_8h=t["funding_8h"], current_funding=t["current_funding"])
    return d


@method("public/get_book_summary_by_currency")
def public_get_book_summary_by_currency(st: State, s: Session, p: Params) -> Any:
    currency = _currency(p)
    kind = p.choice("kind", KINDS)
    return [
        _book_summary(st, inst) for inst in st.engine.instruments.values()
        if inst.currency == currency and kind in (None, "any", inst.kind)
    ]


@method("public/get_book_summary_by_instrument")
def public_get_book_summary_by_instrument(st: State, s: Session, p: Params) -> Any:
    return [_book_summary(st, st.engine.instrument(p.req_str("instrument_name")))]


def _time_range(p: Params) -> tuple[int, int]:
    start = p.integer("start_timestamp", required=True)
    end = p.integer("end_timestamp", required=True)
    assert start is not None and end is not None
    if end < start:
        raise invalid_param("end_timestamp", "must not be before start_timestamp")
    return start, end


def _perpetual_over(st: State, p: Params) -> tuple[Any, int, int]:
    """The perpetual ``instrument_name`` names, and the time range asked for."""
    inst = st.engine.instrument(p.req_str("instrument_name"))
    if inst.settlement_period != "perpetual":
        raise invalid_param("instrument_name", "not a perpetual")
    start, end = _time_range(p)
    return inst, start, end


@method("public/get_tradingview_chart_data")
def public_get_tradingview_chart_data(st: State, s: Session, p: Params) -> Any:
    inst = st.engine.instrument(p.req_str("instrument_name"))
    start, end = _time_range(p)
    raw = p.raw.get("resolution")
    resolution = str(int(raw)) if isinstance(raw, int | float) and not isinstance(raw, bool) \
        else raw
    minutes = RESOLUTIONS.get(resolution) if isinstance(resolution, str) else None
    if minutes is None:
        raise invalid_param("resolution", f"must be one of {', '.join(RESOLUTIONS)}")
    return st.engine.candles.chart(inst.name, start, end, minutes)


@method("public/get_funding_rate_value")
def public_get_funding_rate_value(st: State, s: Session, p: Params) -> Any:
    inst, start, end = _perpetual_over(st, p)
    return st.engine.funding_8h(inst) * (end - start) / FUNDING_PERIOD_MS


@method("public/get_historical_volatility")
def public_get_historical_volatility(st: State, s: Session, p: Params) -> Any:
    return st.engine.historical_volatility(_currency(p), now_ms())


@method("public/get_funding_rate_history")
def public_get_funding_rate_history(st: State, s: Session, p: Params) -> Any:
    inst, start, end = _perpetual_over(st, p)
    return st.engine.funding_history(inst, start, end)


@method("public/subscribe", ws_only=True)
def public_subscribe(st: State, s: Session, p: Params) -> Any:
    return st.hub.subscribe(s, p.str_list("channels"), private=False)


@method("private/subscribe", private=True, ws_only=True)
def private_subscribe(st: State, s: Session, p: Params) -> Any:
    return st.hub.subscribe(s, p.str_list("channels"), private=True)


@method("public/unsubscribe", ws_only=True)
@method("private/unsubscribe", private=True, ws_only=True)
def unsubscribe(st: State, s: Session, p: Params) -> Any:
    return st.hub.unsubscribe(s, p.str_list("channels"))


@method("public/unsubscribe_all", ws_only=True)
@method("private/unsubscribe_all", private=True, ws_only=True)
def unsubscribe_all(st: State, s: Session, p: Params) -> Any:
    st.hub.drop(s)
    return "ok"


# ---- trading ---------------------------------------------------------------------------------


LINKED_ORDER_TYPES = (
    "one_triggers_other", "one_cancels_other", "one_triggers_one_cancels_other",
)
FILL_CONDITIONS = ("first_hit", "complete_fill", "incremental")


def _order_request(p: Params, instrument_name: str | None = None) -> OrderRequest:
    """An order's params (``instrument_name`` given: a linked order of ``otoco_config``,
    on its primary's instrument)."""
    req = OrderRequest(
        instrument_name=instrument_name or p.req_str("instrument_name"),
        amount=p.num("amount"),
        contracts=p.num("contracts"),
        type=p.choice("type", ORDER_TYPES, "limit") or "limit",
        label=p.text("label"),
        price=p.num("price"),
        time_in_force=p.choice("time_in_force", TIME_IN_FORCE, "good_til_cancelled")
        or "good_til_cancelled",
        max_show=p.num("max_show") if p.has("max_show") else p.num("display_amount"),
        post_only=p.flag("post_only"),
        reject_post_only=p.flag("reject_post_only"),
        reduce_only=p.flag("reduce_only"),
        trigger_price=p.num("trigger_price"),
        trigger=p.choice("trigger", TRIGGERS),
        trigger_offset=p.num("trigger_offset"),
    )
    if instrument_name is not None:
        return req
    req.valid_until = p.integer("valid_until")
    req.linked_order_type = p.choice("linked_order_type", LINKED_ORDER_TYPES)
    req.trigger_fill_condition = p.choice("trigger_fill_condition", FILL_CONDITIONS)
    for i, leg in enumerate(p.obj_list("otoco_config")):
        leg_params = Params(leg)
        direction = leg_params.choice("direction", ("buy", "sell"), required=True)
        try:
            leg_req = _order_request(leg_params, req.instrument_name)
        except RpcError as exc:
            if exc.data is not None and "param" in exc.data:
                exc.data["param"] = f"otoco_config[{i}].{exc.data['param']}"
            raise
        req.otoco_config.append((direction == "buy", leg_req))
    return req


def _place(st: State, s: Session, p: Params, is_buy: bool) -> Any:
    order, trades = st.engine.place(_account(s), is_buy, _order_request(p), s.id)
    return {"order": order.to_dict(), "trades": trades}


@method("private/buy", private=True, matching=True, order_entry=True)
def private_buy(st: State, s: Session, p: Params) -> Any:
    return _place(st, s, p, True)


@method("private/sell", private=True, matching=True, order_entry=True)
def private_sell(st: State, s: Session, p: Params) -> Any:
    return _place(st, s, p, False)


@method("private/close_position", private=True, matching=True, order_entry=True)
def private_close_position(st: State, s: Session, p: Params) -> Any:
    """A reduce-only order for the whole position, limit or market."""
    account = _account(s)
    inst = st.engine.instrument(p.req_str("instrument_name"))
    otype = p.choice("type", ("limit", "market"), required=True) or "market"
    pos = account.positions.get(inst.name)
    if pos is None or pos.size == 0.0:
        raise RpcError(errors.OTHER_REJECT, {"reason": "no position to close"})
    req = OrderRequest(
        instrument_name=inst.name, amount=abs(pos.size), type=otype,
        price=p.num("price"), reduce_only=True,
    )
    order, trades = st.engine.place(account, pos.size < 0, req, s.id)
    return {"order": order.to_dict(), "trades": trades}


@method("private/edit", private=True, matching=True, order_entry=True)
def private_edit(st: State, s: Session, p: Params) -> Any:
    account = _account(s)
    order = st.engine.order_of(account, p.req_str("order_id"))
    order, trades = st.engine.edit(
        account, order, p.num("amount"), p.num("contracts"), p.num("price"),
        p.flag("post_only") if p.has("post_only") else None,
        p.flag("reject_post_only") if p.has("reject_post_only") else None,
        p.flag("reduce_only") if p.has("reduce_only") else None,
        p.num("trigger_price"),
        trigger_offset=p.num("trigger_offset"),
        valid_until=p.integer("valid_until"),
    )
    return {"order": order.to_dict(), "trades": trades}


@method("private/edit_by_label", private=True, matching=True, order_entry=True)
def private_edit_by_label(st: State, s: Session, p: Params) -> Any:
    account = _account(s)
    label = p.req_str("label")
    inst = st.engine.instrument(p.req_str("instrument_name"))
    live = [
        o for o in st.engine.orders_by_label(account, label) if o.is_open and o.inst is inst
    ]
    if len(live) != 1:
        raise RpcError(errors.ORDER_NOT_FOUND if not live else errors.INVALID_PARAMS,
                       {"reason": "label must name exactly one open order", "param": "label"})
    order, trades = st.engine.edit(
        account, live[0], p.num("amount"), p.num("contracts"), p.num("price"),
        p.flag("post_only") if p.has("post_only") else None,
        p.flag("reject_post_only") if p.has("reject_post_only") else None,
        p.flag("reduce_only") if p.has("reduce_only") else None,
        p.num("trigger_price"),
    )
    return {"order": order.to_dict(), "trades": trades}


@method("private/cancel", private=True, matching=True)
def private_cancel(st: State, s: Session, p: Params) -> Any:
    account = _account(s)
    order = st.engine.order_of(account, p.req_str("order_id"))
    return st.engine.cancel(account, order).to_dict()


def _cancel_result(st: State, s: Session, p: Params, orders: list[Any]) -> Any:
    account = _account(s)
    if p.flag("detailed"):
        n = st.engine.cancel_many(account, orders)
        return [{"order_state": "cancelled", "cancelled_count": n,
                 "orders": [o.to_dict() for o in orders]}]
    return st.engine.cancel_many(account, orders)


@method("private/cancel_all", private=True, matching=True)
def private_cancel_all(st: State, s: Session, p: Params) -> Any:
    account = _account(s)
    return _cancel_result(st, s, p, list(account.open_orders.values()))


@method("private/cancel_all_by_instrument", private=True, matching=True)
def private_cancel_all_by_instrument(st: State, s: Session, p: Params) -> Any:
    inst = st.engine.instrument(p.req_str("instrument_name"))
    kind = p.choice("type", OPEN_ORDER_TYPES, "all")
    orders = st.engine.open_orders(_account(s), instrument=inst.name, order_type=kind)
    return _cancel_result(st, s, p, orders)


@method("private/cancel_all_by_currency", private=True, matching=True)
def private_cancel_all_by_currency(st: State, s: Session, p: Params) -> Any:
    currency = _currency(p, allow_any=True)
    kind = p.choice("kind", KINDS)
    otype = p.choice("type", OPEN_ORDER_TYPES, "all")
    orders = st.engine.open_orders(
        _account(s), currency=None if currency == "ANY" else currency, kind=kind,
        order_type=otype,
    )
    return _cancel_result(st, s, p, orders)


@method("private/cancel_all_by_kind_or_type", private=True, matching=True)
def private_cancel_all_by_kind_or_type(st: State, s: Session, p: Params) -> Any:
    return private_cancel_all_by_currency(st, s, p)


@method("private/cancel_by_label", private=True, matching=True)
def private_cancel_by_label(st: State, s: Session, p: Params) -> Any:
    account = _account(s)
    label = p.req_str("label")
    currency = _currency(p) if p.has("currency") else None
    orders = [
        o for o in st.engine.orders_by_label(account, label)
        if o.is_open and currency in (None, o.inst.currency)
    ]
    return st.engine.cancel_many(account, orders)


@method("private/get_order_state", private=True)
def private_get_order_state(st: State, s: Session, p: Params) -> Any:
    return st.engine.order_of(_account(s), p.req_str("order_id")).to_dict()


@method("private/get_order_state_by_label", private=True)
def private_get_order_state_by_label(st: State, s: Session, p: Params) -> Any:
    currency = _currency(p)
    label = p.text("label")
    account = _account(s)
    if label is None:
        return []
    return [
        o.to_dict() for o in st.engine.orders_by_label(account, label)
        if o.inst.currency == currency
    ]


@method("private/get_open_orders", private=True)
def private_get_open_orders(st: State, s: Session, p: Params) -> Any:
    kind = p.choice("kind", KINDS)
    otype = p.choice("type", OPEN_ORDER_TYPES, "all")
    return [o.to_dict() for o in st.engine.open_orders(_account(s), kind=kind, order_type=otype)]


@method("private/get_open_orders_by_instrument", private=True)
def private_get_open_orders_by_instrument(st: State, s: Session, p: Params) -> Any:
    inst = st.engine.instrument(p.req_str("instrument_name"))
    otype = p.choice("type", OPEN_ORDER_TYPES, "all")
    orders = st.engine.open_orders(_account(s), instrument=inst.name, order_type=otype)
    return [o.to_dict() for o in orders]


@method("private/get_open_orders_by_currency", private=True)
def private_get_open_orders_by_currency(st: State, s: Session, p: Params) -> Any:
    currency = _currency(p)
    kind = p.choice("kind", KINDS)
    otype = p.choice("type", OPEN_ORDER_TYPES, "all")
    orders = st.engine.open_orders(_account(s), currency=currency, kind=kind, order_type=otype)
    return [o.to_dict() for o in orders]


@method("private/get_open_orders_by_label", private=True)
def private_get_open_orders_by_label(st: State, s: Session, p: Params) -> Any:
    currency = _currency(p)
    label = p.text("label")
    orders = st.engine.open_orders(_account(s), currency=currency, label=label)
    return [o.to_dict() for o in orders]


@method("private/get_user_trades_by_order", private=True)
def private_get_user_trades_by_order(st: State, s: Session, p: Params) -> Any:
    order = st.engine.order_of(_account(s), p.req_str("order_id"))
    trades = list(st.engine.trades_by_order.get(order.order_id, ()))
    if p.choice("sorting", ("asc", "desc", "default"), "default") == "desc":
        trades.reverse()
    return trades


def _trade_number(p: Params, name: str) -> int | None:
    """A trade id param as the number it carries (``"BTC-15"`` or ``15``)."""
    raw = p.raw.get(name)
    if raw is None:
        return None
    tail = str(raw).rsplit("-", 1)[-1]
    if isinstance(raw, bool) or not tail.isdigit():
        raise invalid_param(name, "invalid trade id")
    return int(tail)


def _trades_page(
    p: Params, trades: Iterable[dict[str, Any]], first: str, last: str, seq_name: str = "seq"
) -> dict[str, Any]:
    """Deribit's trade listing: filtered by time and by sequence (``first``/``last`` params),
    ``count`` of them (the earliest ones when a start is given, else the latest), in
    ``sorting`` order (default: as selected), and whether more matched."""
    count = max(1, min(p.integer("count", 10) or 10, 1000))
    start_ts, end_ts = p.integer("start_timestamp"), p.integer("end_timestamp")
    if seq_name == "id":
        lo, hi = _trade_number(p, first), _trade_number(p, last)
    else:
        lo, hi = p.integer(first), p.integer(last)
    sorting = p.choice("sorting", ("asc", "desc", "default"), "default")
    selected = [
        t for t in trades
        if (start_ts is None or t["timestamp"] >= start_ts)
        and (end_ts is None or t["timestamp"] <= end_ts)
        and (lo is None or t["trade_seq"] >= lo)
        and (hi is None or t["trade_seq"] <= hi)
    ]
    forward = start_ts is not None or lo is not None
    page = selected[:count] if forward else selected[-count:]
    if sorting == "desc" or (sorting == "default" and not forward):
        page.reverse()
    return {"trades": page, "has_more": len(selected) > count}


def _account_trades(st: State, s: Session) -> Iterable[dict[str, Any]]:
    return st.engine.trades_by_account.get(_account(s).account_id, ())


@method("private/get_user_trades_by_instrument", private=True)
def private_get_user_trades_by_instrument(st: State, s: Session, p: Params) -> Any:
    inst = st.engine.instrument(p.req_str("instrument_name"))
    trades = (t for t in _account_trades(st, s) if t["instrument_name"] == inst.name)
    return _trades_page(p, trades, "start_seq", "end_seq")


@method("private/get_user_trades_by_instrument_and_time", private=True)
def private_get_user_trades_by_instrument_and_time(st: State, s: Session, p: Params) -> Any:
    p.integer("start_timestamp", required=True)
    p.integer("end_timestamp", required=True)
    return private_get_user_trades_by_instrument(st, s, p)


def _currency_trades(st: State, s: Session, p: Params) -> Iterable[dict[str, Any]]:
    currency = _currency(p)
    kind = p.choice("kind", KINDS)
    instruments = st.engine.instruments
    for t in _account_trades(st, s):
        inst = instruments.get(t["instrument_name"])
        if inst is not None and inst.currency == currency and kind in (None, "any", inst.kind):
            yield t


@method("private/get_user_trades_by_currency", private=True)
def private_get_user_trades_by_currency(st: State, s: Session, p: Params) -> Any:
    return _trades_page(p, list(_currency_trades(st, s, p)), "start_id", "end_id", "id")


@method("private/get_user_trades_by_currency_and_time", private=True)
def private_get_user_trades_by_currency_and_time(st: State, s: Session, p: Params) -> Any:
    p.integer("start_timestamp", required=True)
    p.integer("end_timestamp", required=True)
    return _trades_page(p, list(_currency_trades(st, s, p)), "start_id", "end_id", "id")


@method("public/get_last_trades_by_instrument")
def public_get_last_trades_by_instrument(st: State, s: Session, p: Params) -> Any:
    inst = st.engine.instrument(p.req_str("instrument_name"))
    return _trades_page(p, st.engine.public_trades[inst.name], "start_seq", "end_seq")


@method("public/get_last_trades_by_instrument_and_time")
def public_get_last_trades_by_instrument_and_time(st: State, s: Session, p: Params) -> Any:
    _time_range(p)
    return public_get_last_trades_by_instrument(st, s, p)


def _order_history(st: State, s: Session, p: Params, **where: Any) -> Any:
    """Closed orders, newest first. With ``with_continuation`` the answer is
    ``{"orders", "continuation"}``: pass the token back as ``continuation`` for the next
    page (it is null on the last one)."""
    count = max(1, min(p.integer("count", 20) or 20, 1000))
    offset = max(0, p.integer("offset", 0) or 0)
    paged = p.flag("with_continuation")
    token = p.text("continuation")
    if token is not None:
        if not token.isdigit():
            raise invalid_param("continuation", "invalid continuation token")
        offset = int(token)
    orders = st.engine.order_history(
        _account(s), include_unfilled=p.flag("include_unfilled"),
        count=count + 1 if paged else count, offset=offset, **where,
    )
    page = [o.to_dict() for o in orders[:count]]
    if not paged:
        return page
    return {"orders": page, "continuation": str(offset + count) if len(orders) > count else None}


@method("private/get_order_history_by_currency", private=True)
def private_get_order_history_by_currency(st: State, s: Session, p: Params) -> Any:
    return _order_history(st, s, p, currency=_currency(p), kind=p.choice("kind", KINDS))


@method("private/get_order_history_by_instrument", private=True)
def private_get_order_history_by_instrument(st: State, s: Session, p: Params) -> Any:
    inst = st.engine.instrument(p.req_str("instrument_name"))
    return _order_history(st, s, p, instrument=inst.name)


# ---- positions and account -------------------------------------------------------------------


def _position_dict(st: State, pos: Any) -> dict[str, Any]:
    inst = pos.inst
    return pos.to_dict(st.engine.mark(inst), st.engine.index(inst.base))


@method("private/get_position", private=True)
def private_get_position(st: State, s: Session, p: Params) -> Any:
    inst = st.engine.instrument(p.req_str("instrument_name"))
    return _position_dict(st, _account(s).position(inst))


@method("private/get_positions", private=True)
def private_get_positions(st: State, s: Session, p: Params) -> Any:
    currency = _currency(p, allow_any=True) if p.has("currency") else "ANY"
    kind = p.choice("kind", KINDS)
    return [
        _position_dict(st, pos)
        for pos in _account(s).positions.values()
        if pos.size != 0.0
        and currency in ("ANY", pos.inst.currency)
        and kind in (None, "any", pos.inst.kind)
    ]


@method("private/get_margins", private=True)
def private_get_margins(st: State, s: Session, p: Params) -> Any:
    inst = st.engine.instrument(p.req_str("instrument_name"))
    amount = check_amount(inst, p.num("amount", required=True) or 0.0)
    price = p.num("price", required=True) or 0.0
    if not price > 0:
        raise RpcError(errors.INVALID_PRICE, {"reason": "price must be positive", "param": "price"})
    lo, hi = st.engine.band(inst)
    return {
        "buy": initial_margin(inst, True, amount, price),
        "sell": initial_margin(inst, False, amount, price),
        "min_price": to_price(lo, inst),
        "max_price": to_price(hi, inst),
    }


@method("private/get_account_summary", private=True)
def private_get_account_summary(st: State, s: Session, p: Params) -> Any:
    currency = _currency(p)
    return _account(s).summary(currency, st.engine.mark, st.engine.instruments)


@method("private/get_account_summaries", private=True)
def private_get_account_summaries(st: State, s: Session, p: Params) -> Any:
    account = _account(s)
    return {
        "id": account.user_id,
        "username": account.account_id,
        "system_name": account.account_id,
        "email": f"{account.account_id}@paper.invalid",
        "type": "main",
        "security_keys_enabled": False,
        "summaries": [
            account.summary(c, st.engine.mark, st.engine.instruments) for c in CURRENCIES
        ],
    }


@method("private/enable_cancel_on_disconnect", private=True, ws_only=True)
def private_enable_cancel_on_disconnect(st: State, s: Session, p: Params) -> Any:
    s.cancel_on_disconnect = p.choice("scope", ("connection", "account"), "connection")
    return "ok"


@method("private/disable_cancel_on_disconnect", private=True, ws_only=True)
def private_disable_cancel_on_disconnect(st: State, s: Session, p: Params) -> Any:
    s.cancel_on_disconnect = None
    return "ok"


@method("private/get_cancel_on_disconnect", private=True)
def private_get_cancel_on_disconnect(st: State, s: Session, p: Params) -> Any:
    return {
        "scope": s.cancel_on_disconnect or "connection",
        "enabled": s.cancel_on_disconnect is not None,
    }


@method("private/logout", private=True, ws_only=True)
def private_logout(st: State, s: Session, p: Params) -> Any:
    st.hub.drop(s)
    s.account = None
    s.close_soon()
    return "ok"


# ---- admin (not Deribit) ---------------------------------------------------------------------


def _admin_account(st: State, s: Session, p: Params) -> Account:
    """The session's account, or the one named by ``account_id`` / ``client_id``."""
    if p.has("account_id"):
        account = st.accounts.by_id.get(p.req_str("account_id"))
    elif p.has("client_id"):
        account = st.accounts.by_client_id.get(p.req_str("client_id"))
    else:
        account = s.account
    if account is None:
        raise invalid_param("account_id", "unknown account")
    return account


@method("admin/set_faults", admin=True)
def admin_set_faults(st: State, s: Session, p: Params) -> Any:
    st.faults.update(p.raw)
    return st.faults.to_dict()


@method("admin/get_faults", admin=True)
def admin_get_faults(st: State, s: Session, p: Params) -> Any:
    return st.faults.to_dict()


@method("admin/get_stats", admin=True)
def admin_get_stats(st: State, s: Session, p: Params) -> Any:
    engine = st.engine
    return {
        **engine.counters,
        "orders_by_label": engine.label_counts() if p.flag("include_labels", True) else {},
        "duplicate_labels": dict(engine.duplicate_labels),
        "faults_fired": dict(st.faults.fired),
        "methods": dict(st.method_counts),
        "connections": sum(1 for x in st.sessions if x.ws is not None and not x.closed),
        "notifications": st.hub.notifications,
        "accounts": sorted(st.accounts.by_id),
        "market_steps": engine.market.steps,
        "open_orders": sum(len(a.open_orders) for a in st.accounts.by_id.values()),
        "uptime_s": time.monotonic() - st.started,
        "journal": st.journal.stats() if st.journal is not None else None,
    }


@method("admin/get_orders_by_label", admin=True)
def admin_get_orders_by_label(st: State, s: Session, p: Params) -> Any:
    label = p.req_str("label")
    return [
        o.to_dict() for (acc, lab), orders in st.engine.by_label.items() if lab == label
        for o in orders
    ]


@method("admin/set_position", admin=True)
def admin_set_position(st: State, s: Session, p: Params) -> Any:
    account = _admin_account(st, s, p)
    inst = st.engine.instrument(p.req_str("instrument_name"))
    size = p.num("size", required=True)
    assert size is not None
    pos = st.engine.set_position(account, inst, size, p.num("average_price"))
    return _position_dict(st, pos)


@method("admin/set_balance", admin=True)
def admin_set_balance(st: State, s: Session, p: Params) -> Any:
    account = _admin_account(st, s, p)
    currency = _currency(p)
    amount = p.num("balance", required=True)
    assert amount is not None
    st.engine.set_balance(account, currency, amount)
    return account.summary(currency, st.engine.mark, st.engine.instruments)


@method("admin/pause_market", admin=True)
def admin_pause_market(st: State, s: Session, p: Params) -> Any:
    st.market_paused = p.flag("paused", True)
    return {"paused": st.market_paused, "steps": st.engine.market.steps}


@method("admin/step_market", admin=True)
def admin_step_market(st: State, s: Session, p: Params) -> Any:
    for _ in range(max(1, p.integer("steps", 1) or 1)):
        st.engine.step_market()
    return {"steps": st.engine.market.steps, "index": dict(st.engine.market.index)}
