"""What every agent gets from the worker, as plain callables (no Faust types)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from oms.schemas import DeadLetter, OrderEvent, ReasonCode, Record
from oms.schemas.decode import Undecodable, decode

R = TypeVar("R", bound=Record)


@dataclass(kw_only=True)
class Outputs:
    """The outputs of an agent (events, dead letters) and its counters for ``/stats``."""

    emit: Callable[[OrderEvent], Awaitable[None]]
    dead_letter: Callable[[DeadLetter], Awaitable[None]]
    source_topic: str
    counters: dict[str, int] = field(default_factory=dict)

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    async def decode(
        self,
        model: type[R],
        raw: bytes | None,
        *,
        key: bytes | None,
        partition: int | None,
        offset: int | None,
    ) -> R | None:
        """The ``model`` record in ``raw``, or None once ``raw`` (a tombstone, an empty value,
        not JSON, not the record) is on the dead letters with its reason. None of this agent's
        topics is compacted: a tombstone on them is never a deletion."""
        record = decode(model, raw)
        if isinstance(record, Undecodable):
            self.count("dead_letters")
            self.count(f"undecodable_{record.reason_code.value}")
            await self.dead_letter(
                record.letter(
                    raw,
                    consumer="worker",
                    source_topic=self.source_topic,
                    key=key,
                    partition=partition,
                    offset=offset,
                )
            )
            return None
        return record

    async def reject_raw(
        self,
        raw: bytes | None,
        reason_code: ReasonCode,
        error: str,
        *,
        key: bytes | None,
        partition: int | None,
        offset: int | None,
    ) -> None:
        """Send an input message we cannot process to the dead letters, with its reason."""
        self.count("dead_letters")
        await self.dead_letter(
            DeadLetter.for_payload(
                raw or b"",
                source_topic=self.source_topic,
                reason_code=reason_code,
                error=error,
                key=key,
                partition=partition,
                offset=offset,
            )
        )


@dataclass(kw_only=True)
class AgentContext(Outputs):
    """An agent that owns order state: the outputs plus the order table."""

    orders: Any  # the Faust table (dict-like)
