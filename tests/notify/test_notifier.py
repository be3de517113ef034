"""The notifier end to end over the real broker: events in, rules and grouping, channels out
to local provider fakes, a record for every attempt."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from oms.schemas import OrderEventType
from oms.settings import Settings
from oms_dev.notify_fakes import FakeProviders, FakeSmtp
from tests.notify.conftest import (
    SECRETS,
    email_channel,
    order_event,
    publish_events,
    records,
    running,
    store,
    wait_until,
    wecom_channel,
)


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS.values():
            assert secret not in text


async def test_fallback_from_wecom_to_email_records_every_attempt(
    nsettings: Settings, fakes: FakeProviders
) -> None:
    fakes.script("wecom", "errcode:93000")  # HTTP 200, non-zero errcode: a failure
    with FakeSmtp() as smtp:
        await store(nsettings, "acct-a", channels=[wecom_channel(fakes), email_channel(smtp.port)])
        async with running(nsettings) as notifier:
            await publish_events(nsettings, [order_event("acct-a", 1)])
            (mail,) = await smtp.wait_for(1)
            got = await records(nsettings, 2)
            assert notifier.deliverer.stats()["success_rate"] == 1.0
    assert "Filled BTC-PERPETUAL BUY 100" in mail["Subject"]
    assert [(r["channel"], r["status"], r["reason_code"]) for r in got] == [
        ("wecom", "failed", "provider_error"),
        ("email", "sent", None),
    ]
    assert "93000" in got[0]["error_message"]
    assert got[0]["notification_id"] == got[1]["notification_id"]
    assert_no_secret(json.dumps(got))


async def test_wecom_45009_backs_off_and_retries_on_the_same_robot(
    nsettings: Settings, fakes: FakeProviders
) -> None:
    fakes.script("wecom", "45009")
    await store(nsettings, "acct-b", channels=[wecom_channel(fakes), "console"])
    async with running(nsettings) as notifier:
        await publish_events(nsettings, [order_event("acct-b", 1)])
        got = await records(nsettings, 2)
        assert notifier.console.sent == 0  # no fallback needed
    assert [(r["channel"], r["attempt"], r["status"], r["reason_code"]) for r in got] == [
        ("wecom", 1, "failed", "rate_limited"),
        ("wecom", 2, "sent", None),
    ]
    assert len(fakes.sent("wecom")) == 1


async def test_grouping_window_turns_50_fills_into_one_digest(
    nsettings: Settings, fakes: FakeProviders
) -> None:
    await store(
        nsettings, "acct-c", channels=[wecom_channel(fakes)],
        rules=[{"name": "fills", "event_types": ["filled"], "group_by": ["event_type"],
                "group_wait_s": 1.5}],
    )  # fmt: skip
    async with running(nsettings):
        await publish_events(nsettings, [order_event("acct-c", i) for i in range(50)])
        await fakes.wait_for("wecom", 1)
        (record,) = await records(nsettings, 1)
    (sent,) = fakes.sent("wecom")
    content = sent["body"]["markdown"]["content"]
    assert "50 notifications" in content and "Filled 50" in content
    assert "… and 30 more" in content  # 20 lines (max_digest_items), then a count
    assert record["event_count"] == 50 and record["notification_type"] == "digest"


async def test_quiet_hours_hold_ordinary_notices_but_not_emergencies(
    nsettings: Settings, fakes: FakeProviders
) -> None:
    tz = ZoneInfo("Asia/Shanghai")
    now = datetime.now(UTC).astimezone(tz)
    start = (now - timedelta(minutes=30)).strftime("%H:%M")
    end = (now + timedelta(minutes=30)).strftime("%H:%M")
    await store(
        nsettings, "acct-d", channels=[wecom_channel(fakes)], timezone="Asia/Shanghai",
        language="zh", quiet_hours=[{"start": start, "end": end}],
    )  # fmt: skip
    async with running(nsettings) as notifier:
        await publish_events(nsettings, [order_event("acct-d", 1)])
        alert = order_event("acct-d", 2, OrderEventType.MARGIN_CALL)
        await publish_events(nsettings, [alert])
        await fakes.wait_for("wecom", 1)
        await wait_until(lambda: notifier.counters["held_quiet"] == 1)
        (held,) = [p for p in notifier.pendings.values() if not p.emergency]
        quiet_end = datetime.fromtimestamp(held.due_at / 1000, UTC).astimezone(tz)
    (sent,) = fakes.sent("wecom")
    assert sent["body"]["msgtype"] == "text"  # the emergency, with @mentions
    assert "【紧急】" in sent["body"]["text"]["content"]
    assert "保证金告警" in sent["body"]["text"]["content"]
    assert quiet_end.strftime("%H:%M") == end


async def test_emergency_goes_to_every_channel_and_repeats_until_acknowledged(
    nsettings: Settings, fakes: FakeProviders
) -> None:
    from oms.client import OrderClient

    with FakeSmtp() as smtp:
        await store(
            nsettings, "acct-e", channels=[wecom_channel(fakes), email_channel(smtp.port)],
            repeat_interval_s=1,
        )  # fmt: skip
        async with running(nsettings) as notifier:
            async with OrderClient("acct-e", settings=nsettings, follow_events=False) as sdk:
                alert_id = await sdk.send_emergency_alert("worker crashed", "system_error")
                await fakes.wait_for("wecom", 3)  # the alert and two repeats
                await smtp.wait_for(3)
                await sdk.acknowledge_alert(alert_id)
                await wait_until(lambda: notifier.counters["alerts_acked"] == 1)
                settled = len(fakes.sent("wecom"))
                # Two more repeat intervals: nothing new once acknowledged.
                repeats = notifier.counters["alert_repeats"]
                await asyncio.sleep(2.5)
                assert notifier.counters["alert_repeats"] == repeats
                assert len(fakes.sent("wecom")) == settled
    texts = [r["body"]["text"]["content"] for r in fakes.sent("wecom")]
    assert all(f"oms notify ack {alert_id}" in t for t in texts)
    assert "repeat #1" in texts[1] and "repeat #2" in texts[2]
    assert "worker crashed" in smtp.messages[0].get_payload()[0].get_payload()


async def test_notices_held_by_quiet_hours_become_one_digest(
    nsettings: Settings, fakes: FakeProviders
) -> None:
    now = datetime.now(UTC)
    await store(
        nsettings, "acct-q", channels=[wecom_channel(fakes)],
        quiet_hours=[{"start": (now - timedelta(minutes=30)).strftime("%H:%M"),
                      "end": (now + timedelta(minutes=30)).strftime("%H:%M")}],
    )  # fmt: skip
    async with running(nsettings) as notifier:
        events = [order_event("acct-q", i) for i in range(5)]
        events += [order_event("acct-q", 10 + i, OrderEventType.REJECTED) for i in range(3)]
        await publish_events(nsettings, events)
        await wait_until(lambda: notifier.counters["notices"] == 8)
        (held,) = notifier.pendings.values()  # default route: one digest, not 8 messages
        assert held.count == 8 and held.types == {"filled": 5, "rejected": 3}
        held.due_at = 0  # the quiet hours end
        await fakes.wait_for("wecom", 1)
    (sent,) = fakes.sent("wecom")
    assert "8 notifications" in sent["body"]["markdown"]["content"]
