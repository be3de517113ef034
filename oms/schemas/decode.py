"""Reading one Kafka value as a record, or a typed failure with its reason code.

Every consumer of a topic reads values through :func:`decode`, so a message it cannot read
fails the same way everywhere, with the same reason code on its dead letter:

| value | reason code |
|---|---|
| ``None`` (a tombstone) | ``tombstone`` |
| ``b""`` | ``empty_payload`` |
| not JSON, not UTF-8 | ``malformed_json`` |
| JSON, but not the topic's record | ``schema_invalid`` |

On a compacted topic a tombstone may be a deletion the consumer must honour (settings of an
account removed, an acknowledgement pruned): such a consumer looks at ``None`` itself before
decoding, and says why in a comment. Everywhere else a tombstone is input nobody meant, and
is dead-lettered like any other unreadable message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeVar

import orjson
from pydantic import ValidationError

from oms.schemas.base import Record
from oms.schemas.dead_letters import DeadLetter
from oms.schemas.enums import ReasonCode

R = TypeVar("R", bound=Record)


class KafkaMessage(Protocol):
    """What a dead letter needs of a consumed message (aiokafka's ``ConsumerRecord`` and
    Faust's ``Message`` both have it)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True)
class Undecodable:
    """Why a message could not be read: a reason code and a one-line error."""

    reason_code: ReasonCode
    error: str

    def letter(
        self,
        raw: bytes | None,
        *,
        consumer: str,
        source_topic: str,
        key: bytes | None,
        partition: int | None,
        offset: int | None,
    ) -> DeadLetter:
        """The dead letter of ``raw``; its error names the ``consumer`` that refused it, since
        each consumer group that reads a topic records what it could not read."""
        return DeadLetter.for_payload(
            raw,
            source_topic=source_topic,
            reason_code=self.reason_code,
            error=f"{consumer}: {self.error}",
            key=key,
            partition=partition,
            offset=offset,
        )

    def letter_for(self, message: KafkaMessage, *, consumer: str) -> DeadLetter:
        """The dead letter of a consumed ``message``."""
        return self.letter(
            message.value,
            consumer=consumer,
            source_topic=message.topic,
            key=message.key,
            partition=message.partition,
            offset=message.offset,
        )


TOMBSTONE = Undecodable(ReasonCode.TOMBSTONE, "tombstone (null value) where a record belongs")
EMPTY = Undecodable(ReasonCode.EMPTY_PAYLOAD, "empty value (0 bytes)")


def absent(raw: bytes | None) -> Undecodable | None:
    """The failure of a value that carries nothing (a tombstone or zero bytes), else None:
    for consumers that parse bytes their own way (see :func:`failure_of`)."""
    if raw is None:
        return TOMBSTONE
    if not raw:
        return EMPTY
    return None


def decode(model: type[R], raw: bytes | None) -> R | Undecodable:
    """``raw`` as a ``model`` record, or why it is not one. Never raises on bad input."""
    missing = absent(raw)
    if missing is not None:
        return missing
    try:
        return model.from_bytes(raw)  # type: ignore[arg-type]  # absent() ruled None out
    except ValidationError as exc:
        return failure_of(exc)


def failure_of(exc: Exception) -> Undecodable:
    """The failure a parse error stands for: ``malformed_json`` when the bytes are not JSON
    (orjson's error, or pydantic's ``json_invalid``), ``schema_invalid`` for the rest."""
    if isinstance(exc, orjson.JSONDecodeError):
        return Undecodable(ReasonCode.MALFORMED_JSON, f"not valid JSON: {exc}")
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_url=False)
        if any(e["type"] == "json_invalid" for e in errors):
            message = str(errors[0]["msg"]).removeprefix("Invalid JSON: ")
            return Undecodable(ReasonCode.MALFORMED_JSON, f"not valid JSON: {message}")
        parts = [f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in errors[:3]]
        more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
        return Undecodable(ReasonCode.SCHEMA_INVALID, "; ".join(parts) + more)
    return Undecodable(ReasonCode.SCHEMA_INVALID, str(exc).splitlines()[0] if str(exc) else "")
