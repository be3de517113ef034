"""Enumerations shared by every schema. Values are the strings on the wire."""

from __future__ import annotations

from enum import StrEnum


class Direction(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    """Deribit order types accepted by ``private/buy`` and ``private/sell``."""

    LIMIT = "limit"
    MARKET = "market"
    STOP_LIMIT = "stop_limit"
    STOP_MARKET = "stop_market"
    TAKE_LIMIT = "take_limit"
    TAKE_MARKET = "take_market"
    MARKET_LIMIT = "market_limit"
    TRAILING_STOP = "trailing_stop"


class TimeInForce(StrEnum):
    GOOD_TIL_CANCELLED = "good_til_cancelled"
    GOOD_TIL_DAY = "good_til_day"
    FILL_OR_KILL = "fill_or_kill"
    IMMEDIATE_OR_CANCEL = "immediate_or_cancel"


class Priority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class CommandType(StrEnum):
    SUBMIT = "submit"
    CANCEL = "cancel"
    AMEND = "amend"
    RETRY = "retry"  # resubmit an order parked in needs_review (oms review retry)


class OrderStatus(StrEnum):
    """Our order state machine (see :mod:`oms.orders.state_machine`)."""

    PENDING = "pending"  # accepted by intake, not yet sent
    WAITING = "waiting"  # held until its time or its conditions come (delayed, conditional)
    QUEUED = "queued"  # in a priority queue, waiting for its turn at the rate limit
    SUBMITTED = "submitted"  # sent to the exchange, no answer yet
    OPEN = "open"  # resting on the book
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    NEEDS_REVIEW = "needs_review"  # parked by the `manual` error strategy until a human decides

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED}
)
# Acknowledged by the exchange and working there: resting, or partly filled.
LIVE_STATUSES = frozenset({OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED})


class OrderEventType(StrEnum):
    ACCEPTED = "accepted"  # intake validated the request; the order exists
    SUBMITTED = "submitted"
    OPEN = "open"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    AMENDED = "amended"
    COMMAND_REJECTED = "command_rejected"  # a cancel/amend that could not apply
    DUPLICATE = "duplicate"  # a request_id seen before: acknowledged, not executed
    WAITING = "waiting"  # held for its time or its conditions
    QUEUED = "queued"  # entered a priority queue
    TRIGGERED = "triggered"  # its time or conditions came; details say which tick/values
    CONDITION_ERROR = "condition_error"  # a condition could not be evaluated (skipped)
    NEEDS_REVIEW = "needs_review"
    # A smart order router split the order across venues; details.routing: the books it saw
    # and the children it chose.
    ROUTED = "routed"
    # Account- and system-level events (order_id names the subject, e.g. "position:A|I").
    RISK_STATE_CHANGED = "risk_state_changed"
    POSITION_MISMATCH = "position_mismatch"
    LARGE_LOSS = "large_loss"
    MARGIN_CALL = "margin_call"
    SYSTEM_ERROR = "system_error"


class ExchangeOrderState(StrEnum):
    """Deribit's ``order_state`` values."""

    OPEN = "open"
    FILLED = "filled"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    UNTRIGGERED = "untriggered"
    TRIGGERED = "triggered"


class ReportSource(StrEnum):
    RPC = "rpc"  # reply to our own buy/sell/edit/cancel
    SUBSCRIPTION = "subscription"  # user.orders / user.trades
    RECONCILE = "reconcile"  # looked up by label after a crash or timeout
    DISPATCH = "dispatch"  # the OMS released a queued order to the exchange (no answer yet)


