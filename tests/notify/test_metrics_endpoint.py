"""The notifier's /metrics (Prometheus) over a real notifier and broker: what Grafana's
"notification success" panel reads agrees with /stats."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from oms.notify.channels import ConsoleChannel
from oms.notify.service import Notifier
from oms.settings import Settings
from oms_dev.devstack.net import free_port
from oms_dev.notify_fakes import FakeProviders
from tests.notify.conftest import (
    order_event,
    publish_events,
    store,
    wait_until,
    wecom_channel,
)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_follow_delivery_outcomes(nsettings: Settings, fakes: FakeProviders) -> None:
    port = free_port()
    settings = nsettings.model_copy(
        update={"notify": nsettings.notify.model_copy(update={"web_port": port})}
    )
    fakes.script("wecom", "errcode:93000")  # the robot fails: console is the fallback
    await store(settings, "acct-m", channels=[wecom_channel(fakes), "console"])
    notifier = Notifier(settings, console=ConsoleChannel("console", quiet=True), monitor=False)
    await notifier.start()
    try:
        await publish_events(settings, [order_event("acct-m", 1)])
        await wait_until(lambda: notifier.deliverer.notifications["delivered"] >= 1)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/plain")
                text = await resp.text()
            async with http.get(f"http://127.0.0.1:{port}/stats") as resp:
                stats = await resp.json()
    finally:
        await notifier.stop()
    samples = _samples(text)
    delivery = stats["delivery"]
    assert (
        samples[("oms_notify_notifications_total", (("outcome", "delivered"),))]
        == (delivery["notifications"]["delivered"])
    )
    assert samples[("oms_notify_success_rate", ())] == delivery["success_rate"] == 1.0
    failed = (("channel", "wecom"), ("outcome", "failed"))
    assert samples[("oms_notify_channel_attempts_total", failed)] >= 1
    assert (
        samples[("oms_notify_attempts_total", (("outcome", "failed"),))]
        == (delivery["attempts"]["failed"])
    )
    assert samples[("oms_notify_events_total", (("counter", "events"),))] >= 1
