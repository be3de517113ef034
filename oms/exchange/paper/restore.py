"""Durable records of the paper exchange's objects, and rebuilding the exchange from them.

Rows of the store (``kind``, ``key`` -> JSON):

========== ============================ ==================================================
kind       key                          value
========== ============================ ==================================================
account    account id                   credentials, tier, user id, balances
order      order id                     every field of :class:`Order` but its session
trade      ``trade_id/order_id``        ``{"account", "trade"}`` (one side of a fill)
position   ``account/instrument``       ``{"account", "instrument", size, avg, realized}``
label      label                        how many orders use it (labels used more than once)
meta       ``engine``                   id numbers, priority counter, counters, day end
meta       ``market``                   index prices, random state, ticker statistics
meta       ``catalogue``                the time the instrument catalogue was built for
========== ============================ ==================================================

Orders keep their ids, prices, fills and time priority; their ``session_id`` is not kept,
so cancel-on-disconnect of a connection made after a restart never touches them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from oms.exchange.paper.accounts import Account
from oms.exchange.paper.engine import Engine, InstrumentStats
from oms.exchange.paper.instruments import Instrument
from oms.exchange.paper.orders import Order
from oms.exchange.paper.positions import Position

ORDER_FIELDS = (
    "order_id", "account", "is_buy", "price", "amount", "order_type", "time_in_force",
    "label", "post_only", "reject_post_only", "reduce_only", "max_show", "filled", "notional",
    "commission", "state", "created_ms", "updated_ms", "seq", "replaced", "cancel_reason",
    "trigger", "trigger_price", "triggered", "market_price", "reserved", "trigger_offset",
    "trigger_reference_price", "trigger_fill_condition", "oto_order_ids", "is_primary_otoco",
    "is_secondary_oto", "oto_waiting", "primary_order_id", "oco_ref", "linked_amount",
)
STATS_FIELDS = tuple(InstrumentStats.__dataclass_fields__)


def order_record(order: Order) -> dict[str, Any]:
    """An order as stored (a copy: the order keeps changing after this)."""
    record = {name: getattr(order, name) for name in ORDER_FIELDS}
    record["instrument"] = order.inst.name
    return record


def order_from_record(record: dict[str, Any], instruments: dict[str, Instrument]) -> Order:
    """The order a record describes; KeyError if its instrument is unknown."""
    inst = instruments[record["instrument"]]
    fields = {name: record[name] for name in ORDER_FIELDS if name in record}
    return Order(inst=inst, **fields)


def trade_key(trade: dict[str, Any]) -> str:
    """Both sides of a fill share the trade id; the order id tells them apart."""
    return f"{trade['trade_id']}/{trade['order_id']}"


def position_record(account_id: str, position: Position) -> dict[str, Any]:
    return {
        "account": account_id,
        "instrument": position.inst.name,
        "size": position.size,
        "avg": position.avg,
        "realized": position.realized,
    }


def account_record(account: Account) -> dict[str, Any]:
    return {
        "client_id": account.client_id,
        "client_secret": account.client_secret,
        "tier": account.tier,
        "user_id": account.user_id,
        "balances": dict(account.balances),
        # Running sums of what open orders hold: stored as they are (not re-added on
        # restore) so every figure derived from them is the same to the last bit.
        "margin_buy": dict(account.margin_buy),
        "margin_sell": dict(account.margin_sell),
    }


def engine_record(engine: Engine) -> dict[str, Any]:
    """Id numbers, counters and the next good_til_day expiry (small: written every batch)."""
    last_order, last_trade = engine.last_ids()
    return {
        "last_order": last_order,
        "last_trade": last_trade,
        "time_seq": engine.time_seq,
        "counters": dict(engine.counters),
        "day_end_ms": engine.day_end_ms,
        "saved_ms": time.time_ns() // 1_000_000,
    }


def market_record(engine: Engine) -> dict[str, Any]:
    """The synthetic market and the ticker statistics, as of now."""
    record = engine.market.state()
    record["stats"] = {
        name: {f: getattr(st, f) for f in STATS_FIELDS} for name, st in engine.stats.items()
    }
    record["saved_ms"] = time.time_ns() // 1_000_000
    return record


@dataclass
class Restored:
    """What was taken back, and stored rows that are no longer needed."""

    summary: dict[str, Any] = field(default_factory=dict)
    gone_orders: list[str] = field(default_factory=list)
    gone_trades: list[dict[str, Any]] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)


def restore(
    engine: Engine, rows: dict[str, dict[str, Any]], last_ids: tuple[int, int]
) -> Restored:
    """Rebuild ``engine`` (fresh, without a recorder) from stored rows. Records that cannot
    be used (an unknown instrument or account, a malformed record) are counted in
    ``dropped`` and left out; ids continue above ``last_ids`` regardless."""
    out = Restored()
    dropped = out.dropped

    def drop(what: str) -> None:
        dropped[what] = dropped.get(what, 0) + 1

    accounts = engine.accounts
    for account_id, rec in rows.get("account", {}).items():
        try:
            accounts.add(
                account_id,
                str(rec["client_id"]),
                str(rec["client_secret"]),
                int(rec["tier"]),
                {k: float(v) for k, v in rec["balances"].items()},
                user_id=int(rec["user_id"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            drop("accounts")

    for rec in rows.get("position", {}).values():
        try:
            account = accounts.by_id[rec["account"]]
            pos = account.position(engine.instruments[rec["instrument"]])
            pos.size, pos.avg = float(rec["size"]), float(rec["avg"])
            pos.realized = float(rec["realized"])
        except (KeyError, TypeError, ValueError):
            drop("positions")

    orders = []
    for rec in rows.get("order", {}).values():
        try:
            order = order_from_record(rec, engine.instruments)
            number = order.order_id.rsplit("-", 1)[-1]
            usable = order.account in accounts.by_id and number.isdigit()
        except (KeyError, TypeError, ValueError, AttributeError):
            usable = False
        if not usable:
            drop("orders")
            continue
        orders.append(order)
    out.gone_orders = engine.restore_orders(orders)
    for account_id, rec in rows.get("account", {}).items():
        held = accounts.by_id.get(account_id)
        if held is not None and "margin_buy" in rec and "margin_sell" in rec:
            held.margin_buy = {k: float(v) for k, v in rec["margin_buy"].items()}
            held.margin_sell = {k: float(v) for k, v in rec["margin_sell"].items()}

    trades = []
    for rec in rows.get("trade", {}).values():
        try:
            account_id, trade = rec["account"], rec["trade"]
            usable = (
                account_id in accounts.by_id
                and isinstance(trade["trade_seq"], int)
                and isinstance(trade["order_id"], str)
                and trade["liquidity"] in ("M", "T")
            )
        except (KeyError, TypeError):
            usable = False
        if not usable:
            drop("trades")
            continue
        trades.append((account_id, trade))
    out.gone_trades = engine.restore_trades(trades)

    for label, count in rows.get("label", {}).items():
        if isinstance(count, int):
            engine.duplicate_labels[label] = count

    meta = rows.get("meta", {})
    engine_meta = meta.get("engine") or {}
    engine.continue_ids(*last_ids)
    engine.continue_time_seq(int(engine_meta.get("time_seq", 0)))
    for name, value in (engine_meta.get("counters") or {}).items():
        if name in engine.counters and isinstance(value, int):
            engine.counters[name] = value
    if isinstance(engine_meta.get("day_end_ms"), int):
        # Missed while down? The first market tick expires good_til_day orders then.
        engine.day_end_ms = engine_meta["day_end_ms"]

    market = meta.get("market")
    market_age_s = None
    if market:
        try:
            engine.market.restore_state(market)
            for name, values in (market.get("stats") or {}).items():
                st = engine.stats.get(name)
                if st is not None:
                    for f in STATS_FIELDS:
                        if f in values:
                            setattr(st, f, values[f])
            market_age_s = round(time.time() - market["saved_ms"] / 1000, 3)
        except (KeyError, TypeError, ValueError):
            drop("market")
    # Open interest is the sum of long positions: exact from the positions, whatever the
    # age of the saved statistics.
    for st in engine.stats.values():
        st.open_interest = 0.0
    for account in accounts.by_id.values():
        for pos in account.positions.values():
            if pos.size > 0:
                engine.stats[pos.inst.name].open_interest += pos.size

    open_orders = sum(len(a.open_orders) for a in accounts.by_id.values())
    untriggered = sum(len(u) for u in engine.untriggered.values())
    out.summary = {
        "accounts": len(accounts.by_id),
        "open_orders": open_orders - untriggered,
        "untriggered_orders": untriggered,
        "closed_orders": len(engine.orders) - open_orders,
        "trades": len(trades) - len(out.gone_trades),
        "positions": sum(
            1 for a in accounts.by_id.values() for p in a.positions.values() if p.size
        ),
        "market_steps": engine.market.steps,
        "market_age_s": market_age_s,
    }
    return out
