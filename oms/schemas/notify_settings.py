"""Per-account notification settings: the contract of ``oms.notification-settings``.

One record per account (the topic is compacted, keyed by ``account_id``), written by the SDK
(``manage_notification_settings``) or ``oms notify settings`` and read by the notifier, which
applies a new record at once (no restart). Settings never carry secrets: a channel names an
entry of the secrets store in ``secret_ref`` (see :mod:`oms.notify.secrets`).

The policy model follows Prometheus Alertmanager: rules are a flat routing list (first match
wins unless ``continue_matching``), each with ``group_by`` / ``group_wait_s`` /
``group_interval_s``; ``silences`` drop matching notifications until they expire;
``quiet_hours`` are mute time intervals in the account's time zone; emergencies repeat every
``repeat_interval_s`` until acknowledged.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from oms.schemas.base import Record, now_ms


class NotificationType(StrEnum):
    """What a notification is about."""

    CREATED = "created"
    TRIGGERED = "triggered"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    NEEDS_REVIEW = "needs_review"
    RISK_STATE_CHANGED = "risk_state_changed"
    LARGE_LOSS = "large_loss"
    SYSTEM_ERROR = "system_error"
    MARGIN_CALL = "margin_call"
    POSITION_MISMATCH = "position_mismatch"
    TEST = "test"

    @property
    def is_emergency(self) -> bool:
        return self in EMERGENCY_TYPES


EMERGENCY_TYPES = frozenset(
    {
        NotificationType.LARGE_LOSS,
        NotificationType.SYSTEM_ERROR,
        NotificationType.MARGIN_CALL,
        NotificationType.POSITION_MISMATCH,
    }
)


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class ChannelKind(StrEnum):
    CONSOLE = "console"
    WECOM = "wecom"
    WXPUSHER = "wxpusher"
    EMAIL = "email"
    ALIYUN_SMS = "aliyun_sms"
    TWILIO = "twilio"


ChannelName = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_.\-]+$")]
SecretRef = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
_EMAIL = re.compile(r"^[^@\s<>,;]+@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9\-]+)+$")
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_CN_MOBILE = re.compile(r"^(?:\+?86)?1[3-9][0-9]{9}$")


def _check_emails(values: list[str]) -> list[str]:
    for value in values:
        if not _EMAIL.match(value):
            raise ValueError(f"invalid email address: {value!r}")
    return values


class _Channel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: ChannelName
    # Provider endpoint; None means the provider's public one. Tests point it at local fakes.
    base_url: str | None = Field(None, pattern=r"^https?://")


class ConsoleChannel(_Channel):
    """Writes the message to the notifier's log (the embedded default)."""

    kind: Literal[ChannelKind.CONSOLE] = ChannelKind.CONSOLE


class WeComChannel(_Channel):
    """WeCom (企业微信) group robot; ``secret_ref`` names the webhook key."""

    kind: Literal[ChannelKind.WECOM] = ChannelKind.WECOM
    secret_ref: SecretRef
    # Who is @-mentioned on emergencies (mobile numbers, or "@all").
    mention_mobiles: list[str] = Field(default_factory=lambda: ["@all"], max_length=20)


class WxPusherChannel(_Channel):
    """WeChat personal push through WxPusher; ``secret_ref`` names the app token."""

    kind: Literal[ChannelKind.WXPUSHER] = ChannelKind.WXPUSHER
    secret_ref: SecretRef
    uids: list[Annotated[str, Field(pattern=r"^UID_[A-Za-z0-9]+$")]] = Field(
        min_length=1, max_length=50
    )


class EmailChannel(_Channel):
    """SMTP (aiosmtplib); ``secret_ref`` names the SMTP password (None: no AUTH)."""

    kind: Literal[ChannelKind.EMAIL] = ChannelKind.EMAIL
    host: str = Field(min_length=1)
    port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    secret_ref: SecretRef | None = None
    sender: str
    recipients: list[str] = Field(min_length=1, max_length=50)
    # Accept a self-signed server certificate (local relays); never for the internet.
    verify_tls: bool = True

    _check_recipients = field_validator("recipients")(_check_emails)

    @field_validator("sender")
    @classmethod
    def _check_sender(cls, value: str) -> str:
        _check_emails([value])
        return value


