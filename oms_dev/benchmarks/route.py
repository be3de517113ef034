"""``oms bench route``: how many routing decisions per second the pure router makes.

In process (:func:`run_route_bench`): synthetic books (seeded) for ``venues`` venues of
``levels`` levels each, different fees and lots; each decision splits one order (random side
and amount, up to about the depth of all venues together) with
:func:`oms.orders.routing.split`, then builds the event payload that records it
(:func:`oms.orders.routing.decision_details`), as a live route would. Figures:
``decisions_per_s`` (split + payload), ``split_only_per_s``, and ``p50_us`` / ``p99_us`` of
one decision.

Through the stack (:func:`run_route_e2e`): Kafka, two paper exchanges (two venues, the
second reached natively or through ccxt), gateway and worker, default signed mode; one
account sends, one at a time and interleaved, a market order at one venue and a routed
market order of the same amount across both venues, and times each from publish to its
filled event as the SDK sees it. ``route_adds_ms`` is the difference of the medians: what a
route costs on top of a single-venue order (the books fetched, the decision, the children's
extra hop through intake, their fills folded into the parent).
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oms.client import OrderClient
from oms.kafka.admin import ensure_topics
from oms.orders.routing import Direction, Level, VenueBook, decision_details, split
from oms.schemas import OrderEvent, OrderEventType
from oms.settings import VenueKind
from oms_dev.benchmarks.e2e import latency_summary
from oms_dev.devstack.net import free_port
from oms_dev.harness import (
    OmsServices,
    isolated_settings,
    start_bench_broker,
    with_second_venue,
    worker_ready,
    write_account_secrets,
)


@dataclass(frozen=True)
class RouteConfig:
    decisions: int = 20_000
    venues: int = 3
    levels: int = 10
    seed: int = 11


def make_books(config: RouteConfig, rng: random.Random) -> list[tuple[VenueBook, VenueBook]]:
    """Per venue, (asks, bids) around a mid near 50 000, each venue off by a little."""
    out = []
    for v in range(config.venues):
        mid = 50_000 + rng.uniform(-20, 20)
        fee = rng.choice((0.0, 0.0002, 0.0005))
        lot = rng.choice((1.0, 10.0))
        asks = tuple(
            Level(round(mid + 0.5 * (i + 1), 1), lot * rng.randint(1, 50))
            for i in range(config.levels)
        )
        bids = tuple(
            Level(round(mid - 0.5 * (i + 1), 1), lot * rng.randint(1, 50))
            for i in range(config.levels)
        )
        name = f"venue{v}"
        out.append(
            (
                VenueBook(name, asks, taker_fee=fee, lot=lot, tick=0.5),
                VenueBook(name, bids, taker_fee=fee, lot=lot, tick=0.5),
            )
        )
    return out


def run_route_bench(config: RouteConfig) -> dict[str, Any]:
    """Time ``config.decisions`` routing decisions (in process, one thread)."""
    rng = random.Random(config.seed)
    books = make_books(config, rng)
    asks = [b[0] for b in books]
    bids = [b[1] for b in books]
    depth = sum(lv.amount for b in asks for lv in b.levels)
    orders: list[tuple[Direction, float]] = [
        ("buy" if rng.random() < 0.5 else "sell", float(rng.randint(1, int(depth))))
        for _ in range(config.decisions)
    ]
    start = time.perf_counter()
    for direction, amount in orders:
        split(direction, amount, asks if direction == "buy" else bids)
    split_s = time.perf_counter() - start
    samples: list[float] = []
    allocated = 0.0
    start = time.perf_counter()
    for direction, amount in orders:
        t0 = time.perf_counter()
        side = asks if direction == "buy" else bids
        plan = split(direction, amount, side)
        decision_details(direction, amount, side, plan)
        samples.append(time.perf_counter() - t0)
        allocated += plan.allocated
    total_s = time.perf_counter() - start
    samples.sort()
    return {
        "decisions": config.decisions,
        "venues": config.venues,
        "levels": config.levels,
        "decisions_per_s": round(config.decisions / total_s),
        "split_only_per_s": round(config.decisions / split_s),
        "p50_us": round(samples[len(samples) // 2] * 1e6, 1),
        "p99_us": round(samples[int(len(samples) * 0.99)] * 1e6, 1),
        "allocated_share": round(allocated / sum(a for _, a in orders), 4),
    }


@dataclass(frozen=True)
class RouteE2EConfig:
    # Orders of each kind (single-venue and routed), interleaved.
    orders: int = 40
    amount: float = 100.0
    instrument: str = "BTC-PERPETUAL"
    # How the second venue is reached: natively, or through the ccxt adapter.
    second_kind: VenueKind = "deribit"
    warmup: int = 3
    bootstrap: str | None = None
    timeout_s: float = 30.0


SECOND_VENUE = "second"
_ENDED = {OrderEventType.FILLED, OrderEventType.CANCELLED, OrderEventType.REJECTED}


async def run_route_e2e(
    config: RouteE2EConfig, on_status: Callable[[str], None] = print
) -> dict[str, Any]:
    """Single-venue against routed orders through a two-venue stack (see the module doc)."""
    base = Path(tempfile.mkdtemp(prefix="oms-bench-route-"))
    broker, bootstrap = await start_bench_broker(base, 2, config.bootstrap, on_status)
    services: OmsServices | None = None
    client: OrderClient | None = None
    try:
        account = "route-0"
        second_port = free_port()
        settings = with_second_venue(
            isolated_settings(base, bootstrap, [account], partitions=2, label="route"),
            SECOND_VENUE,
            second_port,
            kind=config.second_kind,
        )
        write_account_secrets(settings.resolved_secrets_file, [account])
        await ensure_topics(settings)
        services = OmsServices(settings, base / "logs")
        services.add_paper_exchange("--accounts-file", str(settings.resolved_secrets_file))
        services.add_second_paper_exchange(second_port)
        services.add_gateway()
        services.add_worker(0, settings.worker.web_port)
        on_status("starting two paper exchanges, gateway, worker")
        services.start_all()
        await worker_ready(settings.worker.web_port, within=300)
        client = OrderClient(account, settings=settings)
        await client.start()
        routed_meta = {"algo": "sor", "sor_venues": f"deribit,{SECOND_VENUE}"}

        async def timed(index: int, metadata: dict[str, Any] | None) -> tuple[float, OrderEvent]:
            # Alternate sides so the account's position stays near flat.
            direction = "buy" if index % 2 == 0 else "sell"
            assert client is not None
            started = time.perf_counter()
            order_id = await client.submit_advanced_order(
                config.instrument, config.amount, direction, order_type="market",
                metadata=metadata,
            )  # fmt: skip
            event = await client.wait_for_event(
                order_id, lambda e: e.event_type in _ENDED, timeout=config.timeout_s
            )
            return (time.perf_counter() - started) * 1000, event

        on_status(f"warm-up ({config.warmup} of each)")
        for i in range(config.warmup):
            await timed(i, None)
            await timed(i, routed_meta)
        single: list[float] = []
        routed: list[float] = []
        outcomes: dict[str, dict[str, int]] = {"single": {}, "routed": {}}
        on_status(f"timing {config.orders} single-venue and {config.orders} routed orders")
        for i in range(config.orders):
            for kind, metadata, into in (
                ("single", None, single),
                ("routed", routed_meta, routed),
            ):
                ms, event = await timed(i, metadata)
                name = event.event_type.value
                outcomes[kind][name] = outcomes[kind].get(name, 0) + 1
                if event.event_type is OrderEventType.FILLED:
                    into.append(ms)
        single_ms = latency_summary(single)
        routed_ms = latency_summary(routed)
        return {
            "orders_per_kind": config.orders,
            "amount": config.amount,
            "second_venue": config.second_kind,
            "outcomes": outcomes,
            "single_venue_ms": single_ms,
            "routed_ms": routed_ms,
            "route_adds_ms": {
                "p50": round(routed_ms["p50"] - single_ms["p50"], 2),
                "p99": round(routed_ms["p99"] - single_ms["p99"], 2),
            },
        }
    finally:
        if client is not None:
            await client.close()
        if services is not None:
            services.stop_all()
        if broker is not None:
            await broker.astop()
