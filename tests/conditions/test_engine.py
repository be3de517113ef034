"""The trigger engine against hand-made cases and against the linear scan
(``oms.conditions.naive``)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import pytest

from oms.conditions.engine import Fired, TriggerEngine
from oms.conditions.expressions import ExpressionError, parse_expression, parse_time_ms
from oms.conditions.naive import NaiveEvaluator
from oms.market.cache import MarketCache
from oms.schemas.conditions import (
    ExpirationCondition,
    Operator,
    PriceCondition,
    PriceField,
    TimeCondition,
    TrailingCondition,
    parse_condition,
)

T0 = 1_764_000_000_000


@dataclass
class Tick:
    instrument_name: str
    timestamp: int = T0
    last_price: float | None = None
    mark_price: float | None = None
    index_price: float | None = None
    best_bid_price: float | None = None
    best_ask_price: float | None = None


class FedEngine(TriggerEngine):
    """The engine over its own market cache, each tick applied to the cache before the engine
    sees it (what the worker's tick feed does)."""

    def __init__(self) -> None:
        self.market = MarketCache(underlying=lambda instrument: None)
        super().__init__(self.market.value)

    def on_tick(self, tick: Any) -> list[Fired]:
        self.market.update([tick])
        return super().on_tick(tick)


def price(op: str, value: float, instrument: str = "BTC-PERPETUAL", fld: str = "last_price"):
    return PriceCondition(
        instrument_name=instrument, field=PriceField(fld), operator=Operator(op), value=value
    )


def test_threshold_fires_on_the_tick_that_reaches_it_and_only_once() -> None:
    engine = FedEngine()
    assert engine.add("a", [price(">=", 100.0)], now_ms=T0) is None
    assert engine.on_tick(Tick("BTC-PERPETUAL", last_price=99.5)) == []
    fired = engine.on_tick(Tick("BTC-PERPETUAL", last_price=100.0))
    assert [f.order_id for f in fired] == ["a"]
    assert fired[0].details["tick"]["last_price"] == 100.0
    assert fired[0].details["conditions"][0]["value"] == 100.0
    assert engine.on_tick(Tick("BTC-PERPETUAL", last_price=101.0)) == []
    assert len(engine) == 0


def test_strict_and_inclusive_bounds() -> None:
    engine = FedEngine()
    engine.add("gt", [price(">", 100.0)], now_ms=T0)
    engine.add("ge", [price(">=", 100.0)], now_ms=T0)
    engine.add("lt", [price("<", 100.0)], now_ms=T0)
    engine.add("le", [price("<=", 100.0)], now_ms=T0)
    engine.on_tick(Tick("BTC-PERPETUAL", last_price=150.0))  # gt, ge fire
    engine.add("gt2", [price(">", 200.0)], now_ms=T0)
    assert {f.order_id for f in engine.on_tick(Tick("BTC-PERPETUAL", last_price=100.0))} == {"le"}
    assert [f.order_id for f in engine.on_tick(Tick("BTC-PERPETUAL", last_price=99.0))] == ["lt"]
    assert engine.on_tick(Tick("BTC-PERPETUAL", last_price=200.0)) == []
    assert [f.order_id for f in engine.on_tick(Tick("BTC-PERPETUAL", last_price=200.5))] == ["gt2"]


def test_already_true_conditions_fire_when_the_order_arrives() -> None:
    engine = FedEngine()
    engine.on_tick(Tick("ETH-PERPETUAL", mark_price=3000.0))
    fired = engine.add("a", [price("<", 3100.0, "ETH-PERPETUAL", "mark_price")], now_ms=T0)
    assert fired is not None and fired.kind == "release"


def test_values_come_from_the_market_cache_it_reads() -> None:
    """Ticks the engine never evaluated (a warm-up) still set what an arriving order and a
    cross compare with: the engine reads the worker's one market cache."""
    market = MarketCache(underlying=lambda instrument: None)
    engine = TriggerEngine(market.value)
    market.update(
        [Tick("ETH-PERPETUAL", mark_price=3000.0), Tick("BTC-PERPETUAL", last_price=99.0)]
    )
    fired = engine.add("a", [price("<", 3100.0, "ETH-PERPETUAL", "mark_price")], now_ms=T0)
    assert fired is not None and fired.details["conditions"][0]["value"] == 3000.0
    assert engine.add("x", [price("crosses_above", 100.0)], now_ms=T0) is None  # armed below
    market.update([Tick("BTC-PERPETUAL", last_price=100.0)])
    assert [f.order_id for f in engine.on_tick(Tick("BTC-PERPETUAL", last_price=100.0))] == ["x"]


def test_cross_needs_a_previous_value_on_the_other_side() -> None:
    engine = FedEngine()
    engine.add("x", [price("crosses_above", 100.0)], now_ms=T0)
    # The first tick only arms the cross: no evidence the value was ever below.
    assert engine.on_tick(Tick("BTC-PERPETUAL", last_price=105.0)) == []
    assert engine.on_tick(Tick("BTC-PERPETUAL", last_price=101.0)) == []
    assert engine.on_tick(Tick("BTC-PERPETUAL", last_price=99.0)) == []
    assert [f.order_id for f in engine.on_tick(Tick("BTC-PERPETUAL", last_price=100.0))] == ["x"]


def test_cross_below_on_another_instruments_index() -> None:
    engine = FedEngine()
    engine.on_tick(Tick("BTC-PERPETUAL", index_price=60_000.0))
    cond = price("crosses_below", 59_000.0, "BTC-PERPETUAL", "index_price")
    assert engine.add("eth-option", [cond], now_ms=T0) is None
    assert engine.on_tick(Tick("ETH-PERPETUAL", index_price=1.0)) == []
    fired = engine.on_tick(Tick("BTC-PERPETUAL", index_price=58_999.5))
    assert [f.order_id for f in fired] == ["eth-option"]


def test_all_conditions_must_hold_at_the_same_time() -> None:
    engine = FedEngine()
    conds = [price(">=", 100.0), price("<=", 10.0, "ETH-PERPETUAL")]
    engine.add("both", conds, now_ms=T0)
    assert engine.on_tick(Tick("BTC-PERPETUAL", last_price=100.0)) == []  # first holds
    assert engine.on_tick(Tick("BTC-PERPETUAL", last_price=99.0)) == []  # and no longer
    assert engine.on_tick(Tick("ETH-PERPETUAL", last_price=10.0)) == []  # second holds
    fired = engine.on_tick(Tick("BTC-PERPETUAL", last_price=100.5))
    assert [f.order_id for f in fired] == ["both"]
    held = [c["held"] for c in fired[0].details["conditions"]]
    assert held == [True, True]


def test_match_any_fires_on_the_first() -> None:
    engine = FedEngine()
    conds = [price(">=", 100.0), price("<=", 10.0, "ETH-PERPETUAL")]
    engine.add("any", conds, match_any=True, now_ms=T0)
    fired = engine.on_tick(Tick("ETH-PERPETUAL", last_price=9.0))
    assert [f.order_id for f in fired] == ["any"]


def test_time_conditions_release_delay_and_expiration() -> None:
    engine = FedEngine()
    engine.add("delayed", [], release_at=T0 + 5_000, now_ms=T0)
    engine.add("after", [TimeCondition(operator=">=", value=T0 + 1_000)], now_ms=T0)
    engine.add("expiring", [price(">=", 1e9), ExpirationCondition(seconds=2)], now_ms=T0)
    engine.add(
        "window",
        [price(">=", 1e9), TimeCondition(operator="<", value=T0 + 3_000)],
        now_ms=T0,
    )
    assert engine.next_deadline() == T0 + 1_000
    assert engine.on_time(T0 + 999) == []
    assert [(f.order_id, f.kind) for f in engine.on_time(T0 + 1_000)] == [("after", "release")]
    assert [(f.order_id, f.kind) for f in engine.on_time(T0 + 2_000)] == [("expiring", "expire")]
    assert [(f.order_id, f.kind) for f in engine.on_time(T0 + 3_000)] == [("window", "expire")]
    assert [(f.order_id, f.kind) for f in engine.on_time(T0 + 5_000)] == [("delayed", "release")]
    assert engine.next_deadline() is None and len(engine) == 0


def test_time_and_price_together() -> None:
    engine = FedEngine()
    conds = [price(">=", 100.0), TimeCondition(operator=">=", value=T0 + 1_000)]
    engine.add("a", conds, now_ms=T0)
    assert engine.on_tick(Tick("BTC-PERPETUAL", last_price=100.0)) == []
    assert [f.order_id for f in engine.on_time(T0 + 1_000)] == ["a"]


def test_removed_orders_never_fire() -> None:
    engine = FedEngine()
    engine.add("a", [price(">=", 100.0)], now_ms=T0, expire_at=T0 + 10)
    assert engine.remove("a")
    assert engine.on_tick(Tick("BTC-PERPETUAL", last_price=200.0)) == []
    assert engine.on_time(T0 + 20) == []
    assert not engine.remove("a")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_same_releases_as_the_linear_scan(seed: int) -> None:
    """Random orders and random walks: the engine fires exactly what the linear scan fires,
    on the same tick."""
    rng = random.Random(seed)
    instruments = ["BTC-PERPETUAL", "ETH-PERPETUAL"]
    engine, naive = FedEngine(), NaiveEvaluator()
    for i in range(300):
        conds = []
        for _ in range(rng.randint(1, 3)):
            op = rng.choice([">", ">=", "<", "<=", "crosses_above", "crosses_below"])
            conds.append(
                price(
                    op,
                    float(rng.randint(90, 110)),
                    rng.choice(instruments),
                    rng.choice(["last_price", "mark_price"]),
                )
            )
        crosses = sum(c.operator.value.startswith("crosses") for c in conds)
        match_any = crosses > 1 or rng.random() < 0.3
        engine.add(f"o{i}", conds, match_any=match_any, now_ms=T0)
        naive.add(f"o{i}", conds, match_any=match_any)
    level = {name: 100.0 for name in instruments}
    for n in range(2_000):
        name = rng.choice(instruments)
        level[name] += rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0])
        tick = Tick(name, last_price=level[name], mark_price=level[name] + rng.choice([0, 0.5]))
        got = sorted(f.order_id for f in engine.on_tick(tick))
        assert got == sorted(naive.on_tick(tick, T0)), f"tick {n}"
    assert engine.fired > 100


