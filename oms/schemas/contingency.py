"""Linked orders the OMS emulates: one-cancels-other, one-triggers-other, brackets.

A submit may carry ``contingency``::

    {"type": "bracket",
     "orders": [{"order_type": "limit", "price": 72000},                       # take profit
                {"order_type": "market", "conditions": [{"kind": "price",
                  "operator": "<=", "value": 65000}]}]}                         # stop loss

* ``oco``: the request and ``orders`` are live together; a fill of one reduces the others by
  the same amount (same instrument), or cancels them (different instruments).
* ``oto``: ``orders`` wait until the request fills, then go out sized to its filled amount
  (scaled by ``amount`` / the parent's amount across instruments), and grow with every
  further fill; a parent that ends without a fill cancels them.
* ``bracket``: ``oto`` whose two children (take profit, stop loss) are ``oco`` with each other.

A child's missing fields default to the parent's instrument, the opposite side, the parent's
amount and ``reduce_only`` (a child closes what the parent opened).
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import Field

from oms.schemas.base import MetadataValue, Record
from oms.schemas.enums import Direction, OrderType, Priority, TimeInForce


class ChildOrder(Record):
    """An order linked to the request that carries it."""

    instrument_name: str | None = Field(None, min_length=1, max_length=64)
    direction: Direction | None = None
    amount: float | None = None
    order_type: OrderType = OrderType.LIMIT
    price: float | None = None
    trigger_price: float | None = None
    time_in_force: TimeInForce = TimeInForce.GOOD_TIL_CANCELLED
    post_only: bool = False
    reduce_only: bool | None = Field(None, description="default: true for oto/bracket children")
    priority: Priority = Priority.NORMAL
    conditions: list[dict[str, Any]] = Field(default_factory=list, max_length=32)
    condition_match: Literal["all", "any"] = "all"
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)


class Contingency(Record):
    type: Literal["oco", "oto", "bracket"]
    orders: list[ChildOrder] = Field(min_length=1, max_length=4)


def child_request_id(parent_request_id: str, index: int) -> str:
    """A child's idempotency key: a pure function of the parent's, so re-sent or replayed
    parents never create a child twice."""
    digest = hashlib.blake2b(parent_request_id.encode(), digest_size=10).hexdigest()
    return f"c{index}-{digest}"
