"""The one decode helper every consumer reads its topic with (no Kafka needed)."""

from __future__ import annotations

import pytest

from oms.schemas import MarketTick, ReasonCode
from oms.schemas.decode import Undecodable, decode


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, ReasonCode.TOMBSTONE),
        (b"", ReasonCode.EMPTY_PAYLOAD),
        (b"   ", ReasonCode.MALFORMED_JSON),
        (b"\xff\xfe", ReasonCode.MALFORMED_JSON),
        (b"{not json", ReasonCode.MALFORMED_JSON),
        (b"null", ReasonCode.SCHEMA_INVALID),
        (b"[1]", ReasonCode.SCHEMA_INVALID),
        (b'{"instrument_name": "X"}', ReasonCode.SCHEMA_INVALID),
    ],
)
def test_each_kind_of_unreadable_value_has_its_reason(
    raw: bytes | None, reason: ReasonCode
) -> None:
    failure = decode(MarketTick, raw)
    assert isinstance(failure, Undecodable) and failure.reason_code is reason
    letter = failure.letter(
        raw, consumer="worker", source_topic="t", key=b"k", partition=1, offset=2
    )
    assert letter.reason_code is reason and letter.error.startswith("worker: ")
    assert letter.payload_size == len(raw or b"") and (letter.key, letter.source_offset) == ("k", 2)


def test_a_valid_value_is_its_record() -> None:
    tick = MarketTick(instrument_name="X", timestamp=1)
    assert decode(MarketTick, tick.to_bytes()) == tick
