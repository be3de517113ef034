"""What every order agent gets from the worker, as plain callables (no Faust types)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from oms.schemas import DeadLetter, OrderEvent


@dataclass(kw_only=True)
class AgentContext:
    """The order table, the outputs, and counters for ``/stats``."""

    orders: Any  # the Faust table (dict-like)
    emit: Callable[[OrderEvent], Awaitable[None]]
    dead_letter: Callable[[DeadLetter], Awaitable[None]]
    source_topic: str
    counters: dict[str, int] = field(default_factory=dict)

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1
