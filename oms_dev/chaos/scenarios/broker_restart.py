"""Chaos scenario ``broker-restart``: stop the Kafka broker in the middle of the flow, keep it down
a few seconds, start it again on the same data dir and ports. Nothing is restarted by hand: the
worker, position keeper, notifier and gateway must reconnect on their own and every order end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from oms_dev.chaos.config import ChaosConfig
from oms_dev.chaos.flow import FaultContext, FlowConfig, run_flow


def flow_config(config: ChaosConfig) -> FlowConfig:
    orders = config.orders or (300 if config.quick else 1_000)
    # Always a broker of its own: it is the one restarted.
    return FlowConfig(orders=orders, rate=10.0, bootstrap=None)


def restart_broker(down_s: float) -> Callable[[FaultContext], Any]:
    async def fault(ctx: FaultContext) -> dict[str, Any]:
        broker = ctx.stack.broker
        assert broker is not None, "broker-restart needs its own broker"
        await asyncio.sleep(ctx.flow_seconds / 2)
        ctx.on_status(f"broker-restart: stopping Kafka at {ctx.sent:,} orders sent")
        t0 = time.monotonic()
        await broker.astop()
        stopped_s = time.monotonic() - t0
        await asyncio.sleep(down_s)
        ctx.on_status("broker-restart: starting Kafka again")
        t1 = time.monotonic()
        await broker.astart(die_with_parent=True)
        return {
            "kind": "Kafka broker stopped and started",
            "restarts": 1,
            "down_s": down_s,
            "stop_seconds": round(stopped_s, 1),
            "start_seconds": round(time.monotonic() - t1, 1),
            "summary": f"broker down {down_s:.0f} s",
        }

    return fault


async def run(config: ChaosConfig, on_status: Callable[[str], None]) -> dict[str, Any]:
    down_s = 5.0 if config.quick else 10.0
    return await run_flow("broker-restart", flow_config(config), restart_broker(down_s), on_status)