class ReasonCode(StrEnum):
    """Machine-readable reasons carried by rejections and dead letters."""

    # A message that cannot be read at all (oms.schemas.decode): a tombstone (null value)
    # where no deletion is meant, zero bytes, bytes that are not JSON, JSON that is not
    # the topic's record.
    TOMBSTONE = "tombstone"
    EMPTY_PAYLOAD = "empty_payload"
    MALFORMED_JSON = "malformed_json"
    SCHEMA_INVALID = "schema_invalid"
    INVALID_AMOUNT = "invalid_amount"
    AMOUNT_NOT_MULTIPLE = "amount_not_multiple_of_contract"
    AMOUNT_TOO_SMALL = "amount_below_minimum"
    PRICE_REQUIRED = "price_required"
    INVALID_PRICE = "invalid_price"
    PRICE_OFF_TICK = "price_off_tick"
    UNKNOWN_INSTRUMENT = "unknown_instrument"
    INSTRUMENT_INACTIVE = "instrument_inactive"
    UNKNOWN_ACCOUNT = "unknown_account"
    # The order names a venue that is not configured, or one its account does not trade at.
    UNKNOWN_VENUE = "unknown_venue"
    VENUE_NOT_ALLOWED = "venue_not_allowed_for_account"
    UNKNOWN_ORDER = "unknown_order"
    NOT_OWNER = "not_order_owner"
    DUPLICATE_REQUEST = "duplicate_request"
    ORDER_ID_CONFLICT = "order_id_conflict"
    ILLEGAL_TRANSITION = "illegal_transition"
    ORDER_NOT_OPEN = "order_not_open"
    NOT_SUPPORTED = "not_supported"
    EXCHANGE_REJECTED = "exchange_rejected"
    EXCHANGE_UNAVAILABLE = "exchange_unavailable"
    NOT_ENOUGH_FUNDS = "not_enough_funds"
    RATE_LIMITED = "rate_limited"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    INTERNAL_ERROR = "internal_error"
    # Non-immediate and conditional orders: queued, delayed, held on conditions, linked.
    QUEUE_FULL = "queue_full"
    DELAY_TOO_LONG = "delay_too_long"
    TIME_IN_PAST = "time_in_past"
    TOO_MANY_CONDITIONS = "too_many_conditions"
    INVALID_CONDITION = "invalid_condition"
    CONDITION_EXPIRED = "condition_expired"
    CONDITION_UNEVALUABLE = "condition_unevaluable"
    LINKED_ORDER_CANCELLED = "linked_order_cancelled"
    # Smart order routing: a routed parent ended with a remainder because no venue showed
    # liquidity it could take (within its limit), or its routing attempts were used up.
    NO_LIQUIDITY = "no_liquidity"
    ROUTE_EXHAUSTED = "route_exhausted"
    # Execution strategy plugins: an order naming one that is not loaded; a plugin refused
    # at load (syntax or import error, missing hooks, bad parameters model).
    UNKNOWN_STRATEGY = "unknown_strategy"
    STRATEGY_REFUSED = "strategy_refused"
    # Lifecycle: auto-cancel, partial fills, retries, manual review.
    AUTO_CANCELLED = "auto_cancelled"
    PARTIAL_FILL_CANCELLED = "partial_fill_cancelled"
    RETRIES_EXHAUSTED = "retries_exhausted"
    MANUAL_REVIEW = "manual_review"
    # Reconciliation: an acknowledged order the exchange no longer knows (after every check).
    LOST_AT_VENUE = "lost_at_venue"
    # Authentication, permissions, risk limits, trading states.
    SIGNATURE_MISSING = "signature_missing"
    SIGNATURE_INVALID = "signature_invalid"
    UNKNOWN_KEY = "unknown_key"
    STALE_REQUEST = "stale_request"
    NONCE_REUSED = "nonce_reused"
    # A submit's order_id that is not derive_order_id(account_id, request_id).
    ORDER_ID_MISMATCH = "order_id_mismatch"
    PERMISSION_DENIED = "permission_denied"
    RISK_LIMIT_EXCEEDED = "risk_limit_exceeded"
    PRICE_BAND_EXCEEDED = "price_band_exceeded"
    TRADING_HALTED = "trading_halted"
    TRADING_REDUCING = "trading_reducing_only"
    # Positions: fills the keeper cannot apply as they come, reconciliation.
    DUPLICATE_FILL = "duplicate_fill"
    INCONSISTENT_FILL = "inconsistent_fill"
    # A fill older than the keeper's seen-trades retention (it may have been counted already).
    STALE_FILL = "stale_fill"
    POSITION_MISMATCH = "position_mismatch"
    # Notifications: settings, channels, delivery.
    INVALID_SETTINGS = "invalid_settings"
    UNKNOWN_CHANNEL = "unknown_channel"
    INVALID_RECIPIENT = "invalid_recipient"
    SECRET_MISSING = "secret_missing"
    TEMPLATE_ERROR = "template_error"
    PROVIDER_ERROR = "provider_error"
    PROVIDER_GARBAGE = "provider_garbage"
    PROVIDER_TIMEOUT = "provider_timeout"
    OUTCOME_UNKNOWN = "outcome_unknown"
