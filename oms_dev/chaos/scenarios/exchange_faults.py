"""Chaos scenario ``exchange-faults``: the paper exchange cuts every connection every 3 s, answers
10% of order requests with 10028 (rate limited) and holds 1% of replies back 5 s (the request is
executed, the answer comes late), from the first order until every order has ended."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from oms_dev.chaos.config import ChaosConfig
from oms_dev.chaos.flow import FaultContext, FlowConfig, run_flow


@dataclass
class ExchangeFaults:
    drop_every_s: float = 3.0
    rate_limit_fraction: float = 0.1
    delay_fraction: float = 0.01
    delay_s: float = 5.0
    seed: int = 7


def flow_config(config: ChaosConfig) -> FlowConfig:
    orders = config.orders or (300 if config.quick else 1_000)
    return FlowConfig(orders=orders, rate=50.0, bootstrap=config.bootstrap)


def exchange_faults(faults: ExchangeFaults) -> Callable[[FaultContext], Any]:
    async def fault(ctx: FaultContext) -> dict[str, Any]:
        await ctx.paper_admin("admin/set_faults", **faults.__dict__)
        try:
            await ctx.stop.wait()
            stats = await ctx.paper_admin("admin/get_stats", include_labels=False)
        finally:
            await ctx.paper_admin("admin/set_faults")  # all off
        fired: dict[str, int] = stats.get("faults_fired", {})
        summary = (
            f"{fired.get('drops', 0):,} drops cutting {fired.get('connections_dropped', 0):,} "
            f"connections, {fired.get('rate_limited', 0):,} rate limited, "
            f"{fired.get('delayed', 0):,} replies delayed {faults.delay_s:g} s"
        )
        return {
            "kind": "paper exchange faults",
            **faults.__dict__,
            "fired": fired,
            "summary": summary,
        }

    return fault


async def run_exchange_faults(
    flow: FlowConfig, faults: ExchangeFaults, on_status: Callable[[str], None]
) -> dict[str, Any]:
    return await run_flow("exchange-faults", flow, exchange_faults(faults), on_status)


async def run(config: ChaosConfig, on_status: Callable[[str], None]) -> dict[str, Any]:
    return await run_exchange_faults(flow_config(config), ExchangeFaults(), on_status)
