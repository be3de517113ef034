"""A small trading scenario against the paper exchange, and the answers a client asks for
after a reconnect: shared by the in-process and the real-process restart tests."""

from __future__ import annotations

from typing import Any

from oms.exchange.paper.testing import RpcClient

PERP = "BTC-PERPETUAL"
LABELS = ("rest-b", "rest-s", "stop", "gtd", "fill", "fill-2", "gone")


def number(exchange_id: str) -> int:
    return int(exchange_id.rsplit("-", 1)[1])


async def trade_a_little(c: RpcClient) -> dict[str, Any]:
    """Resting orders on both sides, a stop, a good-til-day order, fills, an edit and a
    cancel; returns every order and trade id the client saw."""
    ticker = await c.result("public/ticker", instrument_name=PERP)
    bid, ask = ticker["best_bid_price"], ticker["best_ask_price"]
    # Resting orders stand thousands of dollars from the touch: the synthetic market keeps
    # walking (about $100 a second at a 0.05 s tick) through the restarts this scenario is
    # checked across, and a resting order it crossed would fill and change the answers.
    away = 3000
    seen: list[dict[str, Any]] = [
        await c.result("private/buy", instrument_name=PERP, amount=100, price=bid - away,
                       label="rest-b"),
        await c.result("private/sell", instrument_name=PERP, amount=50, price=ask + away,
                       label="rest-s"),
        await c.result("private/sell", instrument_name=PERP, amount=20, type="stop_market",
                       trigger="mark_price", trigger_price=bid - 3 * away, label="stop"),
        await c.result("private/buy", instrument_name=PERP, amount=30, price=bid - away - 300,
                       time_in_force="good_til_day", label="gtd"),
        await c.result("private/buy", instrument_name=PERP, amount=200, type="market",
                       label="fill"),
        await c.result("private/sell", instrument_name=PERP, amount=50, type="market",
                       label="fill-2"),
        await c.result("private/buy", instrument_name=PERP, amount=10, price=bid - away - 500,
                       label="gone"),
    ]
    rest_b = seen[0]["order"]["order_id"]
    seen.append(await c.result("private/edit", order_id=rest_b, amount=60, price=bid - away - 150))
    await c.result("private/cancel", order_id=seen[6]["order"]["order_id"])
    return {
        "orders": [r["order"]["order_id"] for r in seen],
        "trades": [t["trade_id"] for r in seen for t in r["trades"]],
    }


async def answers(c: RpcClient) -> dict[str, Any]:
    """What a client asks after a reconnect."""
    return {
        "open": await c.result("private/get_open_orders_by_currency", currency="BTC"),
        "by_label": {
            label: await c.result("private/get_order_state_by_label", currency="BTC",
                                  label=label)
            for label in LABELS
        },
        "trades": await c.result("private/get_user_trades_by_currency", currency="BTC",
                                 count=100),
        "history": await c.result("private/get_order_history_by_currency", currency="BTC",
                                  include_unfilled=True, count=100),
        "positions": await c.result("private/get_positions", currency="BTC"),
        "summary": await c.result("private/get_account_summary", currency="BTC"),
    }


def mark_free(answered: dict[str, Any]) -> dict[str, Any]:
    """``answers`` without what moves with the market (marks, floating PnL): what a restart
    must bring back exactly while the synthetic market keeps walking."""
    out = dict(answered)
    out["positions"] = [
        (p["instrument_name"], p["size"], p["average_price"], p["realized_profit_loss"])
        for p in answered["positions"]
    ]
    summary = answered["summary"]
    out["summary"] = {
        k: summary[k] for k in ("balance", "session_rpl", "futures_session_rpl", "fee_balance")
    }
    return out
