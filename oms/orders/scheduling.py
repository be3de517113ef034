"""Where intake decides how and *when* an order goes out: now, in a priority queue, after a
delay, when its conditions come, or sliced over time (TWAP). The one execution-strategy
decision of the OMS, with a human reason for it. Pure functions, no I/O.

A request is held (status ``waiting``) when it has conditions or a release time in the future;
``execute_immediately=false`` without either puts it straight into the priority queue
(``queued``); everything else is sent at once, unless it is a TWAP parent: one that asks for
the algorithm, or one above the slicing threshold (:class:`AutoSlicing`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ValidationError

from oms.orders.params import MAX_SLICES, SorParams, TwapParams
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
from oms.settings import QueueSettings, RiskSettings

AnyCondition = PriceCondition | TimeCondition | TrailingCondition | ExpirationCondition

# Clock skew and Kafka latency we forgive a release time that is "now" when sent.
PAST_GRACE_MS = 1_000


class Strategy(StrEnum):
    IMMEDIATE = "immediate"  # sent to the exchange now
    QUEUED = "queued"  # waits for its turn in its account's priority queue (rate limit)
    DELAYED = "delayed"  # held until a time (execute_at, delay, time conditions), then queued
    CONDITIONAL = "conditional"  # held until market conditions hold, then queued
    SLICED = "sliced"  # a TWAP parent: worked as child orders over time, never sent itself
    ROUTED = "routed"  # a routed parent: worked as child orders across venues, never sent


@dataclass(frozen=True)
class AutoSlicing:
    """Immediate orders above ``above`` (amount) are worked as a TWAP over ``duration_s``,
    one slice per ``above`` of amount (at most ``MAX_SLICES``, at least a lot each)."""

    above: float
    duration_s: float

    @classmethod
    def from_settings(cls, risk: RiskSettings) -> AutoSlicing | None:
        """The risk settings' slicing (``slice_above_amount``); None: never slice."""
        if risk.slice_above_amount is None:
            return None
        return cls(above=risk.slice_above_amount, duration_s=risk.slice_duration_s)


@dataclass
class Schedule:
    """How and when an accepted order executes, why, with the parsed conditions."""

    strategy: Strategy
    reason: str
    conditions: list[AnyCondition] = field(default_factory=list)
    release_at: int | None = None
    expire_at: int | None = None
    # SLICED: the parent's parameters (asked for, or chosen by the slicing threshold).
    twap: TwapParams | None = None

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
    algo: BaseModel | None = None,
    slicing: AutoSlicing | None = None,
) -> Schedule | Rejection:
    """Validate the timing fields of a submit and decide its strategy.

    ``algo``: the request's parsed execution algorithm; ``slicing``: the size above which an
    immediate order is sliced (None: never). Precedence: conditions (market ones make it
    conditional, time ones alone delayed), then a release time, then
    TWAP asked for (sliced now; a held TWAP starts slicing when released), then
    ``execute_immediately=false`` (queued at its priority), then TWAP above the slicing
    threshold, else now.
    """
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

    def decided(strategy: Strategy, reason: str, twap: TwapParams | None = None) -> Schedule:
        return Schedule(strategy, reason, conditions, release, expire_at, twap)

    waits_for = [c for c in conditions if not isinstance(c, ExpirationCondition)]
    market = [c for c in waits_for if not isinstance(c, TimeCondition)]
    if market:
        reason = f"{len(market)} market condition(s) must hold first"
        return decided(Strategy.CONDITIONAL, reason)
    if waits_for:
        reason = f"held until its {len(waits_for)} time condition(s) hold"
        return decided(Strategy.DELAYED, reason)
    if release is not None and release > now_ms:
        reason = f"scheduled at {release} ({(release - now_ms) / 1000:g} s ahead)"
        return decided(Strategy.DELAYED, reason)
    if isinstance(algo, TwapParams):
        # A TWAP parent is never sent itself, so it has no turn to wait for in a queue: its
        # slices are, each in turn.
        reason = f"TWAP asked for: {algo.slices} slices over {algo.duration_s:g} s"
        return decided(Strategy.SLICED, reason, algo)
    if isinstance(algo, SorParams):
        # Like a TWAP parent: never sent itself; its children are, each at its venue.
        reason = f"routed across {', '.join(algo.venues)} (at most {algo.max_attempts} attempts)"
        return decided(Strategy.ROUTED, reason)
    if not request.execute_immediately or release is not None:
        why = "execute_immediately is false" if release is None else "its time has come"
        reason = f"{why}: queued at priority {request.priority.value}"
        return decided(Strategy.QUEUED, reason)
    sliced = _auto_slice(request, algo, slicing, instrument)
    if sliced is not None:
        assert slicing is not None and request.amount is not None
        reason = f"amount {request.amount:g} exceeds the slicing threshold {slicing.above:g} (TWAP)"
        return decided(Strategy.SLICED, reason, sliced)
    reason = "execute_immediately, no conditions" + (", within size" if slicing else "")
    return decided(Strategy.IMMEDIATE, reason)


def _auto_slice(
    request: OrderRequest,
    algo: BaseModel | None,
    slicing: AutoSlicing | None,
    instrument: Callable[[str | None], InstrumentSpec | None],
) -> TwapParams | None:
    """The TWAP an immediate order above the slicing threshold becomes; None: sent as is
    (below it, running another algorithm, with conditions, or linked)."""
    amount = request.amount
    if slicing is None or amount is None or amount <= slicing.above:
        return None
    if algo is not None or request.conditions or request.contingency is not None:
        return None
    slices = min(MAX_SLICES, math.ceil(amount / slicing.above))
    spec = instrument(request.instrument_name)
    if spec is not None:  # never more slices than whole lots
        slices = max(1, min(slices, round(amount / spec.min_trade_amount)))
    return TwapParams(
        duration_s=slicing.duration_s,
        slices=slices,
        reason=f"amount {amount:g} above the slicing threshold {slicing.above:g}",
    )


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
