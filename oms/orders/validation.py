"""Where an order request is validated: parsing bytes, then checking it against the
instrument's specification and the account registry. Pure functions, no I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
from pydantic import ValidationError

from oms.schemas import (
    CommandType,
    InstrumentSpec,
    OrderRequest,
    OrderType,
    ReasonCode,
    derive_order_id,
)
from oms.schemas.decode import absent
from oms.schemas.orders import ORDER_ID_MISMATCH_ERROR
from oms.schemas.rejection import Rejection

__all__ = ["ParseFailure", "Rejection", "parse_request", "validate_submit"]

# A request is a few hundred bytes; anything far larger is abuse or a bug, not an order.
MAX_REQUEST_BYTES = 64 * 1024

_PRICED_TYPES = frozenset({OrderType.LIMIT, OrderType.STOP_LIMIT, OrderType.TAKE_LIMIT})
_TRIGGERED_TYPES = frozenset(
    {OrderType.STOP_LIMIT, OrderType.STOP_MARKET, OrderType.TAKE_LIMIT, OrderType.TAKE_MARKET}
)


@dataclass(frozen=True)
class ParseFailure:
    """Bytes that are not a valid request. ``identity`` holds what could be recovered
    (account_id, order_id, request_id) so the sender can still get a rejected event."""

    reason_code: ReasonCode
    message: str
    identity: dict[str, str] | None = None


def parse_request(raw: bytes | None) -> OrderRequest | ParseFailure:
    """Decode one message of ``order-requests`` (a null value is a tombstone)."""
    missing = absent(raw)
    if missing is not None:
        return ParseFailure(missing.reason_code, missing.error)
    assert raw is not None  # absent() ruled it out
    if len(raw) > MAX_REQUEST_BYTES:
        return ParseFailure(
            ReasonCode.PAYLOAD_TOO_LARGE, f"request of {len(raw)} bytes exceeds {MAX_REQUEST_BYTES}"
        )
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return ParseFailure(ReasonCode.MALFORMED_JSON, f"not valid JSON: {exc}")
    if not isinstance(obj, dict):
        return ParseFailure(ReasonCode.SCHEMA_INVALID, "request must be a JSON object")
    try:
        return OrderRequest.model_validate(obj)
    except ValidationError as exc:
        reason = ReasonCode.SCHEMA_INVALID
        if any(err["type"] == ORDER_ID_MISMATCH_ERROR for err in exc.errors()):
            reason = ReasonCode.ORDER_ID_MISMATCH
        return ParseFailure(reason, _summarize(exc), _identity(obj))


def summarize_validation_error(exc: ValidationError) -> str:
    """The first few errors of a pydantic validation, on one line."""
    return _summarize(exc)


def _summarize(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "request"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def _identity(obj: dict[str, Any]) -> dict[str, str] | None:
    """Enough of a rejected request to address an event to its sender, if it is there.

    A submit's event goes to the order id derived from its account and request id, never to
    an ``order_id`` it merely claims: that could be another order's."""
    account_id, request_id, order_id = (
        obj.get("account_id"),
        obj.get("request_id"),
        obj.get("order_id"),
    )
    if not isinstance(account_id, str) or not account_id or len(account_id) > 64:
        return None
    if not isinstance(request_id, str) or not request_id or len(request_id) > 64:
        return None
    if obj.get("command", CommandType.SUBMIT.value) == CommandType.SUBMIT.value:
        order_id = derive_order_id(account_id, request_id)
    elif not isinstance(order_id, str) or not order_id or len(order_id) > 64:
        return None
    command = obj.get("command", CommandType.SUBMIT.value)
    return {
        "account_id": account_id,
        "request_id": request_id,
        "order_id": order_id,
        "command": command if isinstance(command, str) else "unknown",
    }


def _is_multiple(value: float, step: float) -> bool:
    try:
        return Decimal(repr(value)) % Decimal(repr(step)) == 0
    except InvalidOperation:
        return False


def validate_submit(
    request: OrderRequest, spec: InstrumentSpec | None, account_known: bool
) -> Rejection | None:
    """Check a submit against the instrument and account; ``None`` means valid."""
    if not account_known:
        return Rejection(ReasonCode.UNKNOWN_ACCOUNT, f"account {request.account_id!r} is not known")
    if spec is None:
        return Rejection(
            ReasonCode.UNKNOWN_INSTRUMENT, f"instrument {request.instrument_name!r} is not listed"
        )
    if not spec.is_active:
        return Rejection(ReasonCode.INSTRUMENT_INACTIVE, f"{spec.instrument_name} is not active")
    amount = request.amount
    assert amount is not None  # guaranteed by OrderRequest for submits
    if not math.isfinite(amount) or amount <= 0:
        return Rejection(ReasonCode.INVALID_AMOUNT, f"amount must be positive, got {amount}")
    if amount < spec.min_trade_amount:
        return Rejection(
            ReasonCode.AMOUNT_TOO_SMALL,
            f"amount {amount} is below the minimum {spec.min_trade_amount} "
            f"of {spec.instrument_name}",
        )
    if not _is_multiple(amount, spec.min_trade_amount):
        return Rejection(
            ReasonCode.AMOUNT_NOT_MULTIPLE,
            f"amount {amount} is not a multiple of {spec.min_trade_amount} "
            f"({spec.instrument_name} contract size {spec.contract_size})",
        )
    rejection = _check_price(request.price, request.order_type in _PRICED_TYPES, "price", spec)
    if rejection is None:
        rejection = _check_price(
            request.trigger_price, request.order_type in _TRIGGERED_TYPES, "trigger_price", spec
        )
    return rejection


def _check_price(
    price: float | None, required: bool, field: str, spec: InstrumentSpec
) -> Rejection | None:
    if price is None:
        if required:
            return Rejection(ReasonCode.PRICE_REQUIRED, f"{field} is required for this order type")
        return None
    if not math.isfinite(price) or price <= 0:
        return Rejection(ReasonCode.INVALID_PRICE, f"{field} must be positive, got {price}")
    if not _is_multiple(price, spec.tick_size):
        return Rejection(
            ReasonCode.PRICE_OFF_TICK,
            f"{field} {price} is not a multiple of the tick size {spec.tick_size} "
            f"of {spec.instrument_name}",
        )
    return None
