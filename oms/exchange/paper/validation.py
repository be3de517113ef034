"""Checks of order amounts, prices and labels against an instrument, with Deribit's errors."""

from __future__ import annotations

from oms.exchange.paper import errors
from oms.exchange.paper.errors import RpcError, invalid_param
from oms.exchange.paper.instruments import Instrument

MAX_LABEL = 64
_REL = 1e-7


def check_amount(inst: Instrument, amount: float) -> float:
    """Amount must be positive and a multiple of the minimum trade amount (for futures the
    contract size)."""
    if not amount > 0:
        raise RpcError(errors.INVALID_AMOUNT, {"reason": "must be positive", "param": "amount"})
    step = inst.min_trade_amount
    lots = amount / step
    if abs(lots - round(lots)) > _REL * max(1.0, lots):
        raise invalid_param("amount", f"must be a multiple of {step:g}")
    return round(round(lots) * step, 8)


def price_ticks(inst: Instrument, price: float, param: str = "price") -> int:
    """The price as a whole number of ticks; off-tick prices are rejected like Deribit does."""
    if not price > 0:
        raise RpcError(errors.INVALID_PRICE, {"reason": "price must be positive", "param": param})
    ticks = price / inst.tick_size
    rounded = round(ticks)
    if abs(ticks - rounded) > _REL * max(1.0, ticks):
        code = errors.PRICE_WRONG_TICK if param == "price" else errors.TRIGGER_PRICE_WRONG_TICK
        raise RpcError(code, {"reason": f"tick size is {inst.tick_size:g}", "param": param})
    return int(rounded)


def check_label(label: object) -> str:
    if label is None:
        return ""
    if not isinstance(label, str) or len(label) > MAX_LABEL:
        raise invalid_param("label", f"must be a string of at most {MAX_LABEL} characters")
    return label


def to_price(ticks: int, inst: Instrument) -> float:
    return round(ticks * inst.tick_size, 10)
