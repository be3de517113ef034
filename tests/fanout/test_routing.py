"""Which account a shared record belongs to, and why a record belongs to none."""

from __future__ import annotations

import orjson
import pytest

from oms.fanout.routing import OWNER_FIELD, SOURCES, account_of, may_have_topics
from oms.schemas import (
    NotificationRecord,
    OrderEvent,
    OrderEventType,
    PositionRecord,
    ReasonCode,
    Record,
)
from oms.schemas.decode import Undecodable
from oms.schemas.topics import Topic
from oms.settings import Settings


def _records(account: str) -> list[Record]:
    return [
        OrderEvent(
            event_id="e-1", event_type=OrderEventType.OPEN, order_id="o-1", account_id=account
        ),
        PositionRecord(
            record_id="p-1", account_id=account, instrument_name="BTC-PERPETUAL", size=10
        ),
        NotificationRecord(
            notification_id="n-1", account_id=account, notification_type="fill", channel="console"
        ),
    ]


@pytest.mark.parametrize("record", _records("desk-a_1"), ids=lambda r: type(r).__name__)
def test_every_shared_record_is_routed_to_its_account(record: Record) -> None:
    assert account_of(record.to_bytes()) == "desk-a_1"


def test_the_sources_are_the_three_shared_output_topics_and_name_their_owner() -> None:
    """Every record type read names its account in the field routed on, as a required
    string: no record of these topics can be valid and ownerless."""
    assert set(SOURCES) == {Topic.ORDER_EVENTS, Topic.POSITIONS, Topic.NOTIFICATIONS}
    assert {kind for kind, _ in SOURCES.values()} == {"events", "positions", "notifications"}
    for _, model in SOURCES.values():
        field = model.model_fields[OWNER_FIELD]
        assert field.is_required() and field.annotation is str, model


def test_the_record_is_not_otherwise_validated() -> None:
    """Copies are byte for byte: only the owner is read (the account topic's reader checks
    the rest as on the shared topic)."""
    raw = orjson.dumps({"account_id": "a1", "anything": [1, 2], "event_type": "not-a-type"})
    assert account_of(raw) == "a1"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, ReasonCode.TOMBSTONE),
        (b"", ReasonCode.EMPTY_PAYLOAD),
        (b"{not json", ReasonCode.MALFORMED_JSON),
        (b"\xff\xfe", ReasonCode.MALFORMED_JSON),
        (b"[1, 2]", ReasonCode.SCHEMA_INVALID),
        (orjson.dumps({"order_id": "o-1"}), ReasonCode.SCHEMA_INVALID),
        (orjson.dumps({"account_id": None}), ReasonCode.SCHEMA_INVALID),
        (orjson.dumps({"account_id": 7}), ReasonCode.SCHEMA_INVALID),
        (orjson.dumps({"account_id": ""}), ReasonCode.UNKNOWN_ACCOUNT),
        (orjson.dumps({"account_id": "a.b"}), ReasonCode.UNKNOWN_ACCOUNT),
        (orjson.dumps({"account_id": "a:b"}), ReasonCode.UNKNOWN_ACCOUNT),
        (orjson.dumps({"account_id": "x" * 65}), ReasonCode.UNKNOWN_ACCOUNT),
        (orjson.dumps({"account_id": "../etc"}), ReasonCode.UNKNOWN_ACCOUNT),
    ],
)
def test_records_without_a_usable_account_say_why(raw: bytes | None, reason: ReasonCode) -> None:
    failure = account_of(raw)
    assert isinstance(failure, Undecodable)
    assert failure.reason_code is reason
    assert failure.error


def test_no_account_prefix_covers_another_accounts_topics() -> None:
    """A desk reads its accounts through the prefix ``oms.acct.<account>.``: that prefix must
    match the account's own topics and no other account's that may exist."""
    settings = Settings()
    accounts = ["a", "ab", "a-b", "a_b", "A", "b"]
    assert all(may_have_topics(a) for a in accounts)
    assert not may_have_topics("a.b")  # would fall under the prefix of "a"
    topics = {a: [settings.account_topic(a, k) for k, _ in SOURCES.values()] for a in accounts}
    for account in accounts:
        prefix = settings.account_topic(account, "events").removesuffix("events")
        covered = {a for a, names in topics.items() if any(n.startswith(prefix) for n in names)}
        assert covered == {account}
