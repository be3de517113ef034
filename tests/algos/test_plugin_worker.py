"""A strategy plugin in a real worker: reloaded while an order is in flight (that order
keeps the version it started with, a new one gets the new version), then broken by a syntax
error (refused, the worker keeps serving the good version), and an order naming a strategy
nobody loaded is rejected at intake. Kafka, the paper exchange, the gateway and one worker
as separate processes; the plugin is a file the worker is pointed at by its strategies file.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from oms.client import OrderClient
from oms.schemas import OrderEventType, ReasonCode
from oms.settings import Settings
from oms_dev.harness import OmsServices, paper_admin
from tests.integration.test_pipeline import ACCOUNTS, make_settings, start_stack

pytestmark = pytest.mark.kafka

# Moves a resting limit order up by OFFSET once, ``tagger_delay`` s after it was created.
PLUGIN = """
from pydantic import BaseModel, Field

from oms.algos.strategy import Plan, StrategyBase
from oms.schemas import CommandType, OrderRequest, OrderStatus

OFFSET = {offset}


class TaggerParams(BaseModel):
    delay: float = Field(0.0, alias="tagger_delay", ge=0)


class Tagger(StrategyBase):
    params_model = TaggerParams

    def on_report(self, order, ctx):
        asked = f"tagger.{{order.order_id}}"
        if order.status is not OrderStatus.OPEN or asked in order.seen_request_ids:
            return Plan.done()
        return Plan(wake_at=order.created_at + int(ctx.params.delay * 1000))

    def on_timer(self, order, ctx):
        return Plan.done(
            OrderRequest(
                command=CommandType.AMEND,
                request_id=f"tagger.{{order.order_id}}",
                account_id=order.account_id,
                order_id=order.order_id,
                price=order.price + OFFSET,
            )
        )
"""


class PluginStack:
    def __init__(self, settings: Settings, services: OmsServices, client: OrderClient) -> None:
        self.settings = settings
        self.services = services
        self.client = client
        self.plugin = settings.data_dir / "tagger.py"

    async def strategies(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.settings.worker.web_port}/stats"
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            body: dict[str, Any] = await resp.json()
        found: dict[str, Any] = body["table"]["strategies"]
        return found

    async def until(
        self, check: Callable[[dict[str, Any]], bool], within: float = 20.0
    ) -> dict[str, Any]:
        """The worker's strategies once ``check`` holds for them."""
        deadline = time.monotonic() + within
        while True:
            state = await self.strategies()
            if check(state):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"strategies never got there: {state}")
            await asyncio.sleep(0.1)

    def write(self, offset: float, extra: str = "") -> None:
        self.plugin.write_text(PLUGIN.format(offset=offset) + extra)


@pytest.fixture(scope="module")
async def plugin_stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[PluginStack]:
    base = make_settings(tmp_path_factory.mktemp("plugins"), kafka_bootstrap)
    config = base.data_dir / "strategies.json"
    settings = base.model_copy(
        update={
            "strategies": base.strategies.model_copy(
                update={"config_file": config.resolve(), "reload_interval_s": 0.3}
            ),
            "lifecycle": base.lifecycle.model_copy(update={"check_interval": 0.2}),
        }
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    plugin = settings.data_dir / "tagger.py"
    plugin.write_text(PLUGIN.format(offset=100.0))
    config.write_text(json.dumps({"tagger": {"source": f"{plugin.resolve()}:Tagger"}}))
    services = await start_stack(settings, sink=False)
    client = OrderClient(ACCOUNTS[0], settings=settings)
    await client.start()
    try:
        yield PluginStack(settings, services, client)
    finally:
        await client.close()
        services.stop_all()


async def test_a_plugin_reloads_in_a_running_worker(plugin_stack: PluginStack) -> None:
    stack, client = plugin_stack, plugin_stack.client
    ticker = await paper_admin(stack.settings, "public/ticker", instrument_name="BTC-PERPETUAL")
    base = float(ticker["best_bid_price"]) - 3_000  # rests far below the market

    async def submit(delay: float, algo: str = "tagger") -> str:
        return await client.submit_advanced_order(
            "BTC-PERPETUAL", 10, "buy", price=base, metadata={"algo": algo, "tagger_delay": delay}
        )

    v1 = (await stack.until(lambda s: "tagger" in s["current"]))["current"]["tagger"]
    early = await submit(delay=4.0)  # still waiting for its timer across the reload
    opened = await client.wait_for_event(early, lambda e: e.event_type is OrderEventType.OPEN)
    assert opened.order is not None and opened.order.metadata["algo_version"] == v1

    stack.write(offset=200.0)
    state = await stack.until(lambda s: s["current"]["tagger"] != v1)
    v2 = state["current"]["tagger"]
    assert state["held"][f"tagger@{v1}"] == 1  # the early order holds the old version
    late = await submit(delay=0.0)

    amended = {}
    for order_id in (late, early):
        event = await client.wait_for_event(
            order_id, lambda e: e.event_type is OrderEventType.AMENDED, timeout=30
        )
        assert event.order is not None
        amended[order_id] = (event.price, event.order.metadata["algo_version"])
    assert amended == {early: (base + 100, v1), late: (base + 200, v2)}

    # A syntax error: refused, the worker stays up and keeps serving v2.
    stack.write(offset=300.0, extra="\ndef broken(:\n")
    state = await stack.until(lambda s: "tagger" in s["refused"])
    assert "SyntaxError" in state["refused"]["tagger"] and state["current"]["tagger"] == v2
    after = await submit(delay=0.0)
    event = await client.wait_for_event(
        after, lambda e: e.event_type is OrderEventType.AMENDED, timeout=30
    )
    assert event.price == base + 200

    unknown = await submit(delay=0.0, algo="vwap")
    rejected = await client.wait_for_event(unknown)
    assert rejected.event_type is OrderEventType.REJECTED
    assert rejected.reason_code is ReasonCode.UNKNOWN_STRATEGY

    for order_id in (early, late, after):
        await client.cancel_order(order_id)
        await client.wait_for_event(order_id, lambda e: e.event_type is OrderEventType.CANCELLED)
    # Nobody holds v1 any more: dropped.
    await stack.until(lambda s: f"tagger@{v1}" not in s["held"])
