"""Where intake decides *when* an order goes out: now, in a priority queue, after a delay, or
when its conditions come. Pure functions, no I/O.

A request is held (status ``waiting``) when it has conditions or a release time in the future;
``execute_immediately=false`` without either puts it straight into the priority queue
(``queued``); everything else is sent at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from oms.orders.validation import summarize_validation_error
from oms.schemas import InstrumentSpec, OrderRequest, ReasonCode
from oms.schemas.conditions import (
    ExpirationCondition,
    Operator,
    PriceCondition,
    TimeCondition,
    TrailingCondition,
    parse_condition,
)
from oms.schemas.rejection import Rejection
from oms.settings import QueueSettings

AnyCondition = PriceCondition | TimeCondition | TrailingCondition | ExpirationCondition

# Clock skew and Kafka latency we forgive a release time that is "now" when sent.
PAST_GRACE_MS = 1_000


class Strategy(StrEnum):
    IMMEDIATE = "immediate"
    QUEUED = "queued"
    DELAYED = "delayed"
    CONDITIONAL = "conditional"


@dataclass
class Schedule:
    """How and when an accepted order executes, with the parsed conditions."""

    strategy: Strategy
    conditions: list[AnyCondition] = field(default_factory=list)
    release_at: int | None = None
    expire_at: int | None = None

    @property
    def held(self) -> bool:
        return self.strategy in (Strategy.DELAYED, Strategy.CONDITIONAL)

    def normalized_conditions(self) -> list[dict[str, Any]]:
        """The conditions as stored on the order record (instrument filled in)."""
        return [c.model_dump(mode="json") for c in self.conditions]


def plan_schedule(
    request: OrderRequest,
    *,
    now_ms: int,
    settings: QueueSettings,
    instrument: Callable[[str | None], InstrumentSpec | None],
) -> Schedule | Rejection:
    """Validate the timing fields of a submit and decide its strategy."""
    if len(request.conditions) > settings.max_conditions:
        return Rejection(
            ReasonCode.TOO_MANY_CONDITIONS,
            f"{len(request.conditions)} conditions given, at most {settings.max_conditions}",
        )
    conditions: list[AnyCondition] = []
    for number, raw in enumerate(request.conditions, start=1):
        parsed = _parse(number, raw, request, now_ms, instrument)
        if isinstance(parsed, Rejection):
            return parsed
        conditions.append(parsed)
    events = sum(
        isinstance(c, TrailingCondition)
        or (
            isinstance(c, PriceCondition)
            and c.operator in (Operator.CROSSES_ABOVE, Operator.CROSSES_BELOW)
        )
        for c in conditions
    )
    if events > 1 and request.condition_match == "all":
        return Rejection(
            ReasonCode.INVALID_CONDITION,
            "with condition_match 'all' at most one crosses_* or trailing condition makes "
            "sense: two such events never happen on the same tick",
        )
    release = _release_at(request, now_ms, settings)
    if isinstance(release, Rejection):
        return release
    expire_at: int | None = None
    if request.expiration is not None:
        if not request.expiration > 0:
            return Rejection(
                ReasonCode.INVALID_CONDITION,
                f"expiration must be a positive number of seconds, got {request.expiration}",
            )
        expire_at = now_ms + int(request.expiration * 1000)
    for cond in conditions:
        if isinstance(cond, ExpirationCondition):
            at = now_ms + int(cond.seconds * 1000)
            expire_at = at if expire_at is None else min(expire_at, at)
    waits_for = [c for c in conditions if not isinstance(c, ExpirationCondition)]
    if waits_for:
        strategy = Strategy.CONDITIONAL
    elif release is not None and release > now_ms:
        strategy = Strategy.DELAYED
    elif not request.execute_immediately or release is not None:
        strategy = Strategy.QUEUED
    else:
        strategy = Strategy.IMMEDIATE
    return Schedule(strategy, conditions, release, expire_at)


def _parse(
    number: int,
    raw: dict[str, Any],
    request: OrderRequest,
    now_ms: int,
    instrument: Callable[[str | None], InstrumentSpec | None],
) -> AnyCondition | Rejection:
    try:
        cond = parse_condition(raw)
    except ValidationError as exc:
        return Rejection(
            ReasonCode.INVALID_CONDITION,
            f"condition {number}: {summarize_validation_error(exc)}",
        )
    if isinstance(cond, PriceCondition | TrailingCondition):
        name = cond.instrument_name or request.instrument_name
        if instrument(name) is None:
            return Rejection(
                ReasonCode.UNKNOWN_INSTRUMENT,
                f"condition {number}: instrument {name!r} is not listed",
            )
        if isinstance(cond, TrailingCondition):
            # A sell stop protects a long: it trails the high and fires on a drop.
            direction = cond.direction or ("down" if request.direction == "sell" else "up")
            return cond.model_copy(update={"instrument_name": name, "direction": direction})
        return cond.model_copy(update={"instrument_name": name})
    if isinstance(cond, TimeCondition) and cond.value < now_ms - PAST_GRACE_MS:
        return Rejection(
            ReasonCode.TIME_IN_PAST,
            f"condition {number}: time {cond.value} is in the past (now {now_ms})",
        )
    return cond


def _release_at(
    request: OrderRequest, now_ms: int, settings: QueueSettings
) -> int | Rejection | None:
    if request.execute_at is not None and request.delay is not None:
        return Rejection(ReasonCode.SCHEMA_INVALID, "give either execute_at or delay, not both")
    max_ms = int(settings.max_delay * 1000)
    if request.delay is not None:
        if not request.delay >= 0:
            return Rejection(
                ReasonCode.TIME_IN_PAST, f"delay must not be negative: {request.delay}"
            )
        if request.delay * 1000 > max_ms:
            return Rejection(
                ReasonCode.DELAY_TOO_LONG,
                f"delay {request.delay} s exceeds the maximum of {settings.max_delay} s",
            )
        return now_ms + int(request.delay * 1000)
    if request.execute_at is not None:
        if request.execute_at < now_ms - PAST_GRACE_MS:
            return Rejection(
                ReasonCode.TIME_IN_PAST,
                f"execute_at {request.execute_at} is in the past (now {now_ms})",
            )
        if request.execute_at - now_ms > max_ms:
            return Rejection(
                ReasonCode.DELAY_TOO_LONG,
                f"execute_at is {(request.execute_at - now_ms) / 1000:.0f} s ahead, more than "
                f"the maximum of {settings.max_delay} s",
            )
        return request.execute_at
    return None
