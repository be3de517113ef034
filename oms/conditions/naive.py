"""The straightforward way, kept as the benchmark baseline: every waiting order, every tick.

``NaiveEvaluator`` re-evaluates each order's conditions against the latest values on every
tick, one loop over all of them. It gives the same answers as
:class:`~oms.conditions.engine.TriggerEngine` for level conditions (crosses compare against the
previous value of the field) at a cost per tick proportional to the number of orders.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from oms.conditions.engine import FIELDS
from oms.schemas.conditions import Operator, PriceCondition, TimeCondition


class NaiveEvaluator:
    """Linear scan over all waiting orders on every tick."""

    def __init__(self) -> None:
        self._orders: dict[str, tuple[Sequence[Any], bool]] = {}
        self._latest: dict[tuple[str, str], float] = {}
        self._previous: dict[tuple[str, str], float] = {}
        self._now_instrument = ""

    def add(self, order_id: str, conditions: Sequence[Any], *, match_any: bool = False) -> None:
        self._orders[order_id] = (conditions, match_any)

    def on_tick(self, tick: Any, now_ms: int) -> list[str]:
        """Apply one tick; return the ids of the orders it releases."""
        self._now_instrument = tick.instrument_name
        for fld in FIELDS:
            value = getattr(tick, fld)
            if value is not None:
                key = (tick.instrument_name, fld)
                if key in self._latest:
                    self._previous[key] = self._latest[key]
                self._latest[key] = value
        fired = []
        for order_id, (conditions, match_any) in self._orders.items():
            results = [self._holds(c, now_ms) for c in conditions]
            if any(results) if match_any else all(results):
                fired.append(order_id)
        for order_id in fired:
            del self._orders[order_id]
        return fired

    def _holds(self, cond: Any, now_ms: int) -> bool:
        if isinstance(cond, TimeCondition):
            return _compare(now_ms, cond.operator, cond.value)
        if not isinstance(cond, PriceCondition):
            return True
        key = (cond.instrument_name or "", cond.field.value)
        value = self._latest.get(key)
        if value is None:
            return False
        if cond.operator.value.startswith("crosses") and key[0] != self._now_instrument:
            return False  # a cross is an event of its own instrument's tick
        if cond.operator is Operator.CROSSES_ABOVE:
            prev = self._previous.get(key)
            return prev is not None and prev < cond.value <= value
        if cond.operator is Operator.CROSSES_BELOW:
            prev = self._previous.get(key)
            return prev is not None and prev > cond.value >= value
        return _compare(value, cond.operator.value, cond.value)


def _compare(left: float, op: str, right: float) -> bool:
    if op == ">":
        return left > right
    if op == ">=":
        return left >= right
    if op == "<":
        return left < right
    return left <= right
