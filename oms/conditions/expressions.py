"""The text form of conditions, for the CLI and the SDK.

BTC-PERPETUAL.last_price >= 70000
mark_price crosses_below 3000            (the order's own instrument)
time >= 2026-12-01T08:00Z                (ISO 8601, or ms since epoch)
time < 2026-12-01T09:00+08:00
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from oms.schemas.conditions import Operator, PriceField

_EXPR = re.compile(
    r"^\s*(?P<lhs>[A-Za-z0-9_.\-]+)\s*(?P<op>>=|<=|>|<|crosses_above|crosses_below)\s*(?P<rhs>\S+)\s*$"
)
_FIELDS = {f.value for f in PriceField}


class ExpressionError(ValueError):
    """A condition expression that cannot be parsed."""


def parse_expression(text: str) -> dict[str, Any]:
    """One condition expression -> its wire object (validated later, at intake)."""
    match = _EXPR.match(text)
    if match is None:
        raise ExpressionError(
            f"cannot parse condition {text!r}: expected '<instrument>.<field> <op> <value>' "
            "or 'time <op> <ISO time>'"
        )
    lhs, op, rhs = match["lhs"], match["op"], match["rhs"]
    if lhs == "time":
        if op.startswith("crosses"):
            raise ExpressionError(f"{op} does not apply to time")
        return {"kind": "time", "operator": op, "value": parse_time_ms(rhs)}
    instrument, _, fld = lhs.rpartition(".")
    if fld not in _FIELDS:
        raise ExpressionError(f"unknown field {fld!r}: one of {', '.join(sorted(_FIELDS))}")
    try:
        value = float(rhs)
    except ValueError:
        raise ExpressionError(f"threshold {rhs!r} is not a number") from None
    cond: dict[str, Any] = {
        "kind": "price",
        "field": fld,
        "operator": Operator(op).value,
        "value": value,
    }
    if instrument:
        cond["instrument_name"] = instrument
    return cond


def parse_time_ms(text: str) -> int:
    """ISO 8601 (naive means UTC) or integer milliseconds since the epoch."""
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ExpressionError(f"{text!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
