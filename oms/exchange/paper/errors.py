"""Deribit error codes and messages, all in one place.

Codes and messages follow Deribit's published error list (docs.deribit.com, "Errors") and the
JSON-RPC 2.0 reserved codes. Handlers raise :class:`RpcError`; the transports turn it into
``{"code": .., "message": .., "data": {..}}``.
"""

from __future__ import annotations

from typing import Any

# code -> message, exactly as Deribit spells the message.
MESSAGES: dict[int, str] = {
    10001: "error",
    10002: "qty_too_low",
    10004: "order_not_found",
    10005: "price_too_low",
    10007: "price_too_high",
    10009: "not_enough_funds",
    10010: "already_closed",
    10020: "invalid_or_unsupported_instrument",
    10021: "invalid_amount",
    10022: "invalid_quantity",
    10023: "invalid_price",
    10024: "invalid_max_show",
    10025: "invalid_order_id",
    10028: "too_many_requests",
    10029: "not_owner_of_order",
    10030: "must_be_websocket_request",
    10033: "not_implemented",
    10040: "retry",
    10043: "price_wrong_tick",
    10044: "trigger_price_wrong_tick",
    10047: "matching_engine_queue_full",
    11030: "other_reject",
    11036: "invalid_trigger_price",
    11044: "not_open_order",
    11050: "bad_request",
    11054: "post_only_reject",
    13004: "invalid_credentials",
    13009: "unauthorized",
    13010: "value_required",
    13020: "not_found",
    13021: "forbidden",
    13888: "timed_out",
    -32600: "Invalid Request",
    -32601: "Method not found",
    -32602: "Invalid params",
    -32700: "Parse error",
    -32000: "Missing params",
}

QTY_TOO_LOW = 10002
ORDER_NOT_FOUND = 10004
PRICE_TOO_LOW = 10005
PRICE_TOO_HIGH = 10007
NOT_ENOUGH_FUNDS = 10009
INVALID_AMOUNT = 10021
INVALID_PRICE = 10023
INVALID_MAX_SHOW = 10024
TOO_MANY_REQUESTS = 10028
NOT_OWNER_OF_ORDER = 10029
MUST_BE_WEBSOCKET = 10030
NOT_IMPLEMENTED = 10033
MATCHING_ENGINE_QUEUE_FULL = 10047
PRICE_WRONG_TICK = 10043
TRIGGER_PRICE_WRONG_TICK = 10044
OTHER_REJECT = 11030
INVALID_TRIGGER_PRICE = 11036
NOT_OPEN_ORDER = 11044
POST_ONLY_REJECT = 11054
INVALID_CREDENTIALS = 13004
UNAUTHORIZED = 13009
TIMED_OUT = 13888
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
PARSE_ERROR = -32700


class RpcError(Exception):
    """An error answered to the client in Deribit's error envelope."""

    __slots__ = ("code", "data")

    def __init__(self, code: int, data: dict[str, Any] | None = None) -> None:
        super().__init__(MESSAGES.get(code, "error"))
        self.code = code
        self.data = data

    @property
    def message(self) -> str:
        return MESSAGES.get(self.code, "error")

    def to_dict(self) -> dict[str, Any]:
        """The ``error`` member of a JSON-RPC response."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            body["data"] = self.data
        return body


def invalid_param(param: str, reason: str) -> RpcError:
    """Deribit's answer to a malformed or missing parameter."""
    return RpcError(INVALID_PARAMS, {"reason": reason, "param": param})
