"""Routing policy as pure functions: event mapping, rule matching, silences, quiet hours in
the account's time zone, templates in both languages."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from oms.notify.model import Notice, Pending
from oms.notify.rules import notice_from_event, quiet_until, route
from oms.notify.settings_io import build_settings
from oms.notify.templates import TemplateError, render
from oms.schemas import OrderEventType, OrderStatus
from oms.schemas.notify_settings import NotificationType, Severity
from tests.notify.conftest import order_event

SH = ZoneInfo("Asia/Shanghai")


def ms(local: str, tz: ZoneInfo = SH) -> int:
    return int(datetime.fromisoformat(local).replace(tzinfo=tz).timestamp() * 1000)


def test_order_events_map_to_notification_types_and_created_is_announced_once() -> None:
    submitted = order_event("a", 1, OrderEventType.SUBMITTED)
    notice = notice_from_event(submitted)
    assert notice is not None and notice.type is NotificationType.CREATED
    submitted.previous_status = OrderStatus.QUEUED  # already announced when it queued
    assert notice_from_event(submitted) is None
    assert notice_from_event(order_event("a", 2, OrderEventType.DUPLICATE)) is None
    alert = notice_from_event(order_event("a", 3, OrderEventType.MARGIN_CALL))
    assert alert is not None and alert.alert_id == "margin_call:o-a-3"


def test_first_matching_rule_wins_unless_continue_and_mute_drops() -> None:
    settings = build_settings(
        "a",
        channels=["console"],
        rules=[
            {"name": "eth-muted", "instruments": ["ETH-*"], "mute": True},
            {"name": "big", "event_types": ["filled"], "min_notional": 10_000,
             "severity": "warning", "continue_matching": True},
            {"name": "fills", "event_types": ["filled"], "group_by": ["instrument_name"]},
        ],
    )  # fmt: skip
    now = ms("2026-11-24T12:00")
    big = notice_from_event(order_event("a", 1, amount=20_000))
    small = notice_from_event(order_event("a", 2, amount=100))
    eth = notice_from_event(order_event("a", 3, instrument="ETH-PERPETUAL"))
    assert big and small and eth
    assert [(r.rule, r.severity) for r in route(settings, big, now)] == [
        ("big", Severity.WARNING),
        ("fills", Severity.INFO),
    ]
    assert [r.rule for r in route(settings, small, now)] == ["fills"]
    assert route(settings, eth, now) == []
    assert route(settings, small, now)[0].group_key == "fills|instrument_name=BTC-PERPETUAL"


def test_silences_expire_and_unsubscribed_types_are_dropped() -> None:
    now = ms("2026-11-24T12:00")
    settings = build_settings(
        "a", notification_types=["filled", "margin_call"],
        silences=[{"event_types": ["filled"], "ends_at": now + 60_000}],
    )  # fmt: skip
    fill = notice_from_event(order_event("a", 1))
    rejected = notice_from_event(order_event("a", 2, OrderEventType.REJECTED))
    assert fill and rejected
    assert route(settings, fill, now) == []
    assert route(settings, fill, now + 60_000) != []
    assert route(settings, rejected, now) == []


@pytest.mark.parametrize(
    ("local", "until"),
    [
        ("2026-11-24T23:30", "2026-11-25T07:00"),  # Tuesday evening
        ("2026-11-25T06:59", "2026-11-25T07:00"),  # Wednesday morning, Tuesday's night
        ("2026-11-25T07:00", None),
        ("2026-11-24T12:00", None),
        ("2026-11-28T23:30", None),  # Saturday: not a listed weekday
        ("2026-11-29T06:00", None),  # Sunday morning belongs to Saturday night
    ],
)
def test_quiet_hours_over_midnight_in_the_account_time_zone(local: str, until: str | None) -> None:
    settings = build_settings(
        "a", timezone="Asia/Shanghai",
        quiet_hours=[{"start": "22:00", "end": "07:00", "weekdays": [0, 1, 2, 3, 4]}],
    )  # fmt: skip
    assert quiet_until(settings, ms(local)) == (ms(until) if until else None)


def _pending(notices: list[Notice], emergency: bool = False) -> Pending:
    p = Pending(
        nid="n-1", account_id="a", type=notices[0].type, severity=Severity.INFO,
        emergency=emergency, rule="r", group_key="g", channels=[], first_at=0, due_at=0,
        alert_id="margin_call:x" if emergency else None,
    )  # fmt: skip
    for n in notices:
        p.add(n, 20)
    return p


def test_templates_in_chinese_with_local_time_and_custom_lines() -> None:
    notice = notice_from_event(order_event("a", 1))
    assert notice is not None
    notice.timestamp = ms("2026-11-24T09:30:05", ZoneInfo("UTC"))
    zh = build_settings("a", language="zh", timezone="Asia/Shanghai")
    message = render(_pending([notice]), zh, "k")
    assert "11-24 17:30:05 已成交 BTC-PERPETUAL 买入 100" in message.text
    custom = build_settings("a", templates={"filled": "{side} {amount} {instrument} @ {price}"})
    assert "BUY 100 BTC-PERPETUAL @ 50,000" in render(_pending([notice]), custom, "k").text
    broken = build_settings("a", templates={"filled": "{price:%}"})
    with pytest.raises(TemplateError):
        render(_pending([notice]), broken, "k")


def test_delivery_markers_past_retention_are_forgotten() -> None:
    from oms.notify.state import StateStore
    from oms.settings import Settings

    state = StateStore(None, "", "state")  # type: ignore[arg-type]
    now = 1_800_000_000_000
    old = now - 8 * 86_400_000  # retention: 7 days
    state.data = {
        "d:n-1|wecom": {"status": "sent", "at": old},
        "d:n-2|wecom": {"status": "sent", "at": now},
        "p:n-1": {"done": True, "at": old},
        "p:n-3": {"nid": "n-3", "first_at": old},  # still pending: kept
        "a:alert": {"alert_id": "alert", "next_at": old},  # active alert: kept
    }
    cutoff = now - int(Settings().notify.dedupe_retention_s * 1000)
    assert state.forget_finished(cutoff) == 2
    assert set(state.data) == {"d:n-2|wecom", "p:n-3", "a:alert"}


def test_seed_batch_options_become_a_grouping_rule() -> None:
    settings = build_settings("a", batch_notifications=True, notification_delay=60)
    (rule,) = settings.rules
    assert rule.group_wait_s == 60 and rule.group_by == ["event_type"]
    fill = notice_from_event(order_event("a", 1))
    assert fill is not None
    assert route(settings, fill, 0)[0].group_wait_s == 60


def test_writing_exchange_credentials_keeps_channel_secrets(tmp_path: object) -> None:
    from pathlib import Path

    from oms.notify.secrets import NotifySecrets, write_notify_secrets
    from oms.secrets import Credentials, write_secrets_file

    path = Path(str(tmp_path)) / "secrets.json"
    write_notify_secrets(path, {"wecom-desk": "key-value"})
    write_secrets_file(path, {"demo": Credentials("id", "secret")})
    assert NotifySecrets(path).get("wecom-desk") == "key-value"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
