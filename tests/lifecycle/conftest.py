"""One real stack for the lifecycle tests: Kafka, the paper exchange, gateway, one worker
and the ClickHouse sink as separate processes, with short lifecycle intervals.

Per-order policies (metadata) let every test use the same stack; tests that set the paper
exchange's fault knobs reset them afterwards (``faults`` fixture).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from oms.client import OrderClient
from oms.schemas import OrderEvent, OrderEventType
from oms.settings import Settings
from oms_dev.harness import OmsServices, paper_admin
from tests.integration.test_pipeline import ACCOUNTS, make_settings, start_stack

ACCOUNT = ACCOUNTS[0]
# The account with Deribit's cancel-on-disconnect enabled.
COD_ACCOUNT = ACCOUNTS[3]
OUTCOMES = frozenset(
    {
        OrderEventType.OPEN,
        OrderEventType.FILLED,
        OrderEventType.PARTIALLY_FILLED,
        OrderEventType.CANCELLED,
        OrderEventType.REJECTED,
        OrderEventType.NEEDS_REVIEW,
    }
)


def lifecycle_settings(settings: Settings) -> Settings:
    """Short intervals so every rule shows within seconds."""
    return settings.model_copy(
        update={
            "lifecycle": settings.lifecycle.model_copy(
                update={
                    "monitoring_interval": 1.0,
                    "check_interval": 0.3,
                    "retry_attempts": 2,
                    "retry_delay": 0.05,
                    "retry_max_delay": 0.2,
                    "cancel_on_disconnect_accounts": [COD_ACCOUNT],
                    "metrics_sample_interval": 1.0,
                }
            )
        }
    )


@dataclass
class LifecycleStack:
    settings: Settings
    services: OmsServices
    client: OrderClient

    async def admin(self, method: str, **params: Any) -> Any:
        """Call a paper-exchange method over HTTP (admin/* need no auth)."""
        return await paper_admin(self.settings, method, **params)

    async def ticker(self, instrument: str = "BTC-PERPETUAL") -> dict[str, Any]:
        return await self.admin("public/ticker", instrument_name=instrument)

    async def method_count(self, method: str) -> int:
        stats = await self.admin("admin/get_stats", include_labels=False)
        return int(stats.get("methods", {}).get(method, 0))

    async def exchange_orders(self, label: str) -> list[dict[str, Any]]:
        return list(await self.admin("admin/get_orders_by_label", label=label))

    async def worker_summary(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.settings.worker.web_port}/metrics/summary"
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            body: dict[str, Any] = await resp.json()
            return body

    async def wait(
        self,
        order_id: str,
        *types: OrderEventType,
        timeout: float = 30.0,  # noqa: ASYNC109
    ) -> OrderEvent:
        wanted = frozenset(types) or OUTCOMES
        return await self.client.wait_for_event(
            order_id, lambda e: e.event_type in wanted, timeout=timeout
        )


@pytest.fixture(scope="package")
async def lc_stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LifecycleStack]:
    settings = lifecycle_settings(
        make_settings(tmp_path_factory.mktemp("lifecycle"), kafka_bootstrap)
    )
    services = await start_stack(settings)
    client = OrderClient(ACCOUNT, settings=settings)
    await client.start()
    try:
        yield LifecycleStack(settings, services, client)
    finally:
        await client.close()
        services.stop_all()


@pytest.fixture
async def stack(lc_stack: LifecycleStack) -> AsyncIterator[LifecycleStack]:
    """The shared stack, with the exchange's fault knobs reset after the test."""
    yield lc_stack
    await lc_stack.admin("admin/set_faults")
