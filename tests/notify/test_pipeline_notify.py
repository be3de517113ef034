"""Real orders through the real pipeline (paper exchange, gateway, worker as processes) reach
a trader's WeCom robot: created, then filled, from the worker's own events."""

from __future__ import annotations

from pathlib import Path

import pytest

from oms.client import OrderClient
from oms.kafka.admin import ensure_topics
from oms.notify.secrets import write_notify_secrets
from oms_dev.harness import OmsServices, isolated_settings, worker_ready, write_account_secrets
from oms_dev.notify_fakes import FakeProviders
from tests.notify.conftest import FAST, SECRETS, running, store, wait_until, wecom_channel

pytestmark = pytest.mark.kafka


def texts_of(fakes: FakeProviders) -> list[str]:
    return [r["body"]["markdown"]["content"] for r in fakes.sent("wecom")]


async def test_a_market_order_is_notified_created_then_filled(
    kafka_bootstrap: str, tmp_path: Path, fakes: FakeProviders
) -> None:
    settings = isolated_settings(tmp_path, kafka_bootstrap, ["trader"], partitions=2, label="n")
    settings = settings.model_copy(update={"notify": FAST})
    write_account_secrets(settings.resolved_secrets_file, ["trader"])
    write_notify_secrets(settings.resolved_secrets_file, SECRETS)
    await ensure_topics(settings)
    await store(settings, "trader", channels=[wecom_channel(fakes)], language="zh")
    services = OmsServices(settings, tmp_path / "logs")
    services.add_paper_exchange("--accounts-file", str(settings.resolved_secrets_file))
    services.add_gateway()
    services.add_worker(0, settings.worker.web_port)
    services.start_all()
    try:
        await worker_ready(settings.worker.web_port, within=120)
        async with running(settings):
            async with OrderClient("trader", settings=settings) as client:
                order_id = await client.submit_advanced_order(
                    "BTC-PERPETUAL", 100, "buy", order_type="market"
                )
                await client.wait_for_event(order_id)
            await wait_until(lambda: any("已成交" in t for t in texts_of(fakes)), 30)
    finally:
        services.stop_all()
    texts = texts_of(fakes)
    # Delivered concurrently: any order; each state exactly once.
    assert sum("订单已创建 BTC-PERPETUAL 买入 100" in t for t in texts) == 1, texts
    assert sum("已成交 BTC-PERPETUAL 买入 100" in t for t in texts) == 1, texts
    assert all(f"#{order_id}" in t for t in texts)