class AliyunSmsChannel(_Channel):
    """Aliyun SendSms (mainland China); ``secret_ref`` names the AccessKey secret."""

    kind: Literal[ChannelKind.ALIYUN_SMS] = ChannelKind.ALIYUN_SMS
    access_key_id: str = Field(min_length=1)
    secret_ref: SecretRef
    sign_name: str = Field(min_length=1)
    template_code: str = Field(pattern=r"^SMS_[0-9]+$")
    phone_numbers: list[str] = Field(min_length=1, max_length=100)
    region_id: str = "cn-hangzhou"

    @field_validator("phone_numbers")
    @classmethod
    def _check_phones(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _CN_MOBILE.match(value):
                raise ValueError(f"invalid mainland China mobile number: {value!r}")
        return values


class TwilioChannel(_Channel):
    """Twilio Programmable Messaging; ``secret_ref`` names the auth token."""

    kind: Literal[ChannelKind.TWILIO] = ChannelKind.TWILIO
    account_sid: str = Field(pattern=r"^AC[0-9a-fA-F]{32}$")
    secret_ref: SecretRef
    from_number: str | None = None
    messaging_service_sid: str | None = Field(None, pattern=r"^MG[0-9a-fA-F]{32}$")
    to_numbers: list[str] = Field(min_length=1, max_length=20)

    @field_validator("to_numbers", "from_number")
    @classmethod
    def _check_e164(cls, value: list[str] | str | None) -> list[str] | str | None:
        for number in [value] if isinstance(value, str) else value or []:
            if not _E164.match(number):
                raise ValueError(f"not an E.164 number: {number!r}")
        return value

    @model_validator(mode="after")
    def _sender(self) -> TwilioChannel:
        if not self.from_number and not self.messaging_service_sid:
            raise ValueError("twilio needs from_number or messaging_service_sid")
        return self


ChannelConfig = Annotated[
    ConsoleChannel
    | WeComChannel
    | WxPusherChannel
    | EmailChannel
    | AliyunSmsChannel
    | TwilioChannel,
    Field(discriminator="kind"),
]

GroupField = Literal["account_id", "event_type", "instrument_name", "severity"]


def _default_group_by() -> list[GroupField]:
    return ["event_type"]


class Rule(BaseModel):
    """One route: which notifications it matches, where they go, how they are grouped."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("rule", min_length=1, max_length=64)
    # Empty lists match everything.
    event_types: list[NotificationType] = Field(default_factory=list)
    instruments: list[str] = Field(default_factory=list, description="fnmatch patterns")
    min_notional: float | None = Field(None, ge=0, description="USD for inverse contracts")
    severity: Severity | None = None
    channels: list[ChannelName] = Field(default_factory=list, description="empty: all")
    group_by: list[GroupField] = Field(default_factory=_default_group_by)
    group_wait_s: float = Field(0.0, ge=0, le=3600)
    group_interval_s: float = Field(0.0, ge=0, le=86400)
    # A matching notification is dropped (a route to nowhere).
    mute: bool = False
    continue_matching: bool = False


class QuietHours(BaseModel):
    """A mute time interval, in the account's time zone; ``end`` may be past midnight."""

    model_config = ConfigDict(extra="forbid")

    start: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    end: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    weekdays: list[int] = Field(default_factory=list, description="0=Monday; empty: every day")


class Silence(BaseModel):
    """Drops matching notifications until ``ends_at`` (ms). At least one matcher is required,
    so a silence can never swallow everything."""

    model_config = ConfigDict(extra="forbid")

    event_types: list[NotificationType] = Field(default_factory=list)
    instruments: list[str] = Field(default_factory=list)
    ends_at: int
    comment: str = ""

    @model_validator(mode="after")
    def _has_matcher(self) -> Silence:
        if not self.event_types and not self.instruments:
            raise ValueError("a silence needs event_types or instruments")
        return self


DEFAULT_TYPES: list[NotificationType] = [
    t for t in NotificationType if t is not NotificationType.TEST
]


def _default_types() -> list[NotificationType]:
    return list(DEFAULT_TYPES)


def _default_channels() -> list[ChannelConfig]:
    return [ConsoleChannel(name="console")]


class NotificationSettings(Record):
    """Everything the notifier needs to know about one account."""

    account_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")
    enabled: bool = True
    language: Literal["en", "zh"] = "en"
    timezone: str = "UTC"
    notification_types: list[NotificationType] = Field(default_factory=_default_types)
    # In fallback order: a notification goes to the first, then the next on failure.
    channels: list[ChannelConfig] = Field(
        default_factory=_default_channels, min_length=1, max_length=10
    )
    rules: list[Rule] = Field(default_factory=list, max_length=100)
    quiet_hours: list[QuietHours] = Field(default_factory=list, max_length=10)
    silences: list[Silence] = Field(default_factory=list, max_length=100)
    repeat_interval_s: float = Field(600.0, ge=1, le=86400)
    large_loss_threshold: float | None = Field(None, gt=0)
    margin_call_ratio: float | None = Field(None, gt=0, le=10)
    max_digest_items: int = Field(20, ge=1, le=200)
    # Overrides of the built-in templates per notification type ("digest" for digests):
    # str.format fields, see oms.notify.templates.FIELDS.
    templates: dict[str, str] = Field(default_factory=dict, max_length=32)
    updated_at: int = Field(default_factory=now_ms)

    @field_validator("timezone")
    @classmethod
    def _check_tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone: {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _check_names(self) -> NotificationSettings:
        names = [c.name for c in self.channels]
        if len(set(names)) != len(names):
            raise ValueError("channel names must be unique")
        for rule in self.rules:
            unknown = sorted(set(rule.channels) - set(names))
            if unknown:
                raise ValueError(f"rule {rule.name!r} names unknown channels: {unknown}")
        return self


class NotificationAck(Record):
    """An acknowledgement of an emergency alert, on ``oms.notification-acks`` (key: alert id)."""

    alert_id: str = Field(min_length=1, max_length=200)
    account_id: str | None = None
    by: str = "cli"
    acked_at: int = Field(default_factory=now_ms)
