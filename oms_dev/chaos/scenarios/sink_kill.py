"""Chaos scenario ``sink-kill``: the ClickHouse sink is SIGKILLed while it inserts, again and again.

A paced mixed order flow runs through a paper stack with the sink storing it in small
batches (so it inserts all the time). Every ``kill_every_s`` after the sink is back at
work, the scenario polls the sink's ``/health`` until it reports an insert in flight and
SIGKILLs the sink's process group right then, then starts it again. Afterwards the sink
catches up and every record of the run is read back from the Kafka topics and compared
with ClickHouse: no row missing, none extra, none doubled after ``FINAL`` (raw duplicates
from replays are expected and reported), every ``orders`` row at its newest version.
The order flow and its audit are the suite's (:mod:`oms_dev.chaos.flow`,
:mod:`oms_dev.chaos.verdict`). Run it with ``oms chaos run --scenario sink-kill [--quick]``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from oms_dev.chaos.config import ChaosConfig
from oms_dev.chaos.flow import PacedFlow
from oms_dev.chaos.scenarios.sink_common import (
    SinkScenarioConfig,
    SinkStack,
    compare_clickhouse_with_kafka,
    open_stack,
    sink_result,
)

NAME = "sink-kill"
QUICK: dict[str, Any] = {"orders": 80, "rate": 10.0, "kills": 2, "kill_every_s": 1.0}


@dataclass
class SinkKillConfig(SinkScenarioConfig):
    QUICK: ClassVar[dict[str, Any]] = QUICK

    kills: int = 6
    kill_every_s: float = 3.0  # after the restarted sink has inserted again
    aim_within_s: float = 5.0  # how long to wait for an insert in flight before killing
    batch_size: int = 20  # small batches: the sink inserts several times a second
    flush_interval_s: float = 0.2


async def _insert_in_flight(stack: SinkStack, within: float) -> dict[str, Any] | None:
    """Poll ``/health`` until it shows an insert running; its body, or None on timeout."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        health = await stack.health()
        if health and health.get("inserting"):
            return health
        await asyncio.sleep(0.005)
    return None


async def _kill_loop(
    stack: SinkStack, config: SinkKillConfig, on_status: Callable[[str], None]
) -> list[dict[str, Any]]:
    kills: list[dict[str, Any]] = []
    for n in range(1, config.kills + 1):
        await asyncio.sleep(config.kill_every_s)
        health = await _insert_in_flight(stack, config.aim_within_s)
        stack.sink.kill()
        on_status(
            f"SIGKILL {n}/{config.kills} of the sink"
            + (" during an insert" if health else " (no insert seen in flight)")
        )
        t0 = time.monotonic()
        await stack.start_sink()
        await stack.wait_flushing()  # back in the group and inserting
        kills.append(
            {
                "during_insert": health is not None,
                "flushes_before": (health or {}).get("flushes"),
                "back_inserting_after_s": round(time.monotonic() - t0, 1),
            }
        )
    return kills


async def run(config: ChaosConfig, on_status: Callable[[str], None]) -> dict[str, Any]:
    """The suite's entry: ``sink-kill`` at its full or ``--quick`` size."""
    return await run_sink_kill(SinkKillConfig.for_suite(config), on_status)


async def run_sink_kill(config: SinkKillConfig, on_status: Callable[[str], None]) -> dict[str, Any]:
    """Run the ``sink-kill`` scenario; its result (``ok`` when every check held)."""
    t0 = time.monotonic()
    flow_config = config.flow_config()
    stack = await open_stack(
        flow_config,
        batch_size=config.batch_size,
        flush_interval_s=config.flush_interval_s,
        on_status=on_status,
    )
    try:
        on_status("starting the sink")
        await stack.start_sink()
        await stack.wait_flushing()
        flow = PacedFlow(stack.stack, flow_config, f"sinkkill-{uuid.uuid4().hex[:6]}")
        await flow.start()
        try:
            on_status(f"publishing {config.orders} orders at {config.rate}/s, killing the sink")
            publishing = asyncio.create_task(flow.publish())
            try:
                kills = await _kill_loop(stack, config, on_status)
            finally:
                await publishing
            on_status("waiting for every order to end")
            all_terminal = await flow.wait_all_ended(time.monotonic() + config.timeout_s)
            await asyncio.sleep(2.0)  # a late second terminal event would show meanwhile
        finally:
            await flow.stop()
        orders = await flow.audit()
        on_status("comparing ClickHouse with the Kafka topics")
        group = f"{stack.settings.worker.app_id}-sink"
        comparison = await compare_clickhouse_with_kafka(stack.settings, group, config.catch_up_s)
        health = await stack.health() or {}
        during = sum(k["during_insert"] for k in kills)
        checks = {
            "sink_killed_every_time": len(kills) == config.kills,
            "a_kill_landed_during_an_insert": during > 0,
            "every_order_terminal": all_terminal,
            "sink_caught_up": bool(comparison["caught_up"]),
            "sink_alive_at_the_end": stack.sink.alive,
        }
        return sink_result(
            NAME,
            orders=orders,
            requests=config.orders,
            comparison=comparison,
            faults={
                "kind": "SIGKILL sink during inserts",
                "sigkill_sink": len(kills),
                "sigkill_during_insert": during,
                "kill_every_s": config.kill_every_s,
                "batch_size": config.batch_size,
                "flush_interval_s": config.flush_interval_s,
                "summary": f"{len(kills)} sink kills, {during} during an insert",
            },
            seconds=time.monotonic() - t0,
            checks=checks,
            details={
                "kills": kills,
                "sink_starts": stack.sink.starts,
                "sink_health_at_end": {
                    k: health.get(k)
                    for k in ("status", "flushes", "insert_failures", "commit_failures", "rows")
                },
                "logs": str(stack.base / "logs"),
            },
        )
    finally:
        await stack.stop()