def test_expressions() -> None:
    assert parse_expression("BTC-PERPETUAL.last_price >= 70000") == {
        "kind": "price",
        "instrument_name": "BTC-PERPETUAL",
        "field": "last_price",
        "operator": ">=",
        "value": 70000.0,
    }
    assert parse_expression("mark_price crosses_below 3000")["operator"] == "crosses_below"
    assert parse_expression("time >= 2026-12-01T08:00Z")["value"] == parse_time_ms(
        "2026-12-01T08:00:00+00:00"
    )
    for bad in ("BTC-PERPETUAL.volume > 1", "last_price >= abc", "time crosses_above 5", "x"):
        with pytest.raises(ExpressionError):
            parse_expression(bad)
    cond = parse_condition(parse_expression("ETH-PERPETUAL.best_bid_price < 3000.5"))
    assert isinstance(cond, PriceCondition) and cond.value == 3000.5


def trailing(direction: str, *, offset: float | None = None, pct: float | None = None):
    return TrailingCondition(
        instrument_name="BTC-PERPETUAL",
        field="last_price",
        offset=offset,
        offset_percent=pct,
        direction=direction,  # type: ignore[arg-type]
    )


def test_trailing_sell_stop_follows_the_high() -> None:
    engine = FedEngine()
    engine.on_tick(Tick("BTC-PERPETUAL", last_price=1000.0))
    engine.add("stop", [trailing("down", offset=100)], now_ms=T0)
    for price in (1100.0, 1200.0, 1150.0, 1101.0):
        assert engine.on_tick(Tick("BTC-PERPETUAL", last_price=price)) == []
    fired = engine.on_tick(Tick("BTC-PERPETUAL", last_price=1100.0))
    assert [f.order_id for f in fired] == ["stop"]


