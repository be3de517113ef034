"""Routing policy: which notices become notifications, with what severity, to which
channels, grouped how, and when (silences, quiet hours).

Semantics follow Prometheus Alertmanager where they fit events rather than firing alerts:

* rules are a flat routing list; the first matching rule decides (``continue_matching``
  lets later rules match too, like ``continue: true``); no match means the default route:
  every channel in order, sent at once;
* ``group_by`` / ``group_wait_s`` / ``group_interval_s`` as in Alertmanager: the first notice
  of a group waits ``group_wait_s`` for others; the next batch of the same group is sent no
  sooner than ``group_interval_s`` after the previous one;
* silences drop matching notices until they end; quiet hours (mute time intervals, in the
  account's time zone) hold notifications and deliver them as one digest when they end;
* emergencies (large_loss, system_error, margin_call, position_mismatch) skip rules, quiet
  hours and grouping, go to every channel at once, and repeat until acknowledged.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from oms.notify.model import Notice
from oms.schemas import OrderEvent, OrderEventType, OrderStatus, PositionRecord
from oms.schemas.notify_settings import (
    NotificationSettings,
    NotificationType,
    QuietHours,
    Rule,
    Severity,
)

# Order events and the notification type they raise (None: not notified).
_TYPE_OF_EVENT: dict[OrderEventType, NotificationType] = {
    OrderEventType.ACCEPTED: NotificationType.CREATED,
    OrderEventType.SUBMITTED: NotificationType.CREATED,
    OrderEventType.QUEUED: NotificationType.CREATED,
    OrderEventType.WAITING: NotificationType.CREATED,
    OrderEventType.TRIGGERED: NotificationType.TRIGGERED,
    OrderEventType.PARTIALLY_FILLED: NotificationType.PARTIALLY_FILLED,
    OrderEventType.FILLED: NotificationType.FILLED,
    OrderEventType.CANCELLED: NotificationType.CANCELLED,
    OrderEventType.REJECTED: NotificationType.REJECTED,
    OrderEventType.EXPIRED: NotificationType.EXPIRED,
    OrderEventType.NEEDS_REVIEW: NotificationType.NEEDS_REVIEW,
    OrderEventType.RISK_STATE_CHANGED: NotificationType.RISK_STATE_CHANGED,
    OrderEventType.LARGE_LOSS: NotificationType.LARGE_LOSS,
    OrderEventType.MARGIN_CALL: NotificationType.MARGIN_CALL,
    OrderEventType.SYSTEM_ERROR: NotificationType.SYSTEM_ERROR,
    OrderEventType.POSITION_MISMATCH: NotificationType.POSITION_MISMATCH,
}
# An order is "created" once: a submit after it waited or queued was announced already.
_ANNOUNCED = frozenset({OrderStatus.QUEUED, OrderStatus.WAITING})

DEFAULT_SEVERITY: dict[NotificationType, Severity] = {
    NotificationType.REJECTED: Severity.WARNING,
    NotificationType.EXPIRED: Severity.WARNING,
    NotificationType.NEEDS_REVIEW: Severity.WARNING,
    NotificationType.RISK_STATE_CHANGED: Severity.WARNING,
    **{t: Severity.CRITICAL for t in NotificationType if t.is_emergency},
}


def notice_from_event(event: OrderEvent) -> Notice | None:
    """The notice an order event raises, or None if it is not worth one."""
    ntype = _TYPE_OF_EVENT.get(event.event_type)
    if ntype is None:
        return None
    if event.event_type is OrderEventType.SUBMITTED and event.previous_status in _ANNOUNCED:
        return None
    alert_id = None
    if ntype.is_emergency:
        # One alert per subject and kind: a re-raise while unacknowledged does not stack.
        alert_id = str(event.details.get("alert_id") or f"{ntype.value}:{event.order_id}")
    return Notice(
        notice_id=event.event_id,
        account_id=event.account_id,
        type=ntype,
        timestamp=event.timestamp,
        order_id=event.order_id,
        instrument_name=event.instrument_name,
        direction=event.direction.value if event.direction else None,
        amount=event.amount,
        price=event.price,
        filled_amount=event.filled_amount,
        average_price=event.average_price,
        status=event.status.value if event.status else None,
        reason=event.reason_code.value if event.reason_code else None,
        message=event.message,
        alert_id=alert_id,
    )


def position_loss(record: PositionRecord) -> float:
    """Loss of a position record (positive number), realized plus unrealized."""
    pnl = record.realized_pnl + (record.unrealized_pnl or 0.0)
    return -pnl if pnl < 0 else 0.0


def notice_from_position(record: PositionRecord, settings: NotificationSettings) -> Notice | None:
    """A large_loss notice when the position's loss is over the account's threshold."""
    threshold = settings.large_loss_threshold
    if threshold is None:
        return None
    loss = position_loss(record)
    if loss < threshold:
        return None
    return Notice(
        notice_id=f"position:{record.record_id}",
        account_id=record.account_id,
        type=NotificationType.LARGE_LOSS,
        timestamp=record.timestamp,
        order_id=record.order_id,
        instrument_name=record.instrument_name,
        amount=record.size,
        price=record.average_price,
        message=f"loss {loss:,.8g} >= threshold {threshold:,.8g} "
        f"(realized {record.realized_pnl:,.8g}, unrealized {record.unrealized_pnl or 0:,.8g})",
        alert_id=f"large_loss:{record.account_id}|{record.instrument_name}",
    )


@dataclass(frozen=True)
class Route:
    """Where and how one notice goes."""

    rule: str
    severity: Severity
    channels: tuple[str, ...]  # empty: every channel of the account, in order
    group_key: str
    group_wait_s: float
    group_interval_s: float
    emergency: bool = False


def _matches(rule: Rule, notice: Notice) -> bool:
    if rule.event_types and notice.type not in rule.event_types:
        return False
    if rule.instruments and not any(
        fnmatch.fnmatchcase(notice.instrument_name or "", p) for p in rule.instruments
    ):
        return False
    if rule.min_notional is not None:
        notional = notice.notional
        if notional is None or notional < rule.min_notional:
            return False
    return True


def silenced(settings: NotificationSettings, notice: Notice, now_ms: int) -> bool:
    """True if an active silence matches the notice."""
    for s in settings.silences:
        if s.ends_at <= now_ms:
            continue
        if s.event_types and notice.type not in s.event_types:
            continue
        if s.instruments and not any(
            fnmatch.fnmatchcase(notice.instrument_name or "", p) for p in s.instruments
        ):
            continue
        return True
    return False


def _group_key(rule: Rule, notice: Notice, severity: Severity) -> str:
    values = {
        "account_id": notice.account_id,
        "event_type": notice.type.value,
        "instrument_name": notice.instrument_name or "",
        "severity": severity.value,
    }
    return "|".join([rule.name, *(f"{f}={values[f]}" for f in rule.group_by)])


def route(settings: NotificationSettings, notice: Notice, now_ms: int) -> list[Route]:
    """The routes of a notice for an account (empty: not notified)."""
    if not settings.enabled or notice.type not in settings.notification_types:
        return []
    if silenced(settings, notice, now_ms):
        return []
    if notice.type.is_emergency:
        return [
            Route(
                rule="emergency",
                severity=Severity.CRITICAL,
                channels=(),
                group_key=f"alert={notice.alert_id}",
                group_wait_s=0.0,
                group_interval_s=0.0,
                emergency=True,
            )
        ]
    routes: list[Route] = []
    for rule in settings.rules:
        if not _matches(rule, notice):
            continue
        if not rule.mute:
            severity = rule.severity or DEFAULT_SEVERITY.get(notice.type, Severity.INFO)
            routes.append(
                Route(
                    rule=rule.name,
                    severity=severity,
                    channels=tuple(rule.channels),
                    group_key=_group_key(rule, notice, severity),
                    group_wait_s=rule.group_wait_s,
                    group_interval_s=rule.group_interval_s,
                )
            )
        if not rule.continue_matching:
            return routes
    if routes or any(_matches(r, notice) for r in settings.rules):
        return routes
    severity = DEFAULT_SEVERITY.get(notice.type, Severity.INFO)
    return [
        Route(
            rule="default",
            severity=severity,
            channels=(),
            group_key=f"default|event_type={notice.type.value}|order={notice.order_id}",
            group_wait_s=0.0,
            group_interval_s=0.0,
        )
    ]


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def _quiet_end(q: QuietHours, local: datetime) -> datetime | None:
    """End of the quiet interval containing ``local``, or None."""
    start, end = _minutes(q.start), _minutes(q.end)
    minute = local.hour * 60 + local.minute
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if start == end:
        return None
    if start < end:
        if start <= minute < end and (not q.weekdays or local.weekday() in q.weekdays):
            return day + timedelta(minutes=end)
        return None
    # Over midnight: the evening part belongs to today's weekday, the morning to yesterday's.
    if minute >= start and (not q.weekdays or local.weekday() in q.weekdays):
        return day + timedelta(days=1, minutes=end)
    if minute < end and (not q.weekdays or (local.weekday() - 1) % 7 in q.weekdays):
        return day + timedelta(minutes=end)
    return None


def quiet_until(settings: NotificationSettings, now_ms: int) -> int | None:
    """If ``now_ms`` falls in the account's quiet hours: when they end (ms); else None."""
    if not settings.quiet_hours:
        return None
    local = datetime.fromtimestamp(now_ms / 1000, UTC).astimezone(ZoneInfo(settings.timezone))
    ends = [e for q in settings.quiet_hours if (e := _quiet_end(q, local)) is not None]
    if not ends:
        return None
    return int(max(ends).timestamp() * 1000)
