"""Notification records (with the notifier's added fields) land in ClickHouse; the final
status of an attempt wins on replays."""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from oms.schemas import NotificationRecord, NotificationStatus, Topic
from oms.settings import Settings
from oms.sinks.clickhouse.client import AsyncClickHouse
from oms.sinks.writer import write_batch

from .factories import T0, batch


def record(channel: str, attempt: int, status: NotificationStatus, **kw: object) -> bytes:
    return NotificationRecord(
        notification_id="n-1", account_id="acct", notification_type="digest", channel=channel,
        attempt=attempt, status=status, created_at=T0, severity="warning", event_count=50,
        group_key="fills|event_type=filled", **kw,
    ).to_bytes()  # fmt: skip


async def test_notification_attempts_with_reasons_are_queryable(
    settings: Settings, ch: Client
) -> None:
    rows = [
        (Topic.NOTIFICATIONS, record("wecom", 1, NotificationStatus.FAILED,
                                     reason_code="rate_limited", error_message="45009")),
        (Topic.NOTIFICATIONS, record("wecom", 2, NotificationStatus.SENT, sent_at=T0 + 5)),
        (Topic.NOTIFICATIONS, record("wecom", 2, NotificationStatus.SENT, sent_at=T0 + 5)),
    ]  # fmt: skip
    await write_batch(AsyncClickHouse(ch), batch(settings, rows))
    result = ch.query(
        "SELECT channel, attempt, status, reason_code, event_count, severity FROM notifications "
        "FINAL ORDER BY attempt"
    ).result_rows
    assert result == [
        ("wecom", 1, "failed", "rate_limited", 50, "warning"),
        ("wecom", 2, "sent", None, 50, "warning"),
    ]
    rate = ch.query(
        "SELECT countIf(status = 'sent') / count() FROM notifications FINAL"
    ).result_rows[0][0]
    assert rate == 0.5
