"""The lifecycle policy of one order: the settings' defaults, overridden by its metadata.

Overridable keys (same names as in ``OMS_LIFECYCLE__*``): ``error_handling``,
``retry_attempts``, ``partial_fill_handling``, ``partial_fill_grace``,
``auto_cancel_timeout``. Invalid overrides are refused at intake (see :func:`policy_problem`)
so a running order never carries a policy we cannot apply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from oms.errors import InvalidOrderError
from oms.schemas import ReasonCode
from oms.settings import LifecycleSettings

ERROR_STRATEGIES = ("retry", "cancel", "manual")
PARTIAL_FILL_POLICIES = ("wait_remaining", "cancel_remaining")

# Cancel requests the OMS sends itself carry their reason in metadata under this key; intake
# records it on the order, and the cancelled event reports it.
CANCEL_REASON_KEY = "reason_code"
CANCEL_REASONS = frozenset(
    {
        ReasonCode.AUTO_CANCELLED,
        ReasonCode.PARTIAL_FILL_CANCELLED,
        ReasonCode.MANUAL_REVIEW,
        ReasonCode.LINKED_ORDER_CANCELLED,
    }
)


@dataclass(frozen=True)
class LifecyclePolicy:
    """What the OMS does with one order when time passes or something fails."""

    error_handling: str
    retry_attempts: int
    partial_fill_handling: str
    partial_fill_grace: float
    auto_cancel_timeout: float

    @property
    def submit_attempts(self) -> int:
        """How many times a submit may be sent: retries only under the ``retry`` strategy."""
        return 1 + (self.retry_attempts if self.error_handling == "retry" else 0)


def policy_of(metadata: Mapping[str, Any], defaults: LifecycleSettings) -> LifecyclePolicy:
    """The policy of an order with this ``metadata`` (already validated at intake)."""
    return LifecyclePolicy(
        error_handling=str(metadata.get("error_handling") or defaults.error_handling),
        retry_attempts=int(_number(metadata, "retry_attempts", defaults.retry_attempts)),
        partial_fill_handling=str(
            metadata.get("partial_fill_handling") or defaults.partial_fill_handling
        ),
        partial_fill_grace=_number(metadata, "partial_fill_grace", defaults.partial_fill_grace),
        auto_cancel_timeout=_number(metadata, "auto_cancel_timeout", defaults.auto_cancel_timeout),
    )


def policy_problem(metadata: Mapping[str, Any]) -> str | None:
    """Why the lifecycle overrides in ``metadata`` are invalid, or None."""
    value = metadata.get("error_handling")
    if value is not None and value not in ERROR_STRATEGIES:
        return f"error_handling must be one of {', '.join(ERROR_STRATEGIES)}"
    value = metadata.get("partial_fill_handling")
    if value is not None and value not in PARTIAL_FILL_POLICIES:
        return f"partial_fill_handling must be one of {', '.join(PARTIAL_FILL_POLICIES)}"
    for key, upper in (
        ("retry_attempts", 20),
        ("partial_fill_grace", 86_400 * 30),
        ("auto_cancel_timeout", 86_400 * 365),
    ):
        value = metadata.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{key} must be a number"
        if not 0 <= value <= upper:
            return f"{key} must be between 0 and {upper}"
        if key == "retry_attempts" and int(value) != value:
            return "retry_attempts must be a whole number"
    return None


def check_policy(metadata: Mapping[str, Any]) -> None:
    """Raise :class:`InvalidOrderError` (reason ``schema_invalid``) for invalid overrides."""
    problem = policy_problem(metadata)
    if problem is not None:
        raise InvalidOrderError(f"metadata: {problem}")


def cancel_reason(metadata: Mapping[str, Any]) -> ReasonCode | None:
    """The OMS's own reason carried by a cancel request, if it is one we recognise."""
    value = metadata.get(CANCEL_REASON_KEY)
    if value is None:
        return None
    try:
        reason = ReasonCode(str(value))
    except ValueError:
        return None
    return reason if reason in CANCEL_REASONS else None


def _number(metadata: Mapping[str, Any], key: str, default: float) -> float:
    value = metadata.get(key)
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return float(default)
    return float(value)