def test_trailing_buy_stop_in_percent_follows_the_low() -> None:
    engine = FedEngine()
    engine.add("stop", [trailing("up", pct=1.0)], now_ms=T0)  # armed by the first tick
    for price in (1000.0, 950.0, 900.0, 908.0):
        assert engine.on_tick(Tick("BTC-PERPETUAL", last_price=price)) == []
    assert [f.order_id for f in engine.on_tick(Tick("BTC-PERPETUAL", last_price=909.0))] == ["stop"]


@pytest.mark.parametrize("seed", [4, 5])
def test_trailing_stops_match_a_brute_force_watermark(seed: int) -> None:
    """Stops activated at different times, both directions, both offset kinds: the grouped
    watermarks fire exactly when recomputing every watermark on every tick would."""
    rng = random.Random(seed)
    engine = FedEngine()
    price = 1000.0
    engine.on_tick(Tick("BTC-PERPETUAL", last_price=price))
    stops: dict[str, tuple[str, float, bool, float]] = {}  # id -> (dir, offset, pct, wm)
    for n in range(3_000):
        if n % 10 == 0 and len(stops) < 400:
            order_id = f"s{n}"
            direction = rng.choice(["down", "up"])
            pct = rng.random() < 0.5
            offset = rng.uniform(0.5, 3.0) if pct else rng.uniform(5, 30)
            cond = trailing(direction, pct=offset) if pct else trailing(direction, offset=offset)
            assert engine.add(order_id, [cond], now_ms=T0) is None
            stops[order_id] = (direction, offset / 100 if pct else offset, pct, price)
        price = round(price + rng.choice([-4.0, -2.0, 0.0, 2.0, 4.0]), 1)
        expected = set()
        for order_id, (direction, offset, pct, wm) in list(stops.items()):
            if direction == "down":
                wm = max(wm, price)
                level = wm - wm * offset if pct else wm - offset
                hit = price <= level
            else:
                wm = min(wm, price)
                level = wm + wm * offset if pct else wm + offset
                hit = price >= level
            stops[order_id] = (direction, offset, pct, wm)
            if hit:
                expected.add(order_id)
                del stops[order_id]
        got = {f.order_id for f in engine.on_tick(Tick("BTC-PERPETUAL", last_price=price))}
        assert got == expected, n
    assert engine.fired > 50
