"""A real stack (Kafka, paper exchange, gateway, one worker) for the auth and risk tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from oms.client import OrderClient
from oms.kafka.admin import ensure_topics
from oms.kafka.security import KafkaConnection
from oms.schemas import OrderEvent, Topic
from oms.secrets import QueryTokens, load_kafka_users, load_secrets_file
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


def stored_secrets(settings: Settings, signing_keys: dict[str, dict[str, str]]) -> list[str]:
    """Every secret of the stack: signing keys, exchange client secrets, Kafka passwords,
    the query endpoint's tokens."""
    found = [s for account in signing_keys.values() for s in account.values()]
    found += [c.client_secret for c in load_secrets_file(settings.resolved_secrets_file).values()]
    found += list(load_kafka_users(settings.resolved_secrets_file).values())
    tokens = QueryTokens(settings.desks, settings.resolved_secrets_file)
    found += [t for t in (*map(tokens.for_desk, settings.desks), tokens.operator) if t]
    return found


async def visible_texts(settings: Settings, services: OmsServices, *extra_logs: Path) -> list[str]:
    """What anyone could read: every service's log, ``extra_logs``, and the records of the
    order events and dead letters."""
    texts = [services[name].log_path.read_text(errors="replace") for name in services.processes]
    texts += [path.read_text(errors="replace") for path in extra_logs if path.exists()]
    kafka = KafkaConnection.from_settings(settings)
    for topic in (Topic.ORDER_EVENTS, Topic.DEAD_LETTERS):
        consumer = AIOKafkaConsumer(
            settings.topic(topic), **kafka.aiokafka(auto_offset_reset="earliest", group_id=None)
        )
        await consumer.start()
        try:
            batch = await consumer.getmany(timeout_ms=3_000)
            texts += [m.value.decode(errors="replace") for ms in batch.values() for m in ms]
        finally:
            await consumer.stop()
    return texts


def assert_no_secret(texts: list[str], secrets: list[str]) -> None:
    """No secret appears in any of ``texts``."""
    assert secrets, "nothing to look for"
    for secret in secrets:
        assert all(secret not in text for text in texts), "a secret leaked"
