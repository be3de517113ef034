"""``oms bench conditions``: the trigger engine alone, against a linear scan of every order,
and the whole tick path through Kafka and a worker.

Engine figures (in process, same orders, same ticks):

* ``engine_ticks_per_s``: :class:`TriggerEngine` over all ticks, with ``orders`` resting
  (each tick applied to the market cache first, as in a worker);
* ``naive_ticks_per_s``: :class:`NaiveEvaluator` (every order on every tick) over a sample of
  the same ticks; ``speedup`` = engine / naive;
* ``bytes_per_order``: memory the engine holds per resting order (tracemalloc).

Pipeline figures (a Kafka broker on free ports, the paper exchange, one worker process):
``pipeline_orders`` conditional orders rest in the worker; ticks are published on
``market-ticks`` at ``rate`` per second (or as fast as possible) and ``probes`` of them push a
price through a probe order's threshold. ``pipeline_ticks_per_s`` is how fast the worker
consumed the ticks; ``trigger_latency_ms`` runs from publishing a probe tick to receiving its
order's ``triggered`` event, split into its hops: ``tick_to_engine_ms`` (through
``market-ticks`` into the worker's engine, to its decision), ``engine_to_release_ms`` (the
trigger through ``order-triggers`` to the release agent) and ``release_to_reader_ms`` (the
``triggered`` event through ``order-events`` to the reader). Baseline: a raw aiokafka consumer
reading the same ticks.
"""

from __future__ import annotations

import asyncio
import gc
import random
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from oms.client import OrderClient
from oms.conditions.engine import TriggerEngine
from oms.conditions.naive import NaiveEvaluator
from oms.kafka.admin import ensure_topics
from oms.kafka.security import as_connection
from oms.market.cache import MarketCache
from oms.schemas import MarketTick, OrderEvent, OrderEventType, Topic, now_ms
from oms.schemas.conditions import Operator, PriceCondition, PriceField
from oms_dev.benchmarks.e2e import latency_summary
from oms_dev.devstack.kafka import KafkaBroker
from oms_dev.harness import OmsServices, isolated_settings, worker_ready, write_account_secrets

INSTRUMENTS = [f"BENCH-{i}" for i in range(20)]
# The publisher sleeps only once it is this far ahead of its schedule: a tick is sent at most
# this early (well inside the producer's linger), and the publisher does not wake up once per
# tick (10,000 timer wake-ups a second, on the cores it measures).
PACING_S = 0.001
START_PRICE = 50_000.0


@dataclass
class ConditionsConfig:
    orders: int = 100_000
    ticks: int = 200_000
    naive_ticks: int = 200
    pipeline: bool = True
    pipeline_orders: int = 2_000
    pipeline_ticks: int = 100_000
    rate: float | None = 10_000.0
    probes: int = 200
    partitions: int = 8
    seed: int = 7


def make_conditions(n: int, rng: random.Random) -> list[list[PriceCondition]]:
    """Thresholds spread over 20% on the far side of the start price (so every order rests),
    on 20 instruments and all fields: a tick moves a price by a basis point, so it flips
    only the few thresholds it passes."""
    fields = list(PriceField)
    operators = list(Operator)
    above = {Operator.GT, Operator.GE, Operator.CROSSES_ABOVE}
    orders = []
    for _ in range(n):
        conditions = []
        for _ in range(rng.choice((1, 1, 1, 2))):
            op = rng.choice(operators)
            distance = rng.uniform(0.002, 0.2)
            factor = 1 + distance if op in above else 1 - distance
            conditions.append(
                PriceCondition(
                    instrument_name=rng.choice(INSTRUMENTS),
                    field=rng.choice(fields),
                    operator=op,
                    value=round(START_PRICE * factor, 1),
                )
            )
        orders.append(conditions)
    return orders


class _Tick:
    __slots__ = (
        "best_ask_price",
        "best_bid_price",
        "index_price",
        "instrument_name",
        "last_price",
        "mark_price",
        "timestamp",
    )

    def __init__(self, instrument: str, price: float, timestamp: int) -> None:
        self.instrument_name = instrument
        self.timestamp = timestamp
        self.last_price = price
        self.mark_price = price + 0.5
        self.index_price = price - 0.5
        self.best_bid_price = price - 1.0
        self.best_ask_price = price + 1.0


