"""Typed exchange errors, and the one table that maps Deribit error codes onto them.

Callers branch on the class (``except RateLimited``) or on ``.reason`` (a stable machine-readable
string, Deribit's short message where it has one), never on message text.

``retryable`` means "sending the same request again later can succeed". ``outcome_unknown`` means
"the request may have reached the exchange": an order whose outcome is unknown must be looked up by
label before anything is resent, never blindly retried.
"""

from __future__ import annotations

from typing import Any

# The OMS's own codes (client-side failures, outcomes of the error strategies, reconciliation)
# are carried by ExecutionReport.error_code like Deribit's, so they are part of the message
# contract and defined with it.
from oms.schemas.execution import (
    CLIENT_RATE_LIMITED,
    CONNECTION_LOST,
    LABEL_MISMATCH,
    LOST_AT_VENUE,
    NEEDS_REVIEW,
    NOT_SUPPORTED,
    REQUEST_TIMEOUT,
    RETRIES_EXHAUSTED,
)


class ExchangeError(Exception):
    """An error answered by the exchange or raised by the client on its behalf.

    ``str()`` and ``repr()`` carry the code, reason and message only: ``data`` can echo request
    fields, so it stays an attribute and never reaches a log line by accident.
    """

    retryable: bool = False
    outcome_unknown: bool = False
    default_reason: str = "exchange_error"

    def __init__(
        self,
        code: int,
        message: str = "",
        data: Any = None,
        *,
        reason: str | None = None,
        method: str | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.data = data
        self.reason = reason or _REASONS.get(code) or self.default_reason
        self.method = method
        where = f" [{method}]" if method else ""
        super().__init__(
            f"{self.reason} ({code}){where}: {message}"
            if message
            else f"{self.reason} ({code}){where}"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code}, reason={self.reason!r})"


class RateLimited(ExchangeError):
    """Deribit's credit limit or matching-engine queue is exhausted; back off and retry."""

    retryable = True
    default_reason = "too_many_requests"


class NotEnoughFunds(ExchangeError):
    """Margin or balance does not allow the order."""

    default_reason = "not_enough_funds"


class OrderNotFound(ExchangeError):
    """No order with that id or label."""

    default_reason = "order_not_found"


class LabelMismatch(OrderNotFound):
    """The exchange answered with an order whose label is not the one asked about (e.g. an
    exchange order id reused after the exchange lost its orders): for that order, it is the
    same as not found, and nothing about the other order may be reported as ours."""

    default_reason = "label_mismatch"


class NotOpenOrder(ExchangeError):
    """The order is no longer open (filled or cancelled meanwhile)."""

    default_reason = "not_open_order"


class PostOnlyReject(ExchangeError):
    """A ``reject_post_only`` order would have taken liquidity."""

    default_reason = "post_only_reject"


class Unauthorized(ExchangeError):
    """Missing, wrong or expired credentials or token, or not enough scope."""

    default_reason = "unauthorized"


class InvalidParams(ExchangeError):
    """The request is malformed or its values are not allowed (amount, price, tick, ...)."""

    default_reason = "invalid_params"


class OrderRejected(ExchangeError):
    """The exchange refused the order for a business reason (limits, locked book, MMP, ...)."""

    default_reason = "order_rejected"


class ExchangeBusy(ExchangeError):
    """The exchange asked us to retry later (settlement, maintenance, overload)."""

    retryable = True
    default_reason = "retry"


class NotSupported(ExchangeError):
    """The venue's adapter cannot express the request at that venue (an order type, a
    time in force, a lookup the venue's API lacks): refused before anything is sent."""

    default_reason = "not_supported"


# Deribit's name for the same thing; kept as an alias so both spellings read naturally.
RetryLater = ExchangeBusy


class ConnectionLost(ExchangeError):
    """The connection dropped (or was never up) while the request was pending.

    Retryable, but the request may have reached the exchange: look orders up by label first.
    """

    retryable = True
    outcome_unknown = True
    default_reason = "connection_lost"


