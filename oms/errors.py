"""The OMS's error hierarchy. Every error carries a machine-readable
:class:`~oms.schemas.ReasonCode`, which is what reaches the OrderEvent (``reason_code``),
with the message as its human text.

Exchange failures have their own typed hierarchy (:mod:`oms.exchange.errors`), mapped onto
reason codes in one place (:mod:`oms.orders.reasons`).
"""

from __future__ import annotations

from oms.schemas import ReasonCode


class AdvancedOrderError(Exception):
    """Base of every OMS error about an order. ``reason_code`` defaults per class."""

    default_reason: ReasonCode = ReasonCode.INTERNAL_ERROR

    def __init__(
        self,
        message: str,
        *,
        reason_code: ReasonCode | None = None,
        order_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason_code = reason_code or self.default_reason
        self.order_id = order_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason_code.value!r}, {self.message!r})"


class InvalidOrderError(AdvancedOrderError):
    """A request that cannot be accepted as it is (bad fields, bad policy overrides)."""

    default_reason = ReasonCode.SCHEMA_INVALID


__all__ = ["AdvancedOrderError", "InvalidOrderError"]
