"""What the notifier keeps: notices (one per source event) and pending notifications (one or
many notices to deliver together). Both are plain dicts on the state topic (orjson)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from oms.schemas.notify_settings import NotificationType, Severity


def pending_id(account_id: str, group_key: str, first_notice: str, repeat: int = 0) -> str:
    """The id of a pending notification: derived from its group and first notice (and the
    repeat number of an alert), so the same input after a restart gives the same id."""
    text = f"{account_id}\x00{group_key}\x00{first_notice}\x00{repeat}"
    return "n-" + hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


@dataclass
class Notice:
    """One thing worth telling an account about, normalised from an order event, a position
    record or an alert."""

    notice_id: str  # stable: the source event id (replays carry the same one)
    account_id: str
    type: NotificationType
    timestamp: int
    order_id: str | None = None
    instrument_name: str | None = None
    direction: str | None = None
    amount: float | None = None
    price: float | None = None
    filled_amount: float | None = None
    average_price: float | None = None
    status: str | None = None
    reason: str | None = None
    message: str | None = None
    # Emergencies: the alert this notice raises (repeats share it until acknowledged).
    alert_id: str | None = None

    @property
    def notional(self) -> float | None:
        """USD notional: the amount itself for inverse contracts (amounts are USD), amount x
        price for linear ones and options."""
        if self.amount is None:
            return None
        name = self.instrument_name or ""
        inverse = name.startswith(("BTC-", "ETH-")) and name.count("-") == 1
        if inverse:
            return abs(self.amount)
        price = self.average_price or self.price
        return abs(self.amount * price) if price else None

    def to_dict(self) -> dict[str, Any]:
        # Flat fields only: a shallow copy is enough (asdict deep-copies, 10x slower).
        data = dict(self.__dict__)
        data["type"] = self.type.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Notice:
        return cls(**{**data, "type": NotificationType(data["type"])})


@dataclass
class Pending:
    """A notification waiting to be (or being) delivered.

    ``nid`` is its idempotency base: every channel attempt is keyed ``nid|channel``.
    """

    nid: str
    account_id: str
    type: NotificationType
    severity: Severity
    emergency: bool
    rule: str
    group_key: str
    channels: list[str]  # names in fallback order; empty: all of the account's
    first_at: int
    due_at: int
    notices: list[dict[str, Any]] = field(default_factory=list)  # first max_digest_items
    # Highest source offset applied, per "topic:partition": a replayed event at or below it
    # is already counted (offsets are committed only after this is durable).
    applied: dict[str, int] = field(default_factory=dict)
    count: int = 0
    types: dict[str, int] = field(default_factory=dict)
    alert_id: str | None = None
    repeat: int = 0
    sealed: bool = False  # no more notices join once delivery starts

    def to_dict(self) -> dict[str, Any]:
        # Shallow: serialised right away by the state store (asdict deep-copies every list).
        data = dict(self.__dict__)
        data["type"] = self.type.value
        data["severity"] = self.severity.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pending:
        return cls(
            **{
                **data,
                "type": NotificationType(data["type"]),
                "severity": Severity(data["severity"]),
            }
        )

    def add(self, notice: Notice, max_items: int, source: tuple[str, int] | None = None) -> None:
        self.count += 1
        self.types[notice.type.value] = self.types.get(notice.type.value, 0) + 1
        if source is not None:
            self.applied[source[0]] = max(self.applied.get(source[0], -1), source[1])
        if len(self.notices) < max_items:
            self.notices.append(notice.to_dict())