class RequestTimeout(ExchangeError):
    """No reply within the request timeout; the request may still execute at the exchange."""

    retryable = True
    outcome_unknown = True
    default_reason = "request_timeout"


# Deribit code -> (reason, class). The one place codes live.
# Sources: Deribit API v2 "RPC error codes" table (docs.deribit.com, also mirrored by client
# libraries, e.g. joaquinbejar/deribit-base codes.rs) and NOTES.md. The OpenAPI spec 2.1.1 defines
# only the error envelope, not the codes. 11098 is account_locked: not retryable.
_TABLE: dict[int, tuple[str, type[ExchangeError]]] = {
    # rate limits
    10028: ("too_many_requests", RateLimited),
    10047: ("matching_engine_queue_full", RateLimited),
    10066: ("too_many_concurrent_requests", RateLimited),
    13903: ("too_many_quotes", RateLimited),
    # funds
    10009: ("not_enough_funds", NotEnoughFunds),
    10039: ("not_enough_funds_in_currency", NotEnoughFunds),
    # order lookup / state
    10004: ("order_not_found", OrderNotFound),
    10010: ("already_closed", NotOpenOrder),
    11008: ("already_filled", NotOpenOrder),
    11044: ("not_open_order", NotOpenOrder),
    11054: ("post_only_reject", PostOnlyReject),
    # auth
    10000: ("authorization_required", Unauthorized),
    13004: ("invalid_credentials", Unauthorized),
    13009: ("unauthorized", Unauthorized),
    13021: ("forbidden", Unauthorized),
    13403: ("scope_exceeded", Unauthorized),
    11042: ("permission_denied", Unauthorized),
    # invalid parameters
    10030: ("must_be_websocket_request", InvalidParams),
    10033: ("not_implemented", InvalidParams),
    13010: ("value_required", InvalidParams),
    -32602: ("invalid_params", InvalidParams),
    -32601: ("method_not_found", InvalidParams),
    -32600: ("request_too_large", InvalidParams),
    -32700: ("parse_error", InvalidParams),
    -32000: ("missing_params", InvalidParams),
    10002: ("qty_too_low", InvalidParams),
    10005: ("price_too_low", InvalidParams),
    10006: ("price_too_low4idx", InvalidParams),
    10007: ("price_too_high", InvalidParams),
    10011: ("price_not_allowed", InvalidParams),
    10020: ("invalid_or_unsupported_instrument", InvalidParams),
    10021: ("invalid_amount", InvalidParams),
    10022: ("invalid_quantity", InvalidParams),
    10023: ("invalid_price", InvalidParams),
    10024: ("invalid_max_show", InvalidParams),
    10025: ("invalid_order_id", InvalidParams),
    10026: ("price_precision_exceeded", InvalidParams),
    10027: ("non_integer_contract_amount", InvalidParams),
    10031: ("invalid_args_for_instrument", InvalidParams),
    10032: ("whole_cost_too_low", InvalidParams),
    10034: ("trigger_price_too_high", InvalidParams),
    10035: ("trigger_price_too_low", InvalidParams),
    10036: ("invalid_max_show_amount", InvalidParams),
    10043: ("price_wrong_tick", InvalidParams),
    10044: ("trigger_price_wrong_tick", InvalidParams),
    11029: ("invalid_arguments", InvalidParams),
    11036: ("invalid_trigger_price", InvalidParams),
    11043: ("bad_argument", InvalidParams),
    11047: ("unsupported_arg_combination", InvalidParams),
    11049: ("bad_arguments", InvalidParams),
    11050: ("bad_request", InvalidParams),
    11055: ("post_only_not_allowed", InvalidParams),
    13020: ("not_found", InvalidParams),
    13032: ("non_unique_order_label", InvalidParams),
    # business rejects of an order
    10003: ("order_overlap", OrderRejected),
    10012: ("book_closed", OrderRejected),
    10013: ("pme_max_total_open_orders", OrderRejected),
    10018: ("non_pme_max_future_position_size", OrderRejected),
    10019: ("locked_by_admin", OrderRejected),
    10029: ("not_owner_of_order", OrderRejected),
    10045: ("can_not_cancel_liquidation_order", OrderRejected),
    10046: ("can_not_edit_liquidation_order", OrderRejected),
    11030: ("other_reject", OrderRejected),
    11035: ("no_more_triggers", OrderRejected),
    11098: ("account_locked", OrderRejected),
    13019: ("orderbook_closed", OrderRejected),
    13030: ("mmp_trigger", OrderRejected),
    13777: ("replaced", OrderRejected),
    # "error": a general failure without detail; keep the base class, not retryable.
    10001: ("error", ExchangeError),
    # transient: the exchange says "later"
    10040: ("retry", ExchangeBusy),
    10041: ("settlement_in_progress", ExchangeBusy),
    11051: ("system_maintenance", ExchangeBusy),
    11094: ("internal_server_error", ExchangeBusy),
    13025: ("method_switched_off_by_admin", ExchangeBusy),
    13028: ("temporarily_unavailable", ExchangeBusy),
    13503: ("unavailable", ExchangeBusy),
    # valid_until passed before the matching engine saw the request: it did not execute.
    13888: ("timed_out", ExchangeBusy),
    # client side
    CONNECTION_LOST: ("connection_lost", ConnectionLost),
    REQUEST_TIMEOUT: ("request_timeout", RequestTimeout),
    CLIENT_RATE_LIMITED: ("client_rate_limited", RateLimited),
    RETRIES_EXHAUSTED: ("retries_exhausted", ExchangeError),
    NEEDS_REVIEW: ("needs_review", ExchangeError),
    LOST_AT_VENUE: ("lost_at_venue", ExchangeError),
    LABEL_MISMATCH: ("label_mismatch", LabelMismatch),
    NOT_SUPPORTED: ("not_supported", NotSupported),
}

