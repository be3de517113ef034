"""Which account a record of a shared output topic belongs to: the pure half of the fan-out.

No Kafka here: bytes in, an account id (or why there is none) out, so the rule is tested
without a broker and the service (:mod:`oms.fanout.service`) only moves records.

Every record of the three shared topics names its owner in ``account_id`` at its top level:

| shared topic         | kind            | record                                   |
|----------------------|-----------------|------------------------------------------|
| ``oms.order-events`` | ``events``      | :class:`~oms.schemas.OrderEvent`         |
| ``oms.positions``    | ``positions``   | :class:`~oms.schemas.PositionRecord`     |
| ``oms.notifications``| ``notifications``| :class:`~oms.schemas.NotificationRecord`|

Only the owner is read (a record is copied byte for byte, so whoever reads the account's
topic validates it as they would on the shared one): parsing every field of every order
event would cost the fan-out most of its CPU for nothing it uses.
"""

from __future__ import annotations

import re
from typing import Final

from pydantic import BaseModel, ConfigDict, ValidationError

from oms.schemas import NotificationRecord, OrderEvent, PositionRecord, ReasonCode, Record
from oms.schemas.decode import Undecodable, absent, failure_of
from oms.schemas.topics import Topic
from oms.settings import AccountTopicKind

# The shared topics the fan-out reads, the kind of per-account topic each is copied to and
# the record it carries.
SOURCES: Final[dict[Topic, tuple[AccountTopicKind, type[Record]]]] = {
    Topic.ORDER_EVENTS: ("events", OrderEvent),
    Topic.POSITIONS: ("positions", PositionRecord),
    Topic.NOTIFICATIONS: ("notifications", NotificationRecord),
}

# The field every record of SOURCES names its account in.
OWNER_FIELD: Final = "account_id"

# An account that may have topics of its own: letters, digits, '_' and '-'. No '.': a desk is
# granted its accounts by the prefix ``oms.acct.<account>.``, and with dots the prefix of
# account "a" (``oms.acct.a.``) would also cover every topic of account "a.b". The length
# keeps ``<prefix>acct.<account>.notifications`` far below Kafka's 249 characters.
_TOPIC_SAFE_ACCOUNT = re.compile(r"[A-Za-z0-9_-]{1,64}")


class _Owner(BaseModel):
    """The one field routed on; the rest of the record is skipped, not validated."""

    model_config = ConfigDict(extra="ignore")

    account_id: str


def may_have_topics(account: str) -> bool:
    """Whether ``account`` can name per-account topics without its prefix covering another
    account's (see ``_TOPIC_SAFE_ACCOUNT``)."""
    return _TOPIC_SAFE_ACCOUNT.fullmatch(account) is not None


def account_of(raw: bytes | None) -> str | Undecodable:
    """The account a record of a shared topic belongs to, or why it belongs to none (with the
    reason code its dead letter carries). Never raises on bad input.

    | value                                       | reason code       |
    |---------------------------------------------|-------------------|
    | ``None`` (a tombstone) / ``b""``            | ``tombstone`` / ``empty_payload`` |
    | not JSON                                    | ``malformed_json``  |
    | JSON without a string ``account_id``        | ``schema_invalid``  |
    | ``account_id`` that cannot name topics      | ``unknown_account`` |
    """
    missing = absent(raw)
    if missing is not None:
        return missing
    try:
        account = _Owner.model_validate_json(raw).account_id  # type: ignore[arg-type]
    except ValidationError as exc:
        return failure_of(exc)
    if not may_have_topics(account):
        return Undecodable(
            ReasonCode.UNKNOWN_ACCOUNT,
            f"account {account[:80]!r} cannot have topics of its own "
            "(1 to 64 of A-Z, a-z, 0-9, '_', '-')",
        )
    return account