def make_ticks(n: int, rng: random.Random) -> list[_Tick]:
    """Random walks of one basis point per tick, per instrument."""
    prices = dict.fromkeys(INSTRUMENTS, START_PRICE)
    ticks = []
    t0 = now_ms()
    for i in range(n):
        name = INSTRUMENTS[i % len(INSTRUMENTS)]
        prices[name] *= 1 + rng.choice((-1e-4, 1e-4))
        ticks.append(_Tick(name, round(prices[name], 1), t0 + i))
    return ticks


def bench_engine(config: ConditionsConfig) -> dict[str, Any]:
    """The engine and the naive scan over the same orders and ticks, in process."""
    rng = random.Random(config.seed)
    orders = make_conditions(config.orders, rng)
    ticks = make_ticks(config.ticks, rng)
    now = now_ms()

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    market = MarketCache(underlying=lambda instrument: None)
    engine = TriggerEngine(market.value)
    market.update(ticks[: len(INSTRUMENTS)])  # type: ignore[arg-type]  # same attributes
    for i, conditions in enumerate(orders):
        engine.add(f"o-{i:08d}", conditions, now_ms=now)
    resting = len(engine)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    bytes_per_order = (after - before) / max(1, resting)

    start = time.perf_counter()
    fired = 0
    for tick in ticks:
        market.update((tick,))  # type: ignore[arg-type]
        fired += len(engine.on_tick(tick))
    engine_seconds = time.perf_counter() - start

    naive = NaiveEvaluator()
    for i, conditions in enumerate(orders):
        naive.add(f"o-{i:08d}", conditions)
    sample = ticks[: config.naive_ticks]
    start = time.perf_counter()
    for tick in sample:
        naive.on_tick(tick, now)
    naive_seconds = time.perf_counter() - start

    engine_rate = len(ticks) / engine_seconds
    naive_rate = len(sample) / naive_seconds
    return {
        "orders": config.orders,
        "resting_at_start": resting,
        "ticks": config.ticks,
        "fired": fired,
        "engine_ticks_per_s": round(engine_rate, 1),
        "naive_ticks_per_s": round(naive_rate, 2),
        "naive_ticks_sampled": len(sample),
        "speedup": round(engine_rate / naive_rate, 1),
        "bytes_per_order": round(bytes_per_order, 1),
    }


async def _triggered_events(
    bootstrap: str,
    topic: str,
    wanted: set[str],
    received: dict[str, float],
    fired_at: dict[str, float],
    released_at: dict[str, float],
) -> None:
    consumer = AIOKafkaConsumer(**as_connection(bootstrap).aiokafka(), enable_auto_commit=False)
    await consumer.start()
    try:
        probe = AIOKafkaProducer(**as_connection(bootstrap).aiokafka())
        await probe.start()
        parts = await probe.partitions_for(topic)
        await probe.stop()
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        while wanted - received.keys():
            batch = await consumer.getmany(timeout_ms=50, max_records=5_000)
            now = time.time() * 1000
            for messages in batch.values():
                for message in messages:
                    event = OrderEvent.from_bytes(message.value or b"")
                    if event.event_type is OrderEventType.TRIGGERED and event.order_id in wanted:
                        received.setdefault(event.order_id, now)
                        fired_at.setdefault(event.order_id, float(event.details["fired_at"]))
                        # The release agent's clock when it applied the trigger.
                        released_at.setdefault(event.order_id, float(event.timestamp))
    finally:
        await consumer.stop()


