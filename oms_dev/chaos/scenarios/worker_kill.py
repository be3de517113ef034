"""Chaos scenario ``worker-kill``: SIGKILL the worker every 20 s during a 5-minute mixed flow
(``--quick``: about 60 s). Each kill is a crash with no chance to clean up; the worker is started
again at once and must resume from its changelogs and the committed offsets: no order lost, none
sent twice to the exchange."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from oms_dev.chaos.config import ChaosConfig
from oms_dev.chaos.flow import FaultContext, FlowConfig, run_flow

KILL_EVERY_S = 20.0


def flow_config(config: ChaosConfig) -> FlowConfig:
    seconds = 60.0 if config.quick else 300.0
    orders = config.orders or (240 if config.quick else 1_000)
    return FlowConfig(orders=orders, rate=orders / seconds, bootstrap=config.bootstrap)


def kill_every(interval_s: float) -> Callable[[FaultContext], Any]:
    """The fault: kill the worker every ``interval_s`` until the flow is published."""

    async def fault(ctx: FaultContext) -> dict[str, Any]:
        kills = 0
        restart_s: list[float] = []
        next_kill = time.monotonic() + interval_s
        while not ctx.published.is_set():
            try:
                await asyncio.wait_for(ctx.published.wait(), max(0.0, next_kill - time.monotonic()))
                break
            except TimeoutError:
                pass
            ctx.on_status(f"worker-kill: SIGKILL #{kills + 1} at {ctx.sent:,} orders sent")
            ctx.stack.worker.kill()
            kills += 1
            restart_s.append(round(await ctx.stack.restart_worker(), 1))
            next_kill = max(next_kill + interval_s, time.monotonic() + 5.0)
        return {
            "kind": "SIGKILL worker",
            "every_s": interval_s,
            "kills": kills,
            "restart_seconds": restart_s,
            "summary": f"{kills} kill{'s' if kills != 1 else ''}",
        }

    return fault


async def run(config: ChaosConfig, on_status: Callable[[str], None]) -> dict[str, Any]:
    return await run_flow("worker-kill", flow_config(config), kill_every(KILL_EVERY_S), on_status)
