"""A real stack (Kafka, paper exchange, gateway, one worker) for the auth and risk tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oms.client import OrderClient
from oms.kafka.admin import ensure_topics
from oms.schemas import OrderEvent
from oms.settings import Settings
from oms_dev.devstack.net import free_port
from oms_dev.harness import OmsServices, isolated_settings, worker_ready, write_account_secrets


def stack_settings(
    tmp: Path, bootstrap: str, names: list[str], label: str, **risk: Any
) -> Settings:
    settings = isolated_settings(tmp, bootstrap, names, partitions=4, label=label)
    return settings.model_copy(
        update={
            "risk": settings.risk.model_copy(update=risk),
            "worker": settings.worker.model_copy(update={"recovery_check_interval_s": 1.0}),
        }
    )


def write_keys(settings: Settings, accounts: list[str]) -> dict[str, dict[str, str]]:
    """Exchange credentials and one signing key per account; returns the signing keys."""
    return write_account_secrets(settings.resolved_secrets_file, accounts)


async def start_services(settings: Settings, workers: int = 1) -> OmsServices:
    await ensure_topics(settings)
    services = OmsServices(settings, settings.data_dir / "logs")
    services.add_paper_exchange("--accounts-file", str(settings.resolved_secrets_file))
    services.add_gateway()
    ports = [settings.worker.web_port] + [free_port() for _ in range(workers - 1)]
    for index, port in enumerate(ports):
        services.add_worker(index, port)
    services.start_all()
    try:
        for port in ports:
            await worker_ready(port, within=120)
    except BaseException:
        print(services.diagnostics())
        services.stop_all()
        raise
    return services


async def wait_event(
    client: OrderClient,
    order_id: str,
    predicate: Callable[[OrderEvent], bool] | None = None,
    timeout: float = 30.0,  # noqa: ASYNC109
) -> OrderEvent:
    return await client.wait_for_event(order_id, predicate, timeout=timeout)


async def settle(seconds: float) -> None:
    await asyncio.sleep(seconds)
