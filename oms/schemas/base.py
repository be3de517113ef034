"""Base model and wire codec shared by every record on Kafka."""

from __future__ import annotations

import time
from typing import Any, Self

from pydantic import BaseModel, ConfigDict


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch, the unit Deribit uses."""
    return time.time_ns() // 1_000_000


class Record(BaseModel):
    """A message on a topic: strict on input, JSON on the wire."""

    model_config = ConfigDict(extra="forbid", frozen=False, use_enum_values=False)

    def to_bytes(self) -> bytes:
        """Serialize as compact JSON (the wire format of every topic)."""
        # pydantic-core writes JSON directly, without building a dict first (hot path).
        return self.__pydantic_serializer__.to_json(self)

    @classmethod
    def from_bytes(cls, data: bytes | str) -> Self:
        """Parse and validate one message; raises ``pydantic.ValidationError`` on bad input
        (invalid JSON included)."""
        return cls.model_validate_json(data)

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> Self:
        return cls.model_validate(obj)


# The venue an order goes to when it names none (and the one venue of a default setup);
# records without a ``venue`` field (written before venues existed) were at this venue too.
DEFAULT_VENUE = "deribit"

# Metadata values users may attach to orders: flat and JSON-native so they survive any sink.
MetadataValue = str | int | float | bool | None
