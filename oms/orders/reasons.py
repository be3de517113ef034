"""Exchange error codes -> our reason codes (the one place that maps them)."""

from __future__ import annotations

from oms.schemas import ReasonCode
from oms.schemas.execution import (
    CLIENT_RATE_LIMITED,
    CONNECTION_LOST,
    LOST_AT_VENUE,
    NEEDS_REVIEW,
    NOT_SUPPORTED,
    REQUEST_TIMEOUT,
    RETRIES_EXHAUSTED,
)

# Deribit error codes (see shared NOTES.md and the official spec); unlisted codes are
# reported as a generic exchange rejection with the code kept in the event details.
_BY_CODE: dict[int, ReasonCode] = {
    10009: ReasonCode.NOT_ENOUGH_FUNDS,
    10028: ReasonCode.RATE_LIMITED,
    10047: ReasonCode.RATE_LIMITED,
    10066: ReasonCode.RATE_LIMITED,
    10004: ReasonCode.UNKNOWN_ORDER,
    11044: ReasonCode.ORDER_NOT_OPEN,
    10040: ReasonCode.EXCHANGE_UNAVAILABLE,
    CONNECTION_LOST: ReasonCode.EXCHANGE_UNAVAILABLE,
    REQUEST_TIMEOUT: ReasonCode.EXCHANGE_UNAVAILABLE,
    CLIENT_RATE_LIMITED: ReasonCode.RATE_LIMITED,
    RETRIES_EXHAUSTED: ReasonCode.RETRIES_EXHAUSTED,
    NEEDS_REVIEW: ReasonCode.MANUAL_REVIEW,
    LOST_AT_VENUE: ReasonCode.LOST_AT_VENUE,
    NOT_SUPPORTED: ReasonCode.NOT_SUPPORTED,
}


def reason_for_exchange_code(code: int | None) -> ReasonCode:
    """Reason code for a Deribit error code."""
    if code is None:
        return ReasonCode.EXCHANGE_REJECTED
    return _BY_CODE.get(code, ReasonCode.EXCHANGE_REJECTED)
