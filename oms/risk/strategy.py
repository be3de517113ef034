"""How an accepted order will execute, and why: recorded on its OrderEvent by intake."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from oms.schemas import OrderRequest
from oms.settings import Settings

_TIME_KINDS = frozenset({"time", "time_after", "time_before", "at", "delay"})


class ExecutionStrategy(StrEnum):
    IMMEDIATE = "immediate"  # sent to the exchange now
    QUEUED = "queued"  # waits for its turn in a priority queue (rate limit)
    DELAYED = "delayed"  # held until a time, then queued
    CONDITIONAL = "conditional"  # held until market conditions hold, then queued
    SLICED = "sliced"  # split into child orders over time (TWAP)


def _is_time_condition(condition: dict[str, Any]) -> bool:
    kind = condition.get("type") or condition.get("kind") or condition.get("field")
    return isinstance(kind, str) and kind.lower() in _TIME_KINDS


def execution_strategy(request: OrderRequest, settings: Settings) -> tuple[ExecutionStrategy, str]:
    """Decide how a submit executes, with a human reason. Pure.

    Precedence: market conditions, then a time (``execute_at``/``delay`` fields when the
    request has them, or time-only conditions), then size (above ``risk.slice_above_amount``
    it is sliced), then ``execute_immediately=false`` (queued at its priority), else now.
    """
    conditions = request.conditions or []
    market = [c for c in conditions if not _is_time_condition(c)]
    if market:
        return (
            ExecutionStrategy.CONDITIONAL,
            f"{len(market)} market condition(s) must hold first",
        )
    execute_at = getattr(request, "execute_at", None)
    delay = getattr(request, "delay", None)
    if execute_at is not None or delay is not None or conditions:
        when = (
            f"at {execute_at}"
            if execute_at is not None
            else f"after {delay} s"
            if delay is not None
            else "when its time condition holds"
        )
        return ExecutionStrategy.DELAYED, f"scheduled {when}"
    threshold = settings.risk.slice_above_amount
    amount = request.amount or 0.0
    if threshold is not None and amount > threshold:
        return (
            ExecutionStrategy.SLICED,
            f"amount {amount:g} exceeds the slicing threshold {threshold:g} (TWAP)",
        )
    if not request.execute_immediately:
        return (
            ExecutionStrategy.QUEUED,
            f"execute_immediately is false: queued at priority {request.priority.value}",
        )
    return ExecutionStrategy.IMMEDIATE, "execute_immediately, no conditions, within size"
