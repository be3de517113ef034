"""``oms bench history``: a synthetic order history made by the paper exchange's own matching
engine, written into embedded ClickHouse by the sink's writer, then tuned.

The paper exchange's :class:`~oms.exchange.paper.engine.Engine` runs with its seeded
synthetic market (a random-walk mark and a market maker re-quoting around it every step).
Nothing about fills is written by hand: each round,

* passive rounds: the market steps, the touch is read from the engine's book, and one
  post-only order per offset (bps from the touch, negative inside the spread, on the
  instrument's tick) is placed, buys and sells alternating. The market then steps
  ``horizon_steps`` times; whatever the engine fills is recorded as fills at the step's
  simulated time; the rest is cancelled;
* slice rounds: a TWAP slice (an immediate-or-cancel limit far through the touch, not
  post-only) of a size that is a multiple of the visible amount at the touch takes liquidity
  from the market maker's levels; its average price is what the engine made.

The orders become the records the OMS publishes (order events with snapshots, execution
reports with fills, market ticks), carrying the touch keys intake records (from the same
:func:`~oms.algos.tuning_math.touch_metadata`), and go through the sink's batch and writer
into the same tables as live history. Simulated time runs from ``start_ms`` in steps of
``step_ms`` so the history spans several hours of the day.

With the default market (a spread of about 4 bps), an order two bps inside the spread fills
clearly more often within the horizon than one at the touch or behind it: the tuner must pick
it and ``oms tune show`` must say why.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from oms.algos.tuning_math import touch_metadata
from oms.exchange.paper.accounts import AccountStore
from oms.exchange.paper.engine import Engine
from oms.exchange.paper.engine import OrderRequest as PaperRequest
from oms.exchange.paper.errors import RpcError
from oms.exchange.paper.instruments import default_instruments
from oms.exchange.paper.market import SyntheticMarket
from oms.exchange.paper.orders import Order
from oms.schemas import (
    Direction,
    ExecutionReport,
    Fill,
    MarketTick,
    OrderEvent,
    OrderEventType,
    OrderRecord,
    OrderStatus,
    OrderType,
    ReportSource,
    TimeInForce,
    Topic,
)
from oms.settings import Settings
from oms.sinks.batch import Batch, Message, TickSampler
from oms.sinks.clickhouse.client import AsyncClickHouse, open_client
from oms.sinks.clickhouse.migrations import apply_migrations
from oms.sinks.writer import write_batch

ACCOUNT = "sim"
HOUR_MS = 3_600_000


@dataclass(frozen=True)
class HistoryConfig:
    """What to simulate."""

    rounds: int = 600
    offsets_bps: tuple[float, ...] = (-2.0, 0.0, 2.0, 5.0)
    # Market steps a passive order rests before it is cancelled, and simulated ms per step.
    horizon_steps: int = 10
    step_ms: int = 2_000
    slice_rounds: int = 300
    # Slice sizes as multiples of the visible amount at the touch.
    depth_ratios: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 3.0)
    seed: int = 7
    instrument: str = "BTC-PERPETUAL"
    # Simulated start (ms); None: far enough back that the whole history is in the past.
    start_ms: int | None = None
    # False: orders carry no touch keys (as before intake recorded them); the statistics then
    # read the touch from the stored market ticks.
    record_touch: bool = True


@dataclass
class History:
    """The records of a simulated history, in publishing order."""

    records: list[tuple[Topic, Any]] = field(default_factory=list)
    orders: int = 0
    slices: int = 0
    ticks: int = 0
    steps: int = 0
    # offset (bps) -> [orders placed, orders the engine filled (any amount)]
    by_offset: dict[float, list[int]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "orders": self.orders,
            "slices": self.slices,
            "ticks": self.ticks,
            "market_steps": self.steps,
            "fill_rate_by_offset_bps": {
                f"{o:+g}": round(k / n, 3) if n else None
                for o, (n, k) in sorted(self.by_offset.items())
            },
        }

    def best_offset(self) -> float | None:
        """The offset the engine filled most often (what the tuner should find)."""
        rates = {o: k / n for o, (n, k) in self.by_offset.items() if n}
        return max(rates, key=lambda o: rates[o]) if rates else None


class _Sim:
    """The engine, its market and the simulated clock."""

    def __init__(self, config: HistoryConfig, history: History) -> None:
        self.config = config
        self.history = history
        instruments = default_instruments(int(time.time() * 1000))
        market = SyntheticMarket(instruments, seed=config.seed)
        accounts = AccountStore({"BTC": 1e6, "ETH": 1e6, "USDC": 1e6}, 4, auto_create=True)
        accounts.add(ACCOUNT, ACCOUNT, "secret")
        self.account = accounts.by_id[ACCOUNT]
        self.engine = Engine(instruments, market, accounts)
        self.inst = self.engine.instruments[config.instrument]
        steps_total = config.rounds * (1 + config.horizon_steps) + 2 * config.slice_rounds
        self.now = config.start_ms or (
            (int(time.time() * 1000) - steps_total * config.step_ms - HOUR_MS) // 1000 * 1000
        )

    def step(self) -> MarketTick:
        """Advance the market one step and the clock ``step_ms``; returns the tick."""
        self.engine.step_market()
        self.now += self.config.step_ms
        self.history.steps += 1
        t = self.engine.ticker(self.inst)
        tick = MarketTick(
            instrument_name=self.inst.name,
            timestamp=self.now,
            mark_price=t["mark_price"],
            index_price=t["index_price"],
            last_price=t["last_price"],
            best_bid_price=t["best_bid_price"] or None,
            best_bid_amount=t["best_bid_amount"] or None,
            best_ask_price=t["best_ask_price"] or None,
            best_ask_amount=t["best_ask_amount"] or None,
            received_at=self.now,
        )
        self.history.records.append((Topic.MARKET_TICKS, tick))
        self.history.ticks += 1
        return tick

    def place(self, buy: bool, price: float, amount: float, **kw: Any) -> Order | None:
        request = PaperRequest(instrument_name=self.inst.name, amount=amount, price=price, **kw)
        try:
            order, _ = self.engine.place(self.account, buy, request)
        except RpcError:
            return None  # e.g. a post-only order that would cross
        return order


def _price_at(touch: float, offset_bps: float, tick_size: float, buy: bool) -> float:
    """``offset_bps`` from the touch (behind it when positive), on the tick, as the chase
    strategy computes it."""
    raw = touch * (1 - offset_bps / 10_000) if buy else touch * (1 + offset_bps / 10_000)
    steps = math.floor(raw / tick_size + 1e-9) if buy else math.ceil(raw / tick_size - 1e-9)
    return round(steps * tick_size, 10)


def _touch(tick: MarketTick, tick_size: float, config: HistoryConfig) -> dict[str, Any]:
    if not config.record_touch:
        return {}
    return touch_metadata(
        tick.best_bid_price,
        tick.best_ask_price,
        tick.best_bid_amount,
        tick.best_ask_amount,
        tick.timestamp,
        tick_size,
    )


def _records(
    order_id: str,
    sim: _Sim,
    buy: bool,
    price: float,
    amount: float,
    placed_at: int,
    fills: list[Fill],
    ended_at: int,
    metadata: dict[str, Any],
    *,
    post_only: bool,
    tif: TimeInForce = TimeInForce.GOOD_TIL_CANCELLED,
) -> Iterator[tuple[Topic, Any]]:
    """The order events (open, then its end) and the execution report of one order."""
    filled = sum(f.amount for f in fills)
    average = sum(f.amount * f.price for f in fills) / filled if filled else None
    base = OrderRecord(
        order_id=order_id,
        request_id=f"req-{order_id}",
        account_id=ACCOUNT,
        instrument_name=sim.inst.name,
        direction=Direction.BUY if buy else Direction.SELL,
        order_type=OrderType.LIMIT,
        amount=amount,
        price=price,
        time_in_force=tif,
        post_only=post_only,
        metadata=metadata,
        status=OrderStatus.OPEN,
        created_at=placed_at,
        submitted_at=placed_at,
        updated_at=placed_at,
        version=2,
    )
    done = amount - filled < 1e-9
    end = base.model_copy(
        update={
            "status": OrderStatus.FILLED if done else OrderStatus.CANCELLED,
            "filled_amount": filled,
            "average_price": average,
            "updated_at": ended_at,
            "version": 3,
            "trade_ids": [f.trade_id for f in fills],
        }
    )
    for record, kind in ((base, OrderEventType.OPEN), (end, None)):
        event_type = kind or (OrderEventType.FILLED if done else OrderEventType.CANCELLED)
        yield (
            Topic.ORDER_EVENTS,
            OrderEvent(
                event_id=f"{order_id}:{record.version}:{event_type.value}",
                event_type=event_type,
                order_id=order_id,
                account_id=ACCOUNT,
                instrument_name=sim.inst.name,
                status=record.status,
                direction=record.direction,
                amount=amount,
                price=price,
                filled_amount=record.filled_amount,
                average_price=record.average_price,
                version=record.version,
                timestamp=record.updated_at,
                order=record,
            ),
        )
    if fills:
        yield (
            Topic.EXECUTION_REPORTS,
            ExecutionReport(
                report_id=f"{order_id}:fills",
                order_id=order_id,
                account_id=ACCOUNT,
                source=ReportSource.SUBSCRIPTION,
                instrument_name=sim.inst.name,
                direction=base.direction,
                exchange_timestamp=ended_at,
                fills=fills,
                received_at=ended_at,
            ),
        )


def _passive_round(sim: _Sim, index: int) -> None:
    config = sim.config
    tick = sim.step()
    buy = index % 2 == 0
    touch = tick.best_bid_price if buy else tick.best_ask_price
    if touch is None:
        return
    size = sim.inst.tick_size
    amount = sim.inst.min_trade_amount
    placed_at = sim.now
    resting: list[tuple[str, float, Order, list[Fill]]] = []
    placed_offsets: list[float] = []
    for i, offset in enumerate(config.offsets_bps):
        price = _price_at(touch, offset, size, buy)
        order = sim.place(buy, price, amount, post_only=True)
        if order is None:
            continue
        placed_offsets.append(offset)
        resting.append((f"sim{config.seed}-p{index}-{i}", price, order, []))
        sim.history.by_offset.setdefault(offset, [0, 0])[0] += 1
    for _ in range(config.horizon_steps):
        sim.step()
        for order_id, price, order, fills in resting:
            got = order.filled - sum(f.amount for f in fills)
            if got > 1e-9:
                fills.append(
                    Fill(
                        trade_id=f"{order_id}-t{len(fills)}",
                        amount=got,
                        price=price,
                        liquidity="M",
                        timestamp=sim.now,
                    )
                )
    for (order_id, price, order, fills), offset in zip(resting, placed_offsets, strict=True):
        sim.history.by_offset[offset][1] += bool(fills)
        if order.state == "open":
            sim.engine.cancel(sim.account, order)
        metadata = _touch(tick, size, config)
        sim.history.records.extend(
            _records(
                order_id,
                sim,
                buy,
                price,
                amount,
                placed_at,
                fills,
                sim.now,
                metadata,
                post_only=True,
            )
        )
        sim.history.orders += 1


def _slice_round(sim: _Sim, index: int) -> None:
    config = sim.config
    tick = sim.step()
    buy = index % 2 == 0
    touch = tick.best_ask_price if buy else tick.best_bid_price
    depth = tick.best_ask_amount if buy else tick.best_bid_amount
    if touch is None or not depth:
        return
    ratio = config.depth_ratios[(index // 2) % len(config.depth_ratios)]
    lot = sim.inst.min_trade_amount
    amount = max(lot, round(ratio * depth / lot) * lot)
    # Far through the touch: the slice takes what the levels hold, the rest is cancelled.
    limit = _price_at(touch, -100.0, sim.inst.tick_size, buy)
    before = sim.now
    order = sim.place(buy, limit, amount, time_in_force="immediate_or_cancel")
    if order is None or order.filled <= 0:
        return
    order_id = f"sim{config.seed}-s{index}"
    fill = Fill(
        trade_id=f"{order_id}-t0",
        amount=order.filled,
        price=order.notional / order.filled,
        liquidity="T",
        timestamp=before,
    )
    metadata = {
        **_touch(tick, sim.inst.tick_size, config),
        "parent_id": f"sim{config.seed}-parent{index // 10}",
        "twap_slice": index % 10,
    }
    sim.history.records.extend(
        _records(
            order_id,
            sim,
            buy,
            limit,
            amount,
            before,
            [fill],
            before,
            metadata,
            post_only=False,
            tif=TimeInForce.IMMEDIATE_OR_CANCEL,
        )
    )
    sim.history.slices += 1
    sim.step()  # the market maker re-quotes what the slice took


def simulate(config: HistoryConfig) -> History:
    """Run the simulation (pure CPU, a second or two for the defaults)."""
    history = History()
    sim = _Sim(config, history)
    for index in range(config.rounds):
        _passive_round(sim, index)
    for index in range(config.slice_rounds):
        _slice_round(sim, index)
    return history


async def write_history_async(settings: Settings, history: History) -> dict[str, int]:
    """Write the records into the embedded ClickHouse of ``settings`` through the sink's batch
    and writer (migrations applied first). No other client may hold the data path."""
    batch = Batch.for_settings(settings, TickSampler(settings.sink.tick_sample_ms))
    for offset, (topic, record) in enumerate(history.records):
        batch.add(Message(settings.topic(topic.value), 0, offset, record.to_bytes()))
    client = await asyncio.to_thread(open_client, settings)
    try:
        await asyncio.to_thread(apply_migrations, client, settings.sink)
        return await write_batch(AsyncClickHouse(client), batch)
    finally:
        client.close()


def write_history(settings: Settings, history: History) -> dict[str, int]:
    """:func:`write_history_async` from synchronous code (no event loop running)."""
    return asyncio.run(write_history_async(settings, history))


def run_history_bench(
    config: HistoryConfig, settings: Settings, on_status: Any = None
) -> dict[str, Any]:
    """Simulate, write into ``settings``' embedded ClickHouse, tune; ``ok`` when the tuner
    picked the offset the engine filled best."""
    from oms.algos.tuner import CHASE_OFFSET
    from oms.sinks.tuning import tuning_report

    status = on_status or (lambda _text: None)
    started = time.perf_counter()
    status("simulating on the paper exchange's engine")
    history = simulate(config)
    simulated = time.perf_counter()
    status("writing through the sink's writer")
    written = write_history(settings, history)
    wrote = time.perf_counter()
    status("tuning")
    stats, report = asyncio.run(tuning_report(settings))
    tuned = time.perf_counter()
    pick = next(
        (p for p in report.picks if p.figure == CHASE_OFFSET and "hour" not in p.scope), None
    )
    picked = pick.value["offset_bps"] if pick is not None and pick.picked else None
    expected = history.best_offset()
    return {
        "ok": picked is not None and picked == expected,
        "expected_offset_bps": expected,
        "picked_offset_bps": picked,
        "reason": pick.reason if pick is not None else None,
        "history": history.summary(),
        "rows_written": written,
        "simulate_s": round(simulated - started, 2),
        "write_s": round(wrote - simulated, 2),
        "tune_s": round(tuned - wrote, 2),
        "data_dir": str(settings.data_dir),
        "stats": stats,
        "report": report,
    }
