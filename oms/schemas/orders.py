"""Order requests (the input contract), order records (state) and order events (output)."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal

from pydantic import Field, StrictFloat, model_validator
from pydantic_core import PydanticCustomError

from oms.schemas.base import DEFAULT_VENUE, MetadataValue, Record, now_ms
from oms.schemas.contingency import Contingency
from oms.schemas.enums import (
    CommandType,
    Direction,
    OrderEventType,
    OrderStatus,
    OrderType,
    Priority,
    ReasonCode,
    TimeInForce,
)

# Identifiers end up in Deribit labels, Kafka keys and SQL: keep them to a safe alphabet.
SafeId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]

MAX_METADATA_KEYS = 32


# The validation error type of a submit whose order_id is not the derived one.
ORDER_ID_MISMATCH_ERROR = "order_id_mismatch"


def derive_order_id(account_id: str, request_id: str) -> str:
    """The order id (and Deribit ``label``) for a submit: a pure function of who asked and
    their idempotency key, so a re-sent request maps to the same order and partition.

    ``"o-"`` + hex of the 12-byte BLAKE2b digest of ``account_id NUL request_id`` (UTF-8);
    the same as ``printf 'demo\0r-1' | b2sum -l 96`` (see the README's test vector)."""
    digest = hashlib.blake2b(f"{account_id}\x00{request_id}".encode(), digest_size=12).hexdigest()
    return f"o-{digest}"


class OrderRequest(Record):
    """A command from a trader or bot on ``oms.order-requests``.

    ``submit`` carries the ``submit_advanced_order`` fields; ``cancel`` and ``amend`` name an
    existing ``order_id``. ``request_id`` is the idempotency key. A submit's ``order_id`` may
    be omitted (it is derived); the signature travels in Kafka headers, not in the body.
    """

    schema_version: int = 1
    command: CommandType = CommandType.SUBMIT
    request_id: SafeId
    account_id: SafeId
    # Where the order trades: a venue configured in exchange.venues (intake refuses others,
    # reason unknown_venue). A cancel or amend acts where its order is, whatever it says.
    venue: SafeId = DEFAULT_VENUE
    order_id: SafeId | None = Field(
        None, description="target of cancel/amend; for submit it is derived if omitted"
    )
    instrument_name: str | None = Field(None, min_length=1, max_length=64)
    # Strict: a JSON true/false or a numeric string is a mistake, never a quantity or price.
    amount: StrictFloat | None = None
    direction: Direction | None = None
    order_type: OrderType = OrderType.LIMIT
    price: StrictFloat | None = None
    trigger_price: StrictFloat | None = None
    time_in_force: TimeInForce = TimeInForce.GOOD_TIL_CANCELLED
    post_only: bool = False
    reduce_only: bool = False
    execute_immediately: bool = True
    priority: Priority = Priority.NORMAL
    conditions: list[dict[str, Any]] = Field(default_factory=list, max_length=32)
    condition_match: Literal["all", "any"] = "all"
    execute_at: int | None = Field(None, description="release time, ms since epoch")
    delay: float | None = Field(None, description="release after this many seconds")
    expiration: float | None = Field(
        None, description="seconds after which a waiting order that has not triggered expires"
    )
    contingency: Contingency | None = Field(
        None, description="linked orders: oco, oto or bracket (see oms.schemas.contingency)"
    )
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)
    created_at: int = Field(default_factory=now_ms, description="client time, ms since epoch")

    @model_validator(mode="after")
    def _check_command_fields(self) -> OrderRequest:
        if len(self.metadata) > MAX_METADATA_KEYS:
            raise ValueError(f"metadata has more than {MAX_METADATA_KEYS} keys")
        if self.command is CommandType.SUBMIT:
            missing = [
                name
                for name in ("instrument_name", "amount", "direction")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(f"submit requires {', '.join(missing)}")
            expected = derive_order_id(self.account_id, self.request_id)
            if self.order_id is None:
                self.order_id = expected
            elif self.order_id != expected:
                # A free-form id would let one request_id map to two orders (and partitions),
                # defeating the duplicate check.
                raise PydanticCustomError(
                    ORDER_ID_MISMATCH_ERROR,
                    "order_id {given} of a submit is not derive_order_id(account_id, "
                    "request_id) = {expected}; omit order_id to have it derived",
                    {"given": self.order_id, "expected": expected},
                )
        elif self.order_id is None:
            raise ValueError(f"{self.command.value} requires order_id")
        return self

    @property
    def key(self) -> str:
        """Kafka key: the order id, so every message about an order shares a partition."""
        assert self.order_id is not None
        return self.order_id


class PendingAmend(Record):
    """An edit intake accepted and handed to the exchange: absolute values, so sending it
    again changes nothing it has not already changed."""

    request_id: str
    amount: float | None = None
    price: float | None = None


class OrderRecord(Record):
    """Latest state of one order (a row of the ClickHouse ``orders`` table)."""

    order_id: str
    request_id: str
    account_id: str
    venue: str = DEFAULT_VENUE
    instrument_name: str
    direction: Direction
    order_type: OrderType
    amount: float
    price: float | None = None
    trigger_price: float | None = None
    time_in_force: TimeInForce = TimeInForce.GOOD_TIL_CANCELLED
    post_only: bool = False
    reduce_only: bool = False
    execute_immediately: bool = True
    priority: Priority = Priority.NORMAL
    # Normalized condition objects (see oms.schemas.conditions), instrument filled in.
    conditions: list[dict[str, Any]] = Field(default_factory=list)
    condition_match: Literal["all", "any"] = "all"
    release_at: int | None = None  # delayed orders: when they enter the queue
    expire_at: int | None = None  # waiting orders expire at this time if not triggered
    queued_at: int | None = None  # entered the priority queue (arrival order within priority)
    triggered_at: int | None = None
    # Linked orders (oms.orders.links): group type, role, parent/siblings/children, and the
    # fills reported by the others (monotonic facts).
    links: dict[str, Any] | None = None
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)
    status: OrderStatus = OrderStatus.PENDING
    exchange_order_id: str | None = None
    filled_amount: float = 0.0
    average_price: float | None = None
    fee: float = 0.0
    reason_code: ReasonCode | None = None
    reason_message: str | None = None
    created_at: int = Field(default_factory=now_ms)
    submitted_at: int | None = None
    updated_at: int = Field(default_factory=now_ms)
    exchange_updated_at: int = 0
    # Monotonic per-order counter, bumped on every applied change; events carry it.
    version: int = 0
    # Recent cancel/amend request ids already applied (idempotency for non-submit commands).
    seen_request_ids: list[str] = Field(default_factory=list)
    # A cancel intake accepted and handed to the exchange, not answered yet (its request id).
    # Recorded with the order, so the cancel outlives the worker that was sending it: the
    # next owner finds it here and sends it again (by label, so at most once in effect).
    cancel_request_id: str | None = None
    # Likewise an edit accepted and not answered yet.
    amend_pending: PendingAmend | None = None
    trade_ids: list[str] = Field(default_factory=list)
    # Execution algorithms (TWAP): each child order's [filled_amount, average_price, done],
    # so the parent's fills are the exact sum of its children's.
    children: dict[str, list[float]] = Field(default_factory=dict)


class OrderEvent(Record):
    """Something that happened to an order, on ``oms.order-events`` (keyed by order id)."""

    event_id: str
    event_type: OrderEventType
    order_id: str
    account_id: str
    request_id: str | None = None
    instrument_name: str | None = None
    status: OrderStatus | None = None
    previous_status: OrderStatus | None = None
    reason_code: ReasonCode | None = None
    message: str | None = None
    direction: Direction | None = None
    amount: float | None = None
    price: float | None = None
    filled_amount: float = 0.0
    average_price: float | None = None
    exchange_order_id: str | None = None
    version: int = 0
    timestamp: int = Field(default_factory=now_ms)
    request_created_at: int | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    # Snapshot of the order after this event: sinks build the latest-state table from it.
    order: OrderRecord | None = None
