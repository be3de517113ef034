"""Dead letters: input we could not process, kept with the reason, never dropped."""

from __future__ import annotations

from pydantic import Field

from oms.schemas.base import Record, now_ms
from oms.schemas.enums import ReasonCode

# Keep dead letters small enough for any broker default (1 MB) while preserving evidence.
MAX_PAYLOAD_CHARS = 64_000


class DeadLetter(Record):
    """A message that failed parsing or validation, on ``oms.dead-letters``."""

    source_topic: str
    source_partition: int | None = None
    source_offset: int | None = None
    key: str | None = None
    reason_code: ReasonCode
    error: str
    payload: str = Field(
        description="original bytes decoded as UTF-8 with replacement (empty for a tombstone)"
    )
    payload_size: int = 0
    truncated: bool = False
    received_at: int = Field(default_factory=now_ms)

    @classmethod
    def for_payload(
        cls,
        raw: bytes | None,
        *,
        source_topic: str,
        reason_code: ReasonCode,
        error: str,
        key: bytes | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> DeadLetter:
        """The dead letter of ``raw`` (``None``: a tombstone, kept as an empty payload; the
        reason code tells it from zero bytes)."""
        raw = raw or b""
        text = raw.decode("utf-8", errors="replace")
        return cls(
            source_topic=source_topic,
            source_partition=partition,
            source_offset=offset,
            key=key.decode("utf-8", errors="replace")[:256] if key else None,
            reason_code=reason_code,
            error=error[:2_000],
            payload=text[:MAX_PAYLOAD_CHARS],
            payload_size=len(raw),
            truncated=len(text) > MAX_PAYLOAD_CHARS,
        )
