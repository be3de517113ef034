"""Fixtures for notifier tests: fake providers, settings with fast retries, a notifier in this
process, and helpers to publish events and read the records back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from oms.notify.channels import ConsoleChannel
from oms.notify.secrets import write_notify_secrets
from oms.notify.service import Notifier
from oms.notify.settings_io import build_settings, publish_settings
from oms.schemas import Direction, OrderEvent, OrderEventType, OrderStatus, Topic
from oms.schemas.notify_settings import NotificationSettings
from oms.settings import NotifySettings, Settings
from oms_dev.devstack.testing import consume_json, produce_json
from oms_dev.notify_fakes import FakeProviders

WECOM_KEY = "5f0c2a9e-8b7d-4c6e-9a1b-3d2e4f6a8b0c"
SECRETS = {
    "wecom-demo": WECOM_KEY,
    "smtp-demo": "smtp-password-do-not-leak",
    "wx-demo": "AT_wxpusher_token_do_not_leak",
    "aliyun-demo": "aliyun-secret-do-not-leak",
    "twilio-demo": "twilio-token-do-not-leak",
}
FAST = NotifySettings(
    web_port=0,
    tick_interval_s=0.05,
    retry_attempts=3,
    retry_base_delay_s=0.01,
    retry_max_delay_s=0.05,
    http_timeout_s=1.0,
    wecom_per_minute=600,  # 45009 backoff hint becomes 0.1 s
    margin_check_interval_s=0.2,
)


@pytest.fixture
async def fakes() -> AsyncIterator[FakeProviders]:
    async with FakeProviders() as providers:
        providers.wecom_keys.add(WECOM_KEY)
        providers.hang_s = 3.0
        yield providers


@pytest.fixture
async def nsettings(make_settings: Callable[..., Awaitable[Settings]]) -> Settings:
    settings = await make_settings(notify=FAST)
    write_notify_secrets(settings.resolved_secrets_file, SECRETS)
    return settings


def wecom_channel(fakes: FakeProviders, name: str = "wecom") -> dict[str, Any]:
    return {"kind": "wecom", "name": name, "secret_ref": "wecom-demo", "base_url": fakes.base_url}


def email_channel(port: int, name: str = "email") -> dict[str, Any]:
    return {
        "kind": "email", "name": name, "host": "127.0.0.1", "port": port, "security": "none",
        "sender": "oms@example.com", "recipients": ["trader@example.com"],
    }  # fmt: skip


async def store(settings: Settings, account: str, **kw: Any) -> NotificationSettings:
    built = build_settings(account, **kw)
    await publish_settings(settings, built)
    return built


@contextlib.asynccontextmanager
async def running(settings: Settings, **kw: Any) -> AsyncIterator[Notifier]:
    kw.setdefault("console", ConsoleChannel("console", quiet=True))
    kw.setdefault("monitor", False)
    notifier = Notifier(settings, web_port=0, **kw)
    await notifier.start()
    try:
        yield notifier
    finally:
        await notifier.stop()


async def wait_until(predicate: Callable[[], bool], within: float = 20.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - state changed by other tasks
            await asyncio.sleep(0.05)


def order_event(
    account: str,
    n: int,
    event_type: OrderEventType = OrderEventType.FILLED,
    *,
    instrument: str = "BTC-PERPETUAL",
    amount: float = 100.0,
) -> OrderEvent:
    order_id = f"o-{account}-{n}"
    status = {
        OrderEventType.FILLED: OrderStatus.FILLED,
        OrderEventType.REJECTED: OrderStatus.REJECTED,
        OrderEventType.SUBMITTED: OrderStatus.SUBMITTED,
    }.get(event_type, OrderStatus.OPEN)
    return OrderEvent(
        event_id=f"{order_id}:2:{event_type.value}", event_type=event_type, order_id=order_id,
        account_id=account, instrument_name=instrument, status=status,
        direction=Direction.BUY, amount=amount, price=50_000.0, filled_amount=amount,
        average_price=50_000.0, version=2,
    )  # fmt: skip


async def publish_events(settings: Settings, events: list[OrderEvent]) -> None:
    await produce_json(
        settings.kafka.bootstrap,
        settings.topic(Topic.ORDER_EVENTS),
        [(e.order_id, e) for e in events],
    )


async def records(settings: Settings, count: int | None = None) -> list[dict[str, Any]]:
    """NotificationRecords on the topic (all of them now, or wait for ``count``)."""
    got = await consume_json(
        settings.kafka.bootstrap, settings.topic(Topic.NOTIFICATIONS), count, timeout_s=20
    )
    return [value for _, value in got]
