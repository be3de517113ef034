"""The notifier as a real process, SIGKILLed with notifications sent, grouped and still
arriving: after a restart nothing is lost and nothing is sent twice."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp

from oms.schemas import OrderEventType
from oms.settings import Settings
from oms_dev.devstack.net import free_port
from oms_dev.harness import OmsServices, wait_http_ok
from oms_dev.notify_fakes import FakeProviders
from tests.notify.conftest import (
    SECRETS,
    order_event,
    publish_events,
    records,
    store,
    wecom_channel,
)


def got_orders(contents: list[str]) -> list[str]:
    return [m for c in contents for m in re.findall(r"o-acct-k-\d+", c)]


async def _stats(port: int) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/stats") as resp:
            data: dict[str, Any] = await resp.json()
            return data


async def _wait_stats(port: int, key: str, at_least: int) -> None:
    async with asyncio.timeout(30):
        while (await _stats(port))["counters"].get(key, 0) < at_least:  # noqa: ASYNC110
            await asyncio.sleep(0.1)


async def test_sigkill_and_restart_lose_nothing_and_send_nothing_twice(
    nsettings: Settings, fakes: FakeProviders, tmp_path: Path
) -> None:
    await store(
        nsettings, "acct-k", channels=[wecom_channel(fakes)],
        # Fills are grouped; rejections take the default route (one message per order).
        rules=[{"name": "fills", "event_types": ["filled"], "group_wait_s": 2.0}],
    )  # fmt: skip
    port = free_port()
    services = OmsServices(nsettings, tmp_path / "logs")
    notifier = services.add_notifier(port)
    notifier.start()
    try:
        await wait_http_ok(f"http://127.0.0.1:{port}/health", 60, lambda b: b["ready"])
        rejected = [order_event("acct-k", i, OrderEventType.REJECTED) for i in range(10)]
        await publish_events(nsettings, rejected)
        await fakes.wait_for("wecom", 10)
        # 20 fills wait in their group (2 s) when the notifier dies.
        await publish_events(nsettings, [order_event("acct-k", 100 + i) for i in range(20)])
        await _wait_stats(port, "committed", 30)
        notifier.kill()
        # More news while it is down.
        late = [order_event("acct-k", 200 + i, OrderEventType.REJECTED) for i in range(5)]
        await publish_events(nsettings, late)
        notifier.start()
        await wait_http_ok(f"http://127.0.0.1:{port}/health", 60, lambda b: b["ready"])
        await fakes.wait_for("wecom", 16)
        # The replayed tail of the log must not produce anything more.
        await _wait_stats(port, "committed", 5)
        got = await records(nsettings, 16)
    finally:
        services.stop_all()
    contents = [r["body"]["markdown"]["content"] for r in fakes.sent("wecom")]
    assert len(contents) == 16, services.diagnostics()
    digests = [c for c in contents if "20 notifications" in c]
    assert len(digests) == 1  # the group held at the kill, sent once after the restart
    # One message per rejected order, each exactly once: 10 before the kill, 5 during it.
    singles = [c for c in contents if "Rejected" in c and "notifications" not in c]
    assert len(singles) == 15
    assert sorted(got_orders(singles)) == sorted(
        [e.order_id for e in rejected] + [e.order_id for e in late]
    )
    assert sum(1 for r in got if r["status"] == "sent") == 16
    assert notifier.starts == 2


async def test_sms_in_flight_at_a_crash_is_never_sent_again(
    nsettings: Settings, fakes: FakeProviders, tmp_path: Path
) -> None:
    fakes.aliyun_keys["LTAI-test"] = SECRETS["aliyun-demo"]
    fakes.hang_s = 5.0  # outlives the kill below
    fakes.script("aliyun", "hang")  # the provider got the request; we never learn the outcome
    sms = {
        "kind": "aliyun_sms", "name": "sms", "access_key_id": "LTAI-test",
        "secret_ref": "aliyun-demo", "sign_name": "OMS", "template_code": "SMS_123456",
        "phone_numbers": ["13800001111"], "base_url": fakes.base_url,
    }  # fmt: skip
    slow = nsettings.model_copy(
        update={"notify": nsettings.notify.model_copy(update={"http_timeout_s": 10.0})}
    )
    await store(slow, "acct-s", channels=[sms, wecom_channel(fakes)])
    port = free_port()
    services = OmsServices(slow, tmp_path / "logs")
    notifier = services.add_notifier(port)
    notifier.start()
    try:
        await wait_http_ok(f"http://127.0.0.1:{port}/health", 60, lambda b: b["ready"])
        await publish_events(slow, [order_event("acct-s", 1, OrderEventType.REJECTED)])
        async with asyncio.timeout(30):
            while fakes.arrivals["aliyun"] < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        notifier.kill()
        notifier.start()
        await wait_http_ok(f"http://127.0.0.1:{port}/health", 60, lambda b: b["ready"])
        await fakes.wait_for("wecom", 1)  # falls back to the next channel instead
        got = await records(slow, 2)
    finally:
        services.stop_all()
    assert fakes.arrivals["aliyun"] == 1  # never texted twice
    assert [(r["channel"], r["status"], r["reason_code"]) for r in got] == [
        ("sms", "failed", "outcome_unknown"),
        ("wecom", "sent", None),
    ]