async def _publish_ticks(
    producer: AIOKafkaProducer,
    topic: str,
    encoded: list[tuple[bytes, bytes]],
    rate: float | None,
    probes: list[str],
    probe_every: int,
) -> dict[str, float]:
    """Send the encoded ticks one by one at ``rate``, one tick in every ``probe_every``
    replaced by a probe that crosses the next probe order's threshold; returns when each
    probe was sent (epoch ms), by order id.

    Paced tick by tick, as a feed sends them: sending whole milliseconds' worth at a time
    through librdkafka was tried, and its bursts put a tail of several hundred ms on the
    trigger latency (the worker decodes a burst before its engine sees the probe in it)."""
    probe_sent: dict[str, float] = {}
    start = time.perf_counter()
    for i, (key, value) in enumerate(encoded):
        if rate:
            delay = start + i / rate - time.perf_counter()
            if delay > PACING_S:
                await asyncio.sleep(delay)
        n = i // probe_every - 1
        if i % probe_every == 0 and 0 <= n < len(probes):
            now = time.time() * 1000
            probe = MarketTick(
                instrument_name="BTC-PERPETUAL", timestamp=int(now), last_price=100_000.0 + n
            )
            probe_sent[probes[n]] = now
            await producer.send(topic, probe.to_bytes(), key=b"BTC-PERPETUAL")
        else:
            await producer.send(topic, value, key=key)
    await producer.flush()
    return probe_sent


async def _ticks_received(session: aiohttp.ClientSession, port: int) -> int:
    async with session.get(f"http://127.0.0.1:{port}/stats") as response:
        stats = await response.json()
    return int(stats["tick_feed"]["received"])


