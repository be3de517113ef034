"""``oms bench route``: how many routing decisions per second the pure router makes.

Synthetic books (seeded) for ``venues`` venues of ``levels`` levels each, different fees and
lots; each decision splits one order (random side and amount, up to about the depth of all
venues together) with :func:`oms.orders.routing.split`, then builds the event payload that
records it (:func:`oms.orders.routing.decision_details`), as a live route would. Figures:
``decisions_per_s`` (split + payload), ``split_only_per_s``, and ``p50_us`` / ``p99_us`` of
one decision.

The end-to-end figure (the latency a route adds against a single-venue order through the
stack) is not measured: routed orders are not wired into the worker yet.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from oms.orders.routing import Direction, Level, VenueBook, decision_details, split


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
        "end_to_end": "not measured (routed orders are not wired into the worker yet)",
    }
