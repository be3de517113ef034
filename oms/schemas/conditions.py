"""Conditions of conditional orders, and the internal trigger command.

On the wire a condition is a small JSON object; ``conditions`` on an order request is a list of
them (all must hold, or any with ``condition_match="any"``)::

    {"kind": "price", "instrument_name": "BTC-PERPETUAL", "field": "last_price",
     "operator": ">=", "value": 70000}
    {"kind": "time", "operator": ">=", "value": 1764576000000}      # ms since epoch
    {"kind": "trailing", "field": "mark_price", "offset_percent": 1.5}  # trailing stop
    {"kind": "expiration", "seconds": 600}                           # give up after 10 min

``instrument_name`` of a price condition defaults to the order's own instrument. The CLI and
SDK also accept the text form ``BTC-PERPETUAL.last_price >= 70000`` / ``time >= 2026-12-01T08:00Z``
(:mod:`oms.conditions.expressions`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, model_validator

from oms.schemas.base import Record, now_ms
from oms.schemas.enums import ReasonCode


class PriceField(StrEnum):
    """Ticker fields a price condition may watch (Deribit ``ticker`` names)."""

    LAST_PRICE = "last_price"
    MARK_PRICE = "mark_price"
    INDEX_PRICE = "index_price"
    BEST_BID_PRICE = "best_bid_price"
    BEST_ASK_PRICE = "best_ask_price"


class Operator(StrEnum):
    GT = ">"
    GE = ">="
    LT = "<"
    LE = "<="
    CROSSES_ABOVE = "crosses_above"
    CROSSES_BELOW = "crosses_below"


class PriceCondition(Record):
    """A threshold on a ticker field; ``crosses_*`` hold only on the tick that crosses."""

    kind: Literal["price"] = "price"
    instrument_name: str | None = Field(None, min_length=1, max_length=64)
    field: PriceField = PriceField.LAST_PRICE
    operator: Operator
    value: float = Field(allow_inf_nan=False)


class TimeCondition(Record):
    """``time >= value`` (after) or ``time < value`` (before); value in ms since epoch."""

    kind: Literal["time"] = "time"
    operator: Literal[">", ">=", "<", "<="]
    value: int


class TrailingCondition(Record):
    """A trailing stop: holds on the tick where ``field`` retreats ``offset`` (or
    ``offset_percent``) from its best value since activation. ``direction`` "down" (the
    default for sells) watches the highest price and fires on a drop; "up" (buys) the lowest
    price and fires on a rise. Intake fills the direction from the order's side if omitted."""

    kind: Literal["trailing"] = "trailing"
    instrument_name: str | None = Field(None, min_length=1, max_length=64)
    field: Literal["last_price", "mark_price", "index_price"] = "last_price"
    offset: float | None = Field(None, gt=0, allow_inf_nan=False)
    offset_percent: float | None = Field(None, gt=0, lt=100, allow_inf_nan=False)
    direction: Literal["down", "up"] | None = None

    @model_validator(mode="after")
    def _one_offset(self) -> TrailingCondition:
        if (self.offset is None) == (self.offset_percent is None):
            raise ValueError("give exactly one of offset and offset_percent")
        return self


class ExpirationCondition(Record):
    """Not a condition to meet: the order expires if not triggered within ``seconds``."""

    kind: Literal["expiration"] = "expiration"
    seconds: float = Field(gt=0, allow_inf_nan=False)


Condition = Annotated[
    PriceCondition | TimeCondition | TrailingCondition | ExpirationCondition,
    Field(discriminator="kind"),
]
CONDITION_ADAPTER: TypeAdapter[Condition] = TypeAdapter(Condition)


def parse_condition(raw: dict[str, Any]) -> Condition:
    """Validate one condition object (raises ``pydantic.ValidationError``)."""
    return CONDITION_ADAPTER.validate_python(raw)


class TriggerKind(StrEnum):
    RELEASE = "release"  # its time or its conditions came: into the priority queue
    EXPIRE = "expire"  # expiration passed, or a time window closed before it triggered
    REJECT = "reject"  # refused when leaving the queue (e.g. a risk limit now breached)
    CREATE = "create"  # a linked child order, created by its parent's intake
    LINK = "link"  # a linked order's fill (or end), for its parent/siblings/children
    # Ended orders of one partition to take out of the table (their markers stay), markers to
    # forget: ``details`` lists them (oms.orders.retention.PurgeBatch); ``order_id`` is one of
    # them, so the trigger reaches their partition's writer.
    PURGE = "purge"
    # A strategy's decision about an order working through children (a routed order's
    # attempt): recorded on the order before its children are published, so a decision takes
    # effect once whoever makes it (oms.orders.decisions); ``details`` carries the step, the
    # child requests and the events.
    ROUTE = "route"


class OrderTrigger(Record):
    """Internal command on ``order-triggers`` (keyed by order id): the trigger engine or the
    dispatcher asks the ``release`` agent, the table's writer for the order's partition, to
    release, expire or reject a held order. Applied only while the order is still held
    (``waiting``, or ``queued`` for expire/reject), so a trigger sent twice acts once. (Other
    kinds: linked orders' creations and facts, purges, strategies' decisions.)"""

    order_id: str
    kind: TriggerKind
    reason: str
    reason_code: ReasonCode | None = None
    # Evidence for the audit: which tick, which values, which conditions held.
    details: dict[str, Any] = Field(default_factory=dict)
    # When the engine decided (ms); the tick's own timestamp is in details.
    fired_at: int = Field(default_factory=now_ms)
