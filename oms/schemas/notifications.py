"""Notification records, on ``oms.notifications`` keyed by account."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from oms.schemas.base import Record, now_ms


class NotificationStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class NotificationRecord(Record):
    """One delivery attempt of one notification on one channel."""

    notification_id: str
    account_id: str
    notification_type: str
    channel: str
    priority: str = "normal"
    title: str = ""
    content: str = ""
    status: NotificationStatus = NotificationStatus.PENDING
    error_message: str | None = None
    order_id: str | None = None
    attempt: int = 1
    created_at: int = Field(default_factory=now_ms)
    sent_at: int | None = None
    # Set by the notifier; defaults keep older records valid.
    severity: str | None = None
    reason_code: str | None = None
    event_count: int = 1
    group_key: str | None = None
    alert_id: str | None = None
