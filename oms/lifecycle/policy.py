"""The lifecycle policy of one order: the settings' defaults, overridden by its metadata.

Overridable keys (same names as in ``OMS_LIFECYCLE__*``): ``error_handling``,
``retry_attempts``, ``partial_fill_handling``, ``partial_fill_grace``,
``auto_cancel_timeout``, typed as :class:`~oms.orders.params.LifecycleOverrides`. Invalid
overrides are refused at intake (:func:`oms.orders.params.parse_params`) so a running order
never carries a policy we cannot apply.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from oms.errors import InvalidOrderError
from oms.orders.params import (
    CANCEL_REASON_KEY,
    LifecycleOverrides,
    LifecyclePolicy,
    parse_lifecycle,
)
from oms.schemas import ReasonCode
from oms.schemas.rejection import Rejection
from oms.settings import LifecycleSettings

CANCEL_REASONS = frozenset(
    {
        ReasonCode.AUTO_CANCELLED,
        ReasonCode.PARTIAL_FILL_CANCELLED,
        ReasonCode.MANUAL_REVIEW,
        ReasonCode.LINKED_ORDER_CANCELLED,
        ReasonCode.NO_LIQUIDITY,
        ReasonCode.ROUTE_EXHAUSTED,
    }
)


def policy_of(metadata: Mapping[str, Any], defaults: LifecycleSettings) -> LifecyclePolicy:
    """The policy of a recorded order with this ``metadata``. Its overrides were checked when
    intake accepted it; a record from before they were checked gets the settings' policy."""
    overrides = parse_lifecycle(metadata)
    if isinstance(overrides, Rejection):
        overrides = LifecycleOverrides()
    return overrides.resolve(defaults)


def policy_problem(metadata: Mapping[str, Any]) -> str | None:
    """Why the lifecycle overrides in ``metadata`` are invalid, or None."""
    parsed = parse_lifecycle(metadata)
    return parsed.message if isinstance(parsed, Rejection) else None


def check_policy(metadata: Mapping[str, Any]) -> None:
    """Raise :class:`InvalidOrderError` (reason ``schema_invalid``) for invalid overrides."""
    problem = policy_problem(metadata)
    if problem is not None:
        raise InvalidOrderError(problem)


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