async def _raw_consume_rate(bootstrap: str, topic: str, n: int) -> float:
    """Baseline: a bare aiokafka consumer reading the same ticks from the beginning."""
    consumer = AIOKafkaConsumer(
        topic,
        **as_connection(bootstrap).aiokafka(),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        count = 0
        start = time.perf_counter()
        while count < n:
            batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for messages in batch.values():
                for message in messages:
                    MarketTick.from_bytes(message.value or b"")
                count += sum(len(m) for m in batch.values())
        return n / (time.perf_counter() - start)
    finally:
        await consumer.stop()


async def bench_pipeline(
    config: ConditionsConfig, on_status: Callable[[str], None]
) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="oms-bench-conditions-"))
    broker = KafkaBroker.isolated(base / "kafka", partitions=config.partitions)
    on_status("starting Kafka")
    await broker.astart(die_with_parent=True)
    services: OmsServices | None = None
    try:
        accounts = ["bench-cond"]
        settings = isolated_settings(
            base, broker.bootstrap, accounts, partitions=config.partitions, label="bcond"
        )
        write_account_secrets(settings.resolved_secrets_file, accounts)
        await ensure_topics(settings)
        services = OmsServices(settings, base / "logs")
        services.add_paper_exchange("--accounts-file", str(settings.resolved_secrets_file))
        services.add_worker(0, settings.worker.web_port)
        on_status("starting the paper exchange and a worker")
        services.start_all()
        await worker_ready(settings.worker.web_port)
        ticks_topic = settings.topic(Topic.MARKET_TICKS)
        producer = AIOKafkaProducer(**as_connection(broker.bootstrap).aiokafka(), linger_ms=5)
        await producer.start()
        try:
            # Start every instrument far from the probe thresholds.
            await producer.send_and_wait(
                ticks_topic,
                MarketTick(
                    instrument_name="BTC-PERPETUAL", timestamp=now_ms(), last_price=60_000.0
                ).to_bytes(),
                key=b"BTC-PERPETUAL",
            )
            rng = random.Random(config.seed)
            async with OrderClient("bench-cond", settings=settings, follow_events=False) as client:
                on_status(f"resting {config.pipeline_orders} conditional orders")
                background = make_conditions(config.pipeline_orders, rng)
                for conditions in background:
                    # Listed instruments only at intake; values far out of reach.
                    await client.create_conditional_order(
                        "BTC-PERPETUAL",
                        10,
                        "buy",
                        [
                            {
                                "kind": "price",
                                "instrument_name": "BTC-PERPETUAL",
                                "field": c.field.value,
                                "operator": ">=",
                                "value": 10_000_000 + c.value,
                            }
                            for c in conditions
                        ],
                        price=1000.0,
                    )
                probes = []
                for i in range(config.probes):
                    probes.append(
                        await client.create_conditional_order(
                            "BTC-PERPETUAL",
                            10,
                            "buy",
                            [f"BTC-PERPETUAL.last_price >= {100_000 + i}"],
                            price=1000.0,
                        )
                    )
            async with aiohttp.ClientSession() as session:
                while True:
                    async with session.get(
                        f"http://127.0.0.1:{settings.worker.web_port}/queue"
                    ) as response:
                        waiting = (await response.json())["waiting"]
                    if waiting >= config.pipeline_orders + config.probes:
                        break
                    await asyncio.sleep(0.5)
                received: dict[str, float] = {}
                fired_at: dict[str, float] = {}
                released_at: dict[str, float] = {}
                reader = asyncio.create_task(
                    _triggered_events(
                        broker.bootstrap,
                        settings.topic(Topic.ORDER_EVENTS),
                        set(probes),
                        received,
                        fired_at,
                        released_at,
                    )
                )
                await asyncio.sleep(1.0)
                ticks = make_ticks(config.pipeline_ticks, rng)
                # Encoded before the clock starts: the publisher shares the cores it measures.
                encoded = [
                    (
                        tick.instrument_name.encode(),
                        MarketTick(
                            instrument_name=tick.instrument_name,
                            timestamp=tick.timestamp,
                            last_price=tick.last_price,
                            mark_price=tick.mark_price,
                            index_price=tick.index_price,
                            best_bid_price=tick.best_bid_price,
                            best_ask_price=tick.best_ask_price,
                        ).to_bytes(),
                    )
                    for tick in ticks
                ]
                probe_every = max(1, len(ticks) // (config.probes + 1))
                seen_before = await _ticks_received(session, settings.worker.web_port)
                on_status(f"publishing {len(ticks)} ticks")
                start = time.perf_counter()
                probe_sent = await _publish_ticks(
                    producer, ticks_topic, encoded, config.rate, probes, probe_every
                )
                published = time.perf_counter()
                while True:
                    seen = await _ticks_received(session, settings.worker.web_port) - seen_before
                    if seen >= len(ticks):
                        break
                    if time.perf_counter() - published > 120:
                        break
                    await asyncio.sleep(0.02)
                consumed = time.perf_counter()
                try:
                    await asyncio.wait_for(reader, 30)
                except TimeoutError:
                    pass
        finally:
            await producer.stop()
        latencies = [received[p] - probe_sent[p] for p in probe_sent if p in received]
        # The part up to the engine's decision (tick through Kafka into the worker's engine).
        to_engine = [fired_at[p] - probe_sent[p] for p in probe_sent if p in fired_at]
        # The hops after it: the trigger through ``order-triggers`` to the release agent, and
        # the ``triggered`` event from there through ``order-events`` to the reader.
        to_release = [released_at[p] - fired_at[p] for p in fired_at if p in released_at]
        to_reader = [received[p] - released_at[p] for p in released_at if p in received]
        on_status("measuring the raw Kafka baseline")
        baseline = await _raw_consume_rate(broker.bootstrap, ticks_topic, len(ticks))
        pipeline_rate = seen / (consumed - start)
        return {
            "pipeline_orders": config.pipeline_orders + config.probes,
            "pipeline_ticks": len(ticks),
            "publish_rate": config.rate,
            "publish_ticks_per_s": round(len(ticks) / (published - start), 1),
            "pipeline_ticks_per_s": round(pipeline_rate, 1),
            "baseline_consume_ticks_per_s": round(baseline, 1),
            "pipeline_ratio": round(pipeline_rate / baseline, 3),
            "probes_triggered": len(latencies),
            "trigger_latency_ms": latency_summary(latencies),
            "tick_to_engine_ms": latency_summary(to_engine),
            "engine_to_release_ms": latency_summary(to_release),
            "release_to_reader_ms": latency_summary(to_reader),
        }
    finally:
        if services is not None:
            services.stop_all()
        await broker.astop()


async def run_conditions(
    config: ConditionsConfig, on_status: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the benchmark and return its figures."""
    on_status(f"engine vs naive: {config.orders} orders, {config.ticks} ticks")
    result = bench_engine(config)
    if config.pipeline:
        result.update(await bench_pipeline(config, on_status))
    return result