_REASONS: dict[int, str] = {code: reason for code, (reason, _) in _TABLE.items()}


def error_class(code: int) -> type[ExchangeError]:
    """The exception class for a Deribit error code (:class:`ExchangeError` if unknown)."""
    entry = _TABLE.get(code)
    return entry[1] if entry else ExchangeError


def reason_for(code: int) -> str | None:
    """Deribit's short name for a code, if we know it."""
    return _REASONS.get(code)


def from_rpc_error(error: Any, *, method: str | None = None) -> ExchangeError:
    """Build the typed exception for a JSON-RPC ``error`` object ``{code, message, data?}``."""
    if not isinstance(error, dict):
        return ExchangeError(0, str(error), method=method)
    try:
        code = int(error.get("code", 0))
    except (TypeError, ValueError):
        code = 0
    message = str(error.get("message", ""))
    data = error.get("data")
    # Deribit puts the failing field's reason in data.reason, e.g. "must be a multiple of 10".
    return error_class(code)(code, message, data, method=method)


__all__ = [
    "CLIENT_RATE_LIMITED",
    "CONNECTION_LOST",
    "LABEL_MISMATCH",
    "LOST_AT_VENUE",
    "NEEDS_REVIEW",
    "NOT_SUPPORTED",
    "REQUEST_TIMEOUT",
    "RETRIES_EXHAUSTED",
    "ConnectionLost",
    "ExchangeBusy",
    "ExchangeError",
    "InvalidParams",
    "LabelMismatch",
    "NotEnoughFunds",
    "NotOpenOrder",
    "NotSupported",
    "OrderNotFound",
    "OrderRejected",
    "PostOnlyReject",
    "RateLimited",
    "RequestTimeout",
    "RetryLater",
    "Unauthorized",
    "error_class",
    "from_rpc_error",
    "reason_for",
]
