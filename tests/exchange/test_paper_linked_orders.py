"""Deribit's native order features on the paper exchange's engine: trailing stops
(``trigger_offset``), ``valid_until`` and linked orders (``linked_order_type`` with
``otoco_config``: one_triggers_other, one_cancels_other, one_triggers_one_cancels_other)
under each ``trigger_fill_condition``.

The engine runs without market-maker quotes, so the tests decide what rests where; prices
move by pinning the mark."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from oms.exchange.paper import PaperExchange, errors
from oms.exchange.paper.accounts import Account, AccountStore
from oms.exchange.paper.engine import Engine, OrderRequest
from oms.exchange.paper.errors import RpcError
from oms.exchange.paper.instruments import default_instruments
from oms.exchange.paper.market import SyntheticMarket
from oms.exchange.paper.orders import Order
from oms.exchange.paper.testing import RpcClient, RpcFailed
from oms.settings import PaperExchangeSettings

PERP = "BTC-PERPETUAL"


@pytest.fixture
def engine() -> Engine:
    insts = default_instruments(int(time.time() * 1000))
    accounts = AccountStore({"BTC": 100.0, "ETH": 1000.0, "USDC": 0.0}, 4, auto_create=True)
    for name in ("a", "b"):
        accounts.add(name, name, "secret")
    eng = Engine(insts, SyntheticMarket(insts, seed=1), accounts)
    mark_at(eng, 95_000)
    return eng


def acc(engine: Engine, name: str) -> Account:
    return engine.accounts.by_id[name]


def mark_at(engine: Engine, price: float) -> None:
    engine.market.index["BTC"] = price
    engine.market.marks[PERP] = price


def req(amount: float, price: float | None = None, **kw: Any) -> OrderRequest:
    return OrderRequest(instrument_name=PERP, amount=amount, price=price, **kw)


def place(engine: Engine, who: str, side: str, request: OrderRequest) -> Order:
    order, _ = engine.place(acc(engine, who), side == "buy", request)
    return order


def leg(side: str, amount: float, price: float | None = None, **kw: Any) -> tuple[bool, Any]:
    return side == "buy", req(amount, price, **kw)


def tick(engine: Engine, price: float) -> None:
    mark_at(engine, price)
    engine.check_triggers(engine.instruments[PERP])


def by_id(engine: Engine, order_id: str) -> Order:
    return engine.orders[order_id]


# ---- trailing stops -----------------------------------------------------------------------


def test_sell_trailing_stop_follows_the_high_then_fires(engine: Engine) -> None:
    stop = place(engine, "a", "sell", req(
        100, type="trailing_stop", trigger="mark_price", trigger_offset=500,
    ))
    wire = stop.to_dict()
    assert wire["order_state"] == "untriggered" and wire["price"] == "market_price"
    assert wire["trigger_offset"] == 500 and wire["trigger_reference_price"] == 95_000
    assert wire["trigger_price"] == 94_500
    tick(engine, 96_000)
    assert stop.trigger_price == 95_500  # moved up with the mark
    tick(engine, 95_800)
    assert stop.trigger_price == 95_500 and stop.state == "untriggered"  # never moves down
    place(engine, "b", "buy", req(100, 95_400))
    tick(engine, 95_500)
    assert stop.state == "filled" and stop.triggered and stop.average_price == 95_400
    assert engine.trades_by_order[stop.order_id][0]["order_type"] == "market"


def test_buy_trailing_stop_and_offset_edit(engine: Engine) -> None:
    stop = place(engine, "a", "buy", req(
        100, type="trailing_stop", trigger="index_price", trigger_offset=300,
    ))
    assert stop.trigger_price == 95_300
    tick(engine, 94_000)
    assert stop.trigger_price == 94_300  # follows the low
    edited, _ = engine.edit(
        acc(engine, "a"), stop, None, None, None, None, None, None, None, trigger_offset=1_000
    )
    assert edited.trigger_offset == 1_000 and edited.trigger_price == 95_000
    place(engine, "b", "sell", req(100, 95_100))
    tick(engine, 94_900)
    assert stop.state == "untriggered"
    tick(engine, 95_000)
    assert stop.state == "filled" and stop.average_price == 95_100


def test_trailing_stop_needs_an_offset_and_a_trigger(engine: Engine) -> None:
    with pytest.raises(RpcError) as info:
        place(engine, "a", "sell", req(100, type="trailing_stop", trigger="mark_price"))
    assert info.value.code == errors.INVALID_PARAMS == -32602
    assert info.value.message == "Invalid params"
    assert info.value.data == {"reason": "trigger_offset is required", "param": "trigger_offset"}
    with pytest.raises(RpcError) as info:
        place(engine, "a", "sell", req(100, type="trailing_stop", trigger_offset=100))
    assert info.value.data["param"] == "trigger"
    with pytest.raises(RpcError) as info:
        place(engine, "a", "sell", req(
            100, type="trailing_stop", trigger="mark_price", trigger_offset=-5,
        ))
    assert info.value.data["param"] == "trigger_offset"
    assert not engine.orders


# ---- valid_until --------------------------------------------------------------------------


def test_valid_until_refuses_a_request_that_arrived_too_late(engine: Engine) -> None:
    now = int(time.time() * 1000)
    with pytest.raises(RpcError) as info:
        place(engine, "a", "buy", req(100, 94_000, valid_until=now - 1))
    assert (info.value.code, info.value.message) == (13888, "timed_out")
    assert not engine.orders
    order = place(engine, "a", "buy", req(100, 94_000, valid_until=now + 60_000))
    assert order.state == "open"
    with pytest.raises(RpcError) as info:
        engine.edit(acc(engine, "a"), order, 200, None, None, None, None, None, None,
                    valid_until=now - 1)
    assert info.value.code == 13888 and order.amount == 100


# ---- one_triggers_other -------------------------------------------------------------------


def test_oto_first_hit_places_the_secondary_on_the_first_fill(engine: Engine) -> None:
    primary = place(engine, "a", "buy", req(
        100, 95_000, linked_order_type="one_triggers_other",
        otoco_config=[leg("sell", 100, 96_000, label="take-profit")],
    ))
    [sid] = primary.oto_order_ids or []
    secondary = by_id(engine, sid)
    assert primary.to_dict()["oto_order_ids"] == [sid]
    assert primary.to_dict()["trigger_fill_condition"] == "first_hit"
    wire = secondary.to_dict()
    assert wire["order_state"] == "untriggered" and wire["is_secondary_oto"]
    assert wire["primary_order_id"] == primary.order_id and wire["label"] == "take-profit"
    assert sid in acc(engine, "a").open_orders
    assert not engine.books[PERP].asks.keys  # not in the book yet
    place(engine, "b", "sell", req(40, 95_000))
    assert primary.filled == 40 and secondary.state == "open" and secondary.amount == 100
    assert engine.books[PERP].asks.keys
    place(engine, "b", "buy", req(100, 96_000))
    assert secondary.state == "filled"


def test_oto_complete_fill_and_a_cancelled_primary(engine: Engine) -> None:
    primary = place(engine, "a", "buy", req(
        100, 95_000, linked_order_type="one_triggers_other",
        trigger_fill_condition="complete_fill", otoco_config=[leg("sell", 100, 96_000)],
    ))
    secondary = by_id(engine, (primary.oto_order_ids or [])[0])
    place(engine, "b", "sell", req(40, 95_000))
    assert secondary.state == "untriggered" and secondary.oto_waiting
    engine.cancel(acc(engine, "a"), primary)
    assert secondary.state == "cancelled"
    assert secondary.to_dict()["cancel_reason"] == "oto_primary_closed"

    primary = place(engine, "a", "buy", req(
        100, 95_000, linked_order_type="one_triggers_other",
        trigger_fill_condition="complete_fill", otoco_config=[leg("sell", 100, 96_000)],
    ))
    secondary = by_id(engine, (primary.oto_order_ids or [])[0])
    place(engine, "b", "sell", req(100, 95_000))
    assert primary.state == "filled" and secondary.state == "open"


def test_oto_incremental_grows_the_secondary_with_each_fill(engine: Engine) -> None:
    primary = place(engine, "a", "buy", req(
        100, 95_000, linked_order_type="one_triggers_other",
        trigger_fill_condition="incremental",
        otoco_config=[leg("sell", 200, 96_000, type="limit")],
    ))
    secondary = by_id(engine, (primary.oto_order_ids or [])[0])
    place(engine, "b", "sell", req(40, 95_000))
    assert secondary.state == "open" and secondary.amount == 80
    place(engine, "b", "sell", req(30, 95_000))
    assert secondary.amount == 140
    engine.cancel(acc(engine, "a"), primary)
    assert secondary.state == "open" and secondary.amount == 140  # what was placed stays


def test_oto_secondary_that_cannot_be_placed_is_rejected(engine: Engine) -> None:
    primary = place(engine, "a", "buy", req(
        100, 95_000, linked_order_type="one_triggers_other",
        otoco_config=[leg("buy", 100, 94_000, reduce_only=True)],  # buys reduce nothing
    ))
    secondary = by_id(engine, (primary.oto_order_ids or [])[0])
    place(engine, "b", "sell", req(100, 95_000))
    assert primary.state == "filled" and secondary.state == "rejected"
    assert secondary.order_id not in acc(engine, "a").open_orders


# ---- one_cancels_other --------------------------------------------------------------------


def test_oco_fill_of_one_cancels_the_other(engine: Engine) -> None:
    take = place(engine, "a", "sell", req(
        100, 96_000, linked_order_type="one_cancels_other",
        otoco_config=[leg("sell", 100, type="stop_market", trigger="mark_price",
                          trigger_price=94_000)],
    ))
    ref = take.oco_ref
    stop = next(o for o in engine.orders.values() if o.oco_ref == ref and o is not take)
    assert ref and stop.state == "untriggered" and take.state == "open"
    assert take.to_dict()["oco_ref"] == stop.to_dict()["oco_ref"] == ref
    place(engine, "b", "buy", req(30, 96_000))
    assert take.filled == 30 and stop.state == "cancelled"
    assert stop.to_dict()["cancel_reason"] == "oco_other_closed"


def test_oco_closing_one_by_hand_cancels_the_other(engine: Engine) -> None:
    take = place(engine, "a", "sell", req(
        100, 96_000, linked_order_type="one_cancels_other",
        otoco_config=[leg("sell", 100, type="stop_market", trigger="mark_price",
                          trigger_price=94_000)],
    ))
    stop = next(o for o in engine.orders.values() if o.oco_ref == take.oco_ref and o is not take)
    engine.cancel(acc(engine, "a"), stop)
    assert take.state == "cancelled" and take.cancel_reason == "oco_other_closed"


def test_oco_incremental_shrinks_the_other(engine: Engine) -> None:
    take = place(engine, "a", "sell", req(
        100, 96_000, linked_order_type="one_cancels_other",
        trigger_fill_condition="incremental",
        otoco_config=[leg("sell", 100, type="stop_market", trigger="mark_price",
                          trigger_price=94_000)],
    ))
    stop = next(o for o in engine.orders.values() if o.oco_ref == take.oco_ref and o is not take)
    place(engine, "b", "buy", req(30, 96_000))
    assert stop.state == "untriggered" and stop.amount == 70
    place(engine, "b", "buy", req(70, 96_000))
    assert take.state == "filled" and stop.state == "cancelled"


def test_oco_that_fills_at_once_never_places_the_other(engine: Engine) -> None:
    place(engine, "b", "buy", req(100, 96_000))
    take = place(engine, "a", "sell", req(
        100, 96_000, linked_order_type="one_cancels_other",
        otoco_config=[leg("sell", 100, 97_000)],
    ))
    other = next(o for o in engine.orders.values() if o.oco_ref == take.oco_ref and o is not take)
    assert take.state == "filled"
    assert other.state == "cancelled" and other.cancel_reason == "oco_other_closed"
    assert not engine.books[PERP].asks.keys


# ---- one_triggers_one_cancels_other -------------------------------------------------------


def otoco(engine: Engine) -> tuple[Order, Order, Order]:
    primary = place(engine, "a", "buy", req(
        100, 95_000, linked_order_type="one_triggers_one_cancels_other",
        otoco_config=[
            leg("sell", 100, 96_000, reduce_only=True),
            leg("sell", 100, type="stop_market", trigger="mark_price", trigger_price=94_000,
                reduce_only=True),
        ],
    ))
    take, stop = (by_id(engine, i) for i in primary.oto_order_ids or [])
    return primary, take, stop


def test_otoco_places_the_pair_then_one_cancels_the_other(engine: Engine) -> None:
    primary, take, stop = otoco(engine)
    assert primary.to_dict()["is_primary_otoco"]
    assert take.oco_ref == stop.oco_ref is not None
    assert take.state == stop.state == "untriggered" and take.oto_waiting and stop.oto_waiting
    place(engine, "b", "sell", req(100, 95_000))
    assert primary.state == "filled"
    assert take.state == "open" and stop.state == "untriggered" and not stop.oto_waiting
    assert stop in engine.untriggered[PERP]
    place(engine, "b", "buy", req(100, 96_000))
    assert take.state == "filled"
    assert stop.state == "cancelled" and stop.cancel_reason == "oco_other_closed"
    assert acc(engine, "a").positions[PERP].size == 0


def test_otoco_stop_side_fires_and_cancels_the_take(engine: Engine) -> None:
    _, take, stop = otoco(engine)
    place(engine, "b", "sell", req(100, 95_000))
    place(engine, "b", "buy", req(100, 93_500))
    tick(engine, 94_000)
    assert stop.state == "filled" and stop.average_price == 93_500
    assert take.state == "cancelled" and take.cancel_reason == "oco_other_closed"


def test_otoco_cancelled_primary_cancels_the_pair(engine: Engine) -> None:
    primary, take, stop = otoco(engine)
    engine.cancel(acc(engine, "a"), primary)
    assert take.state == stop.state == "cancelled"
    assert {take.cancel_reason, stop.cancel_reason} <= {"oto_primary_closed", "oco_other_closed"}
    assert not acc(engine, "a").open_orders


@pytest.mark.parametrize(
    ("kw", "param"),
    [
        ({"linked_order_type": "one_triggers_other"}, "otoco_config"),
        ({"otoco_config": [leg("sell", 100, 96_000)]}, "linked_order_type"),
        ({"linked_order_type": "one_triggers_one_cancels_other",
          "otoco_config": [leg("sell", 100, 96_000)]}, "otoco_config"),
        ({"linked_order_type": "one_triggers_other",
          "otoco_config": [leg("sell", 100, None)]}, "price"),
        ({"linked_order_type": "one_triggers_other",
          "otoco_config": [leg("sell", 15, 96_000)]}, "amount"),
    ],
)
def test_linked_order_validation_is_all_or_nothing(
    engine: Engine, kw: dict[str, Any], param: str
) -> None:
    with pytest.raises(RpcError) as info:
        place(engine, "a", "buy", req(100, 95_000, **kw))
    assert info.value.code == -32602 and info.value.data["param"] == param
    assert not engine.orders and not acc(engine, "a").open_orders


# ---- over the wire, and across a restart -------------------------------------------------


async def _exchange(state_dir: Path) -> PaperExchange:
    px = PaperExchange(
        settings=PaperExchangeSettings(port=0), rate_limits=False, run_market=False,
        state_dir=state_dir,
    )
    await px.start()
    return px


async def test_otoco_over_the_wire_survives_a_restart(tmp_path: Path) -> None:
    durable = tmp_path / "paper"
    px = await _exchange(durable)
    try:
        mark_at(px.engine, 95_000)
        c = await RpcClient.connect(px.ws_url)
        await c.auth("trader", "trader-secret")
        bad = await c.call(
            "private/buy", instrument_name=PERP, amount=100, price=95_000,
            linked_order_type="one_triggers_one_cancels_other",
            otoco_config=[{"direction": "sell", "amount": 100, "price": 96_000}],
        )
        assert bad["error"]["code"] == -32602
        placed = await c.result(
            "private/buy", instrument_name=PERP, amount=100, price=95_000, label="entry",
            linked_order_type="one_triggers_one_cancels_other",
            otoco_config=[
                {"direction": "sell", "amount": 100, "price": 96_000, "label": "tp",
                 "reduce_only": True},
                {"direction": "sell", "amount": 100, "type": "stop_market",
                 "trigger": "mark_price", "trigger_price": 94_000, "label": "sl",
                 "reduce_only": True},
            ],
        )
        primary = placed["order"]
        take_id, stop_id = primary["oto_order_ids"]
        with pytest.raises(RpcFailed) as info:
            await c.result(
                "private/sell", instrument_name=PERP, amount=100, type="trailing_stop",
                trigger="mark_price",
            )
        assert info.value.code == -32602 and info.value.data["param"] == "trigger_offset"
        await c.close()
    finally:
        await px.stop()

    px = await _exchange(durable)
    try:
        mark_at(px.engine, 95_000)
        trader = await RpcClient.connect(px.ws_url)
        await trader.auth("trader", "trader-secret")
        take = await trader.result("private/get_order_state", order_id=take_id)
        assert take["order_state"] == "untriggered" and take["is_secondary_oto"]
        other = await RpcClient.connect(px.ws_url)
        await other.auth("other", "other-secret")
        await other.result("private/sell", instrument_name=PERP, amount=100, price=95_000)
        states = {
            i: (await trader.result("private/get_order_state", order_id=i))["order_state"]
            for i in (primary["order_id"], take_id, stop_id)
        }
        assert states == {primary["order_id"]: "filled", take_id: "open", stop_id: "untriggered"}
        await other.result("private/buy", instrument_name=PERP, amount=100, price=96_000)
        stop = await trader.result("private/get_order_state", order_id=stop_id)
        assert stop["order_state"] == "cancelled" and stop["cancel_reason"] == "oco_other_closed"
        await trader.close()
        await other.close()
    finally:
        await px.stop()
