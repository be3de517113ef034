"""Restarts of the exchange side and of everything: the state must converge, not diverge.

* ``paper-exchange-restart``: SIGKILL the paper exchange in the middle of the flow, keep it
  down a few seconds, start it again on its data. Orders, trades, positions and id counters
  are on disk, so the exchange comes back as it was; the OMS reconnects, reconciles by label
  and every order ends as its kind expects, with positions equal to ``get_positions``.
* ``stack-restart``: stop every process (the services, the paper exchange and Kafka) in the
  middle of the flow, as an operator stopping ``make run`` would, and start them all again
  on the same data. Nothing is restarted by the flow itself: it keeps publishing through the
  broker's absence, as a trader's producer retries.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from oms_dev.chaos.config import ChaosConfig
from oms_dev.chaos.flow import FaultContext, FlowConfig, run_flow
from oms_dev.harness import paper_ready, wait_http_ok, worker_ready


def flow_config(config: ChaosConfig, *, own_broker: bool) -> FlowConfig:
    orders = config.orders or (300 if config.quick else 1_000)
    return FlowConfig(orders=orders, rate=10.0, bootstrap=None if own_broker else config.bootstrap)


def restart_paper_exchange(down_s: float) -> Callable[[FaultContext], Any]:
    async def fault(ctx: FaultContext) -> dict[str, Any]:
        paper = ctx.stack.services["paper-exchange"]
        await asyncio.sleep(ctx.flow_seconds / 2)
        ctx.on_status(f"paper-exchange-restart: SIGKILL at {ctx.sent:,} orders sent")
        paper.kill()
        await asyncio.sleep(down_s)
        t0 = time.monotonic()
        paper.start()
        await paper_ready(ctx.stack.settings)
        return {
            "kind": "paper exchange killed (SIGKILL) and started on its data",
            "restarts": 1,
            "down_s": down_s,
            "start_seconds": round(time.monotonic() - t0, 1),
            "summary": f"paper exchange down {down_s:.0f} s",
        }

    return fault


def restart_everything(down_s: float) -> Callable[[FaultContext], Any]:
    async def fault(ctx: FaultContext) -> dict[str, Any]:
        stack = ctx.stack
        broker = stack.broker
        assert broker is not None, "stack-restart needs its own broker"
        settings = stack.settings
        await asyncio.sleep(ctx.flow_seconds / 2)
        ctx.on_status(f"stack-restart: stopping everything at {ctx.sent:,} orders sent")
        t0 = time.monotonic()
        stack.services.stop_all()
        await broker.astop()
        stopped_s = time.monotonic() - t0
        await asyncio.sleep(down_s)
        ctx.on_status("stack-restart: starting everything again on its data")
        t1 = time.monotonic()
        await broker.astart(die_with_parent=True)
        stack.services.start_all()
        await paper_ready(settings)
        await worker_ready(settings.worker.web_port, within=180.0)
        await wait_http_ok(
            f"http://127.0.0.1:{settings.positions.web_port}/health",
            180.0,
            ready=lambda body: bool(body.get("ready")),
        )
        await wait_http_ok(f"http://127.0.0.1:{settings.notify.web_port}/health", 180.0)
        return {
            "kind": "every process stopped (SIGTERM), Kafka included, and started on its data",
            "restarts": 1,
            "down_s": down_s,
            "stop_seconds": round(stopped_s, 1),
            "start_seconds": round(time.monotonic() - t1, 1),
            "summary": f"whole stack down {down_s:.0f} s",
        }

    return fault


async def run_paper_exchange_restart(
    config: ChaosConfig, on_status: Callable[[str], None]
) -> dict[str, Any]:
    down_s = 3.0 if config.quick else 8.0
    return await run_flow(
        "paper-exchange-restart",
        flow_config(config, own_broker=False),
        restart_paper_exchange(down_s),
        on_status,
    )


async def run_stack_restart(
    config: ChaosConfig, on_status: Callable[[str], None]
) -> dict[str, Any]:
    down_s = 3.0 if config.quick else 8.0
    return await run_flow(
        "stack-restart", flow_config(config, own_broker=True), restart_everything(down_s), on_status
    )
