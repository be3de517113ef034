"""Emergencies from the exchange and from positions: a margin call when the account summary
crosses the configured maintenance-margin ratio, a large loss from a position record."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from oms.exchange.paper import PaperExchange
from oms.exchange.paper.testing import RpcClient
from oms.schemas import PositionRecord, Topic
from oms.secrets import Credentials, write_secrets_file
from oms.settings import PaperExchangeSettings, Settings
from oms_dev.devstack.testing import produce_json
from oms_dev.notify_fakes import FakeProviders
from tests.notify.conftest import running, store, wait_until, wecom_channel


@pytest.fixture
async def px() -> AsyncIterator[PaperExchange]:
    async with PaperExchange(
        settings=PaperExchangeSettings(port=0, tick_interval_s=0.2), rate_limits=False
    ) as exchange:
        yield exchange


async def test_margin_call_when_the_account_summary_crosses_the_ratio(
    nsettings: Settings, fakes: FakeProviders, px: PaperExchange
) -> None:
    from oms.notify.secrets import write_notify_secrets
    from tests.notify.conftest import SECRETS

    settings = nsettings.model_copy(
        update={"exchange": nsettings.exchange.model_copy(update={"url": px.ws_url})}
    )
    write_secrets_file(
        settings.resolved_secrets_file, {"acct-m": Credentials("acct-m", "acct-m-secret")}
    )
    write_notify_secrets(settings.resolved_secrets_file, SECRETS)  # both sections
    admin = await RpcClient.connect(px.ws_url)
    await admin.auth("acct-m", "acct-m-secret")
    try:
        await store(settings, "acct-m", channels=[wecom_channel(fakes)], margin_call_ratio=0.5)
        async with running(settings, monitor=True) as notifier:
            await wait_until(lambda: "acct-m|BTC" in notifier.monitor.last_ratio)
            assert notifier.monitor.last_ratio["acct-m|BTC"] < 0.5
            assert fakes.sent("wecom") == []
            # A big position on almost no collateral: maintenance margin > half the balance.
            await admin.result("admin/set_position", instrument_name="BTC-PERPETUAL", size=500_000)
            await admin.result("admin/set_balance", currency="BTC", balance=0.1)
            await fakes.wait_for("wecom", 1)
            assert notifier.monitor.last_ratio["acct-m|BTC"] >= 0.5
            # Still over the ratio: one alert (it repeats on its own schedule, not per poll).
            await wait_until(lambda: notifier.monitor.counters["margin_calls"] == 1)
    finally:
        await admin.close()
    text = fakes.sent("wecom")[0]["body"]["text"]["content"]
    assert "MARGIN CALL" in text and "BTC maintenance margin" in text
    assert "oms notify ack margin_call:acct-m:BTC" in text


async def test_large_loss_from_a_position_record_over_the_threshold(
    nsettings: Settings, fakes: FakeProviders
) -> None:
    await store(nsettings, "acct-l", channels=[wecom_channel(fakes)], large_loss_threshold=0.5)

    def position(i: int, realized: float, unrealized: float) -> PositionRecord:
        return PositionRecord(
            record_id=f"r{i}", account_id="acct-l", instrument_name="BTC-PERPETUAL",
            size=-1000, realized_pnl=realized, unrealized_pnl=unrealized,
        )  # fmt: skip

    async with running(nsettings) as notifier:
        topic = nsettings.topic(Topic.POSITIONS)
        small, big, bigger = position(1, -0.1, -0.2), position(2, -0.3, -0.4), position(3, -1, -1)
        await produce_json(nsettings.kafka.bootstrap, topic, [(small.key, small)])
        await wait_until(lambda: notifier.counters["positions"] == 1)
        await produce_json(nsettings.kafka.bootstrap, topic, [(big.key, big), (bigger.key, bigger)])
        await fakes.wait_for("wecom", 1)
        await wait_until(lambda: notifier.counters["positions"] == 3)
        # The second record over the threshold belongs to the alert already raised.
        assert notifier.counters["alert_already_active"] == 1
    text = fakes.sent("wecom")[0]["body"]["text"]["content"]
    assert "LARGE LOSS" in text and "loss 0.7 >= threshold 0.5" in text


async def test_kafka_unreachable_alerts_every_account_directly(
    nsettings: Settings, fakes: FakeProviders
) -> None:
    settings = nsettings.model_copy(
        update={"notify": nsettings.notify.model_copy(update={"kafka_down_alert_s": 0.3})}
    )
    await store(settings, "acct-x", channels=[wecom_channel(fakes)])
    await store(settings, "acct-y", channels=[wecom_channel(fakes)],
                notification_types=["filled"])  # fmt: skip
    async with running(settings) as notifier:
        await wait_until(lambda: "acct-y" in notifier.accounts)
        assert fakes.sent("wecom") == []  # the broker answers: no alert

        async def broker_gone() -> bool:
            return False

        notifier.watchdog.probe = broker_gone
        await fakes.wait_for("wecom", 1)
        await wait_until(lambda: notifier.counters["kafka_down_alerts"] == 1)
    (sent,) = fakes.sent("wecom")  # acct-y did not subscribe to system_error
    assert "SYSTEM ERROR" in sent["body"]["text"]["content"]
    assert "Kafka unreachable" in sent["body"]["text"]["content"]
