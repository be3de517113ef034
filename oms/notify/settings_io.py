"""Reading and writing the compacted settings/acks topics, for the SDK and the CLI."""

from __future__ import annotations

import uuid
from typing import Any

from aiokafka import AIOKafkaProducer
from pydantic import ValidationError

from oms.kafka.reading import read_topic
from oms.kafka.security import KafkaConnection
from oms.schemas import OrderEvent, OrderEventType, ReasonCode, Topic, now_ms
from oms.schemas.notify_settings import (
    EMERGENCY_TYPES,
    ChannelKind,
    NotificationAck,
    NotificationSettings,
    NotificationType,
)
from oms.settings import Settings


class NotificationSettingsError(ValueError):
    """Settings that cannot be stored: ``reason_code`` says why, the message says where."""

    def __init__(self, reason_code: ReasonCode, message: str) -> None:
        super().__init__(f"{reason_code.value}: {message}")
        self.reason_code = reason_code


_KINDS = {k.value for k in ChannelKind}


def _channel(entry: Any) -> dict[str, Any]:
    if isinstance(entry, str):
        if entry == ChannelKind.CONSOLE.value:
            return {"kind": "console", "name": "console"}
        if entry in _KINDS:
            raise NotificationSettingsError(
                ReasonCode.INVALID_SETTINGS,
                f"channel {entry!r} needs its configuration (a dict with kind={entry!r})",
            )
        raise NotificationSettingsError(ReasonCode.UNKNOWN_CHANNEL, f"unknown channel {entry!r}")
    if isinstance(entry, dict):
        kind = entry.get("kind")
        if kind not in _KINDS:
            raise NotificationSettingsError(
                ReasonCode.UNKNOWN_CHANNEL,
                f"unknown channel kind {kind!r} (known: {', '.join(sorted(_KINDS))})",
            )
        return {"name": kind, **entry}
    raise NotificationSettingsError(ReasonCode.INVALID_SETTINGS, f"bad channel entry {entry!r}")


def build_settings(
    account_id: str,
    notification_types: list[str] | None = None,
    channels: list[Any] | None = None,
    rules: list[dict[str, Any]] | None = None,
    **options: Any,
) -> NotificationSettings:
    """Validated settings from loose input; raises :class:`NotificationSettingsError`.

    The flat options ``batch_notifications`` / ``notification_delay`` (seconds) are accepted and
    become a last rule that groups every ordinary notification per type for that long."""
    batch = options.pop("batch_notifications", None)
    delay = options.pop("notification_delay", None)
    if batch:
        rules = [
            *(rules or []),
            {"name": "batch", "group_by": ["event_type"], "group_wait_s": delay or 30.0},
        ]
    data: dict[str, Any] = {"account_id": account_id, **options}
    if notification_types is not None:
        known = {t.value for t in NotificationType}
        unknown = [t for t in notification_types if t not in known]
        if unknown:
            raise NotificationSettingsError(
                ReasonCode.INVALID_SETTINGS, f"unknown notification types {unknown}"
            )
        data["notification_types"] = notification_types
    if channels is not None:
        data["channels"] = [_channel(c) for c in channels]
    if rules is not None:
        data["rules"] = rules
    data["updated_at"] = now_ms()
    try:
        return NotificationSettings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise NotificationSettingsError(
            ReasonCode.INVALID_SETTINGS, f"{where}: {first['msg']}"
        ) from exc


async def _produce(settings: Settings, topic: str, key: str, value: bytes | None) -> None:
    producer = AIOKafkaProducer(**KafkaConnection.from_settings(settings).aiokafka(acks="all"))
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=key.encode(), value=value)
    finally:
        await producer.stop()


async def publish_settings(settings: Settings, notification: NotificationSettings) -> None:
    """Store an account's settings (the compacted topic keeps the latest per account)."""
    await _produce(
        settings,
        settings.topic(Topic.NOTIFICATION_SETTINGS),
        notification.account_id,
        notification.to_bytes(),
    )


async def publish_ack(settings: Settings, alert_id: str, *, by: str = "cli") -> None:
    """Acknowledge an emergency alert."""
    ack = NotificationAck(alert_id=alert_id, by=by)
    await _produce(settings, settings.topic(Topic.NOTIFICATION_ACKS), alert_id, ack.to_bytes())


async def read_settings(settings: Settings, account_id: str) -> NotificationSettings | None:
    """The latest stored settings of an account."""
    topic = settings.topic(Topic.NOTIFICATION_SETTINGS)
    wanted = account_id.encode()
    latest: bytes | None = None
    for key, value in await read_topic(KafkaConnection.from_settings(settings), topic):
        if key == wanted:
            latest = value
    if latest is None:
        return None
    try:
        return NotificationSettings.from_bytes(latest)
    except ValidationError:
        return None


def emergency_event(
    account_id: str,
    alert_type: str,
    message: str,
    *,
    subject: str = "system:manual",
    alert_id: str | None = None,
) -> OrderEvent:
    """The order-events record of an emergency raised by hand (``send_emergency_alert``)."""
    try:
        ntype = NotificationType(alert_type)
    except ValueError:
        ntype = None
    if ntype not in EMERGENCY_TYPES:
        raise NotificationSettingsError(
            ReasonCode.INVALID_SETTINGS,
            f"alert_type must be one of {sorted(t.value for t in EMERGENCY_TYPES)}",
        )
    assert ntype is not None
    alert = alert_id or f"{ntype.value}:{subject}:{uuid.uuid4().hex[:8]}"
    at = now_ms()
    return OrderEvent(
        event_id=f"{alert}:{at}",
        event_type=OrderEventType(ntype.value),
        order_id=subject,
        account_id=account_id,
        message=message,
        timestamp=at,
        details={"alert_id": alert},
    )
