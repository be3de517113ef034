"""Matching engine, validation and position math of the paper exchange (no sockets).

The engine is built without market-maker quotes so every book starts empty and the tests
control exactly what rests where.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time

import pytest

from oms.exchange.paper import errors
from oms.exchange.paper.accounts import Account, AccountStore
from oms.exchange.paper.engine import Engine, OrderRequest
from oms.exchange.paper.errors import RpcError
from oms.exchange.paper.instruments import default_instruments
from oms.exchange.paper.market import SyntheticMarket
from oms.exchange.paper.positions import Position

PERP = "BTC-PERPETUAL"


@pytest.fixture
def engine() -> Engine:
    insts = default_instruments(int(time.time() * 1000))
    market = SyntheticMarket(insts, seed=1)
    accounts = AccountStore({"BTC": 100.0, "ETH": 1000.0, "USDC": 0.0}, 4, auto_create=True)
    for name in ("a", "b", "c"):
        accounts.add(name, name, "secret")
    return Engine(insts, market, accounts)


def acc(engine: Engine, name: str) -> Account:
    return engine.accounts.by_id[name]


def place(
    engine: Engine,
    who: str,
    side: str,
    amount: float,
    price: float | None = None,
    instrument: str = PERP,
    **kw: object,
):
    req = OrderRequest(instrument_name=instrument, amount=amount, price=price, **kw)  # type: ignore[arg-type]
    return engine.place(acc(engine, who), side == "buy", req)


def mark_at(engine: Engine, price: float, instrument: str = PERP) -> None:
    """Pin the index and mark so price bands are predictable."""
    inst = engine.instruments[instrument]
    engine.market.index[inst.base] = price
    engine.market.marks[instrument] = price


def test_price_time_priority(engine: Engine) -> None:
    mark_at(engine, 95_000)
    first, _ = place(engine, "a", "sell", 100, 95_000)
    second, _ = place(engine, "b", "sell", 100, 95_000)
    better, _ = place(engine, "c", "sell", 100, 94_999.5)
    taker, trades = place(engine, "a", "buy", 250, 95_000)
    assert [t["price"] for t in trades] == [94_999.5, 95_000, 95_000]
    assert [t["amount"] for t in trades] == [100, 100, 50]
    assert better.state == "filled" and first.state == "filled"
    assert second.state == "open" and second.filled == 50
    assert taker.state == "filled" and taker.average_price == pytest.approx(
        (94_999.5 * 100 + 95_000 * 150) / 250
    )
    assert all(t["liquidity"] == "T" for t in trades)


def test_partial_fill_rests_remainder(engine: Engine) -> None:
    mark_at(engine, 95_000)
    place(engine, "a", "sell", 30, 95_000)
    order, trades = place(engine, "b", "buy", 100, 95_000)
    assert order.state == "open" and order.filled == 30 and order.remaining == 70
    assert trades[0]["state"] == "open"
    assert order.order_id in acc(engine, "b").open_orders
    best = next(engine.books[PERP].bids.depth(1))
    assert best == (190_000, 70)


def test_post_only_reprices_inside_the_spread(engine: Engine) -> None:
    mark_at(engine, 95_000)
    place(engine, "a", "sell", 100, 95_000)
    order, trades = place(engine, "b", "buy", 100, 95_010, post_only=True)
    assert trades == []
    assert order.price == 94_999.5 and order.state == "open"


def test_post_only_reject(engine: Engine) -> None:
    mark_at(engine, 95_000)
    place(engine, "a", "sell", 100, 95_000)
    with pytest.raises(RpcError) as exc:
        place(engine, "b", "buy", 100, 95_000, post_only=True, reject_post_only=True)
    assert exc.value.code == errors.POST_ONLY_REJECT == 11054
    assert exc.value.message == "post_only_reject"


def test_reduce_only(engine: Engine) -> None:
    mark_at(engine, 95_000)
    with pytest.raises(RpcError) as exc:
        place(engine, "a", "sell", 100, 95_000, reduce_only=True)
    assert exc.value.code == errors.OTHER_REJECT
    place(engine, "b", "sell", 100, 95_000)
    place(engine, "a", "buy", 100, 95_000)
    order, _ = place(engine, "a", "sell", 300, 96_000, reduce_only=True)
    assert order.amount == 100  # trimmed to the position
    assert order.reserved == 0.0


def test_resting_reduce_only_follows_the_position(engine: Engine) -> None:
    mark_at(engine, 95_000)
    place(engine, "b", "sell", 300, 95_000)
    place(engine, "a", "buy", 300, 95_000)
    close, _ = place(engine, "a", "sell", 300, 96_000, reduce_only=True)
    place(engine, "c", "buy", 100, 94_000)
    place(engine, "a", "sell", 100, 94_000)  # position 300 -> 200
    assert close.state == "open" and close.amount == 200
    place(engine, "c", "buy", 200, 94_000)
    place(engine, "a", "sell", 200, 94_000)  # flat
    assert close.state == "cancelled"
    assert not acc(engine, "a").reduce_only


def test_immediate_or_cancel(engine: Engine) -> None:
    mark_at(engine, 95_000)
    place(engine, "a", "sell", 40, 95_000)
    order, trades = place(engine, "b", "buy", 100, 95_000, time_in_force="immediate_or_cancel")
    assert order.state == "cancelled" and order.filled == 40 and len(trades) == 1
    assert not engine.books[PERP].bids.keys


def test_fill_or_kill(engine: Engine) -> None:
    mark_at(engine, 95_000)
    place(engine, "a", "sell", 40, 95_000)
    killed, trades = place(engine, "b", "buy", 100, 95_000, time_in_force="fill_or_kill")
    assert killed.state == "cancelled" and killed.filled == 0 and trades == []
    place(engine, "a", "sell", 60, 95_000)
    done, trades = place(engine, "b", "buy", 100, 95_000, time_in_force="fill_or_kill")
    assert done.state == "filled" and sum(t["amount"] for t in trades) == 100


def test_market_order_takes_liquidity_and_cancels_rest(engine: Engine) -> None:
    mark_at(engine, 95_000)
    place(engine, "a", "sell", 50, 95_100)
    order, trades = place(engine, "b", "buy", 100, None, type="market")
    assert order.filled == 50 and order.state == "cancelled"
    assert trades[0]["price"] == 95_100


def test_edit_keeps_or_loses_priority(engine: Engine) -> None:
    mark_at(engine, 95_000)
    a, _ = place(engine, "a", "buy", 100, 94_000)
    b, _ = place(engine, "b", "buy", 100, 94_000)
    engine.edit(acc(engine, "a"), a, 50, None, None, None, None, None, None)
    level = engine.books[PERP].bids.best_level()
    assert level is not None and list(level) == [a, b]  # a smaller amount keeps its place
    engine.edit(acc(engine, "a"), a, 200, None, None, None, None, None, None)
    level = engine.books[PERP].bids.best_level()
    assert level is not None and list(level) == [b, a]  # a larger amount re-queues
    assert a.replaced


def test_edit_price_can_trade(engine: Engine) -> None:
    mark_at(engine, 95_000)
    place(engine, "a", "sell", 100, 95_000)
    bid, _ = place(engine, "b", "buy", 100, 94_000)
    order, trades = engine.edit(acc(engine, "b"), bid, None, None, 95_000, None, None, None, None)
    assert order.state == "filled" and len(trades) == 1


def test_edit_errors(engine: Engine) -> None:
    mark_at(engine, 95_000)
    place(engine, "a", "sell", 50, 95_000)
    bid, _ = place(engine, "b", "buy", 100, 95_000)
    with pytest.raises(RpcError) as exc:
        engine.edit(acc(engine, "b"), bid, 40, None, None, None, None, None, None)
    assert exc.value.code == errors.INVALID_PARAMS and exc.value.data["param"] == "amount"
    engine.cancel(acc(engine, "b"), bid)
    with pytest.raises(RpcError) as exc:
        engine.edit(acc(engine, "b"), bid, 100, None, None, None, None, None, None)
    assert exc.value.code == errors.NOT_OPEN_ORDER == 11044


def test_cancel(engine: Engine) -> None:
    mark_at(engine, 95_000)
    order, _ = place(engine, "a", "buy", 100, 94_000)
    assert acc(engine, "a").margin_buy[PERP] > 0
    engine.cancel(acc(engine, "a"), order)
    assert order.state == "cancelled" and order.cancel_reason == "user_request"
    assert not engine.books[PERP].bids.keys
    assert acc(engine, "a").margin_buy[PERP] == pytest.approx(0.0)
    with pytest.raises(RpcError) as exc:
        engine.cancel(acc(engine, "a"), order)
    assert exc.value.code == errors.NOT_OPEN_ORDER
    with pytest.raises(RpcError) as exc:
        engine.order_of(acc(engine, "b"), order.order_id)  # someone else's order
    assert exc.value.code == errors.ORDER_NOT_FOUND == 10004


@pytest.mark.parametrize(
    ("instrument", "amount", "price", "code"),
    [
        (PERP, 100, 95_000.3, errors.PRICE_WRONG_TICK),
        (PERP, 15, 95_000, errors.INVALID_PARAMS),
        (PERP, 0, 95_000, errors.INVALID_AMOUNT),
        (PERP, 100, 200_000, errors.PRICE_TOO_HIGH),
        ("ETH-PERPETUAL", 1.5, 3_500, errors.INVALID_PARAMS),
        ("ETH-PERPETUAL", 1, 3_500.01, errors.PRICE_WRONG_TICK),
        ("NOPE-PERPETUAL", 10, 1, errors.INVALID_PARAMS),
    ],
)
def test_validation_errors(
    engine: Engine, instrument: str, amount: float, price: float, code: int
) -> None:
    mark_at(engine, 95_000)
    mark_at(engine, 3_500, "ETH-PERPETUAL")
    with pytest.raises(RpcError) as exc:
        place(engine, "a", "buy", amount, price, instrument=instrument)
    assert exc.value.code == code


def test_option_amount_and_tick(engine: Engine) -> None:
    option = next(i for i in engine.instruments.values() if i.is_option)
    with pytest.raises(RpcError) as exc:
        place(engine, "a", "buy", 0.15, 0.01, instrument=option.name)
    assert exc.value.code == errors.INVALID_PARAMS
    with pytest.raises(RpcError) as exc:
        place(engine, "a", "buy", 0.1, 0.0102, instrument=option.name)
    assert exc.value.code == errors.PRICE_WRONG_TICK
    order, _ = place(engine, "a", "buy", 0.3, 0.0005, instrument=option.name)
    assert order.state == "open"


def test_label_too_long(engine: Engine) -> None:
    mark_at(engine, 95_000)
    with pytest.raises(RpcError) as exc:
        place(engine, "a", "buy", 10, 90_000, label="x" * 65)
    assert exc.value.data["param"] == "label"
    order, _ = place(engine, "a", "buy", 10, 90_000, label="x" * 64)
    assert engine.orders_by_label(acc(engine, "a"), "x" * 64) == [order]


def test_not_enough_funds(engine: Engine) -> None:
    mark_at(engine, 95_000)
    acc(engine, "a").balances["BTC"] = 0.001
    with pytest.raises(RpcError) as exc:
        place(engine, "a", "buy", 100_000, 94_000)
    assert exc.value.code == errors.NOT_ENOUGH_FUNDS == 10009


def test_inverse_position_math() -> None:
    inst = next(i for i in default_instruments(int(time.time() * 1000)) if i.name == PERP)
    pos = Position(inst)
    assert pos.apply_fill(True, 1000, 50_000) == 0
    pos.apply_fill(True, 1000, 60_000)
    avg = 2000 / (1000 / 50_000 + 1000 / 60_000)
    assert pos.size == 2000 and pos.avg == pytest.approx(avg)
    assert pos.floating(60_000) == pytest.approx(2000 * (1 / avg - 1 / 60_000))
    assert pos.size_currency(60_000) == pytest.approx(2000 / 60_000)
    realized = pos.apply_fill(False, 1000, 60_000)
    assert realized == pytest.approx(1000 * (1 / avg - 1 / 60_000))
    assert pos.size == 1000 and pos.avg == pytest.approx(avg)
    # Flip long -> short: 1000 closes, 2000 opens a short at the fill price.
    realized = pos.apply_fill(False, 3000, 40_000)
    assert realized == pytest.approx(1000 * (1 / avg - 1 / 40_000))  # a loss
    assert realized < 0
    assert pos.size == -2000 and pos.avg == 40_000
    # A short gains when the price falls.
    assert pos.floating(35_000) == pytest.approx(-2000 * (1 / 40_000 - 1 / 35_000))
    assert pos.floating(35_000) > 0
    pos.apply_fill(True, 2000, 35_000)
    assert pos.size == 0 and pos.avg == 0
    assert pos.to_dict(35_000, 35_000)["direction"] == "zero"


def test_fills_update_balances_and_positions(engine: Engine) -> None:
    mark_at(engine, 50_000)
    place(engine, "a", "sell", 1000, 50_000)
    _, trades = place(engine, "b", "buy", 1000, 50_000)
    fee = 1000 / 50_000 * 0.0005
    assert trades[0]["fee"] == pytest.approx(fee)
    assert acc(engine, "b").balances["BTC"] == pytest.approx(100 - fee)
    assert acc(engine, "a").balances["BTC"] == pytest.approx(100.0)  # maker fee 0
    assert acc(engine, "b").positions[PERP].size == 1000
    assert acc(engine, "a").positions[PERP].size == -1000
    mark_at(engine, 40_000)
    place(engine, "a", "buy", 1000, 40_000)
    place(engine, "b", "sell", 1000, 40_000)
    pnl = 1000 * (1 / 50_000 - 1 / 40_000)
    b = acc(engine, "b")
    assert b.positions[PERP].realized == pytest.approx(pnl)
    assert b.balances["BTC"] == pytest.approx(100 - fee + pnl - 1000 / 40_000 * 0.0005)
    summary = b.summary("BTC", engine.mark, engine.instruments)
    assert summary["equity"] == pytest.approx(b.balances["BTC"])
    assert summary["initial_margin"] == pytest.approx(0.0)


def test_option_premium_moves_cash(engine: Engine) -> None:
    option = next(i for i in engine.instruments.values() if i.is_option)
    place(engine, "a", "sell", 1, 0.05, instrument=option.name)
    place(engine, "b", "buy", 1, 0.05, instrument=option.name)
    fee = min(0.0003 * 1, 0.125 * 0.05)
    assert acc(engine, "b").balances["BTC"] == pytest.approx(100 - 0.05 - fee)
    assert acc(engine, "a").balances["BTC"] == pytest.approx(100 + 0.05 - fee)
    assert acc(engine, "a").positions[option.name].size == -1
    short = acc(engine, "a").summary("BTC", engine.mark, engine.instruments)
    assert short["maintenance_margin"] > 0


def test_stop_market_triggers_on_mark(engine: Engine) -> None:
    mark_at(engine, 95_000)
    place(engine, "a", "sell", 100, 96_000)
    stop, trades = place(
        engine,
        "b",
        "buy",
        100,
        None,
        type="stop_market",
        trigger_price=95_500,
        trigger="mark_price",
    )
    assert stop.state == "untriggered" and trades == []
    assert stop.to_dict()["price"] == "market_price"
    engine._check_triggers(engine.instruments[PERP])
    assert stop.state == "untriggered"
    mark_at(engine, 95_600)
    engine._check_triggers(engine.instruments[PERP])
    assert stop.state == "filled" and stop.triggered and stop.average_price == 96_000


def test_market_maker_quotes_trade_against_resting_orders(engine: Engine) -> None:
    mark_at(engine, 95_000)
    bid, _ = place(engine, "a", "buy", 100, 96_500)  # far above where the market will quote
    engine.step_market()
    assert bid.state == "filled"
    trades = engine.trades_by_order[bid.order_id]
    assert all(t["liquidity"] == "M" for t in trades)
    assert engine.books[PERP].bids.keys and engine.books[PERP].asks.keys


def test_market_is_deterministic_under_seed() -> None:
    insts = default_instruments(int(time.time() * 1000))
    one, two, other = (SyntheticMarket(insts, seed=s) for s in (42, 42, 43))
    for _ in range(50):
        one.step(0)
        two.step(0)
        other.step(0)
    assert one.index == two.index and one.index != other.index
    assert one.quotes(insts[0]) == two.quotes(insts[0])


def test_good_til_day_orders_expire(engine: Engine) -> None:
    mark_at(engine, 95_000)
    day, _ = place(engine, "a", "buy", 10, 90_000, time_in_force="good_til_day")
    gtc, _ = place(engine, "a", "buy", 10, 90_000)
    assert engine.expire_day_orders() == 1
    assert day.state == "cancelled" and gtc.state == "open"


def test_day_end_is_next_0800_utc() -> None:
    from oms.exchange.paper.engine import next_day_end

    eight = 1_767_254_400_000  # 2026-01-01 08:00 UTC
    assert next_day_end(eight - 1) == eight
    assert next_day_end(eight) == eight + 86_400_000


def test_perpetual_funding_follows_the_premium(engine: Engine) -> None:
    inst = engine.instruments[PERP]
    mark_at(engine, 95_000)
    assert engine.funding_8h(inst) == 0.0
    engine.market.marks[PERP] = 95_000 * 1.001  # 0.1% over the index: damper 0.025% off
    assert engine.funding_8h(inst) == pytest.approx(0.00075)
    engine.market.marks[PERP] = 95_000 * 0.9998  # inside the damper: no funding
    assert engine.funding_8h(inst) == pytest.approx(0.0)
    assert engine.ticker(inst)["funding_8h"] == engine.funding_8h(inst)


def test_historical_volatility_of_the_index_minute_returns(engine: Engine) -> None:
    hour = 3_600_000
    start = (int(time.time() * 1000) // hour - 2) * hour  # two whole hours ago
    prices = [95_000 * (1.001 if i % 2 else 0.999) ** (i % 5) for i in range(120)]
    for i, price in enumerate(prices):
        engine.candles.price("btc_usd", start + i * 60_000, price)
    points = engine.historical_volatility("BTC", start + 120 * 60_000)
    assert [p["timestamp"] for p in points] == [start, start + hour]
    returns = [math.log(b / a) for a, b in itertools.pairwise(prices)]
    per_year = math.sqrt(365 * 1440) * 100
    assert points[0]["value"] == pytest.approx(statistics.stdev(returns[:59]) * per_year)
    assert points[1]["value"] == pytest.approx(statistics.stdev(returns) * per_year)
