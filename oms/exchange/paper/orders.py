"""Order records of the paper exchange and their wire form (the spec's ``order`` object)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oms.exchange.paper.instruments import Instrument

EPS = 1e-9

# Executed at the market when they run (a trailing stop is a stop-market that trails).
MARKET_TYPES = ("market", "stop_market", "take_market", "trailing_stop")
# Wait for a price trigger before they run.
TRIGGER_TYPES = ("stop_limit", "stop_market", "take_limit", "take_market", "trailing_stop")


@dataclass(slots=True, eq=False)
class Order:
    """A live or finished order. ``account`` is None for the synthetic market maker."""

    order_id: str
    account: str | None
    inst: Instrument
    is_buy: bool
    price: float
    amount: float
    order_type: str = "limit"
    time_in_force: str = "good_til_cancelled"
    label: str = ""
    post_only: bool = False
    reject_post_only: bool = False
    reduce_only: bool = False
    max_show: float | None = None
    filled: float = 0.0
    notional: float = 0.0  # sum(fill amount * fill price), for average_price
    commission: float = 0.0
    state: str = "open"
    created_ms: int = 0
    updated_ms: int = 0
    seq: int = 0  # time priority within a price level
    replaced: bool = False
    cancel_reason: str | None = None
    trigger: str | None = None
    trigger_price: float | None = None
    triggered: bool | None = None
    session_id: int | None = None  # for cancel-on-disconnect
    market_price: bool = False  # untriggered stop_market/take_market: price is "market_price"
    reserved: float = 0.0  # initial margin this order holds, in the settlement coin
    # Trailing stops: the distance kept from the best price of the trigger since placement,
    # and that price's value at placement.
    trigger_offset: float | None = None
    trigger_reference_price: float | None = None
    # Linked orders (linked_order_type). A primary lists the secondaries its fills place;
    # a secondary waits (``oto_waiting``, shown as untriggered) until then. Orders of one
    # one-cancels-other group share ``oco_ref``. ``linked_amount`` is the amount an order was
    # linked with: what an incremental fill condition scales.
    trigger_fill_condition: str | None = None
    oto_order_ids: list[str] | None = None
    is_primary_otoco: bool = False
    is_secondary_oto: bool = False
    oto_waiting: bool = False
    primary_order_id: str | None = None
    oco_ref: str | None = None
    linked_amount: float | None = None

    @property
    def is_market(self) -> bool:
        """Executed at the market (once triggered, for trigger orders)."""
        return self.order_type in MARKET_TYPES

    @property
    def is_trigger(self) -> bool:
        """Of a type that waits for a price trigger (whether or not it fired)."""
        return self.order_type in TRIGGER_TYPES

    @property
    def is_linked(self) -> bool:
        return self.oto_order_ids is not None or self.oco_ref is not None

    @property
    def remaining(self) -> float:
        return self.amount - self.filled

    @property
    def direction(self) -> str:
        return "buy" if self.is_buy else "sell"

    @property
    def is_open(self) -> bool:
        return self.state == "open" or self.state == "untriggered"

    @property
    def average_price(self) -> float:
        return self.notional / self.filled if self.filled > EPS else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The spec's ``order`` object. Built fresh on every call: it is what goes on the wire."""
        inst = self.inst
        d: dict[str, Any] = {
            "order_id": self.order_id,
            "order_state": self.state,
            "order_type": self.order_type,
            "time_in_force": self.time_in_force,
            "instrument_name": inst.name,
            "creation_timestamp": self.created_ms,
            "last_update_timestamp": self.updated_ms,
            "direction": "buy" if self.is_buy else "sell",
            "price": "market_price" if self.market_price else self.price,
            "amount": self.amount,
            "contracts": self.amount / inst.contract_size,
            "filled_amount": self.filled,
            "average_price": self.average_price,
            "commission": self.commission,
            "label": self.label,
            "post_only": self.post_only,
            "reject_post_only": self.reject_post_only,
            "reduce_only": self.reduce_only,
            "api": True,
            "web": False,
            "mobile": False,
            "replaced": self.replaced,
            "is_liquidation": False,
            "is_rebalance": False,
            "risk_reducing": False,
            "mmp": False,
            "max_show": self.max_show if self.max_show is not None else self.amount,
        }
        if self.cancel_reason is not None:
            d["cancel_reason"] = self.cancel_reason
        if self.trigger is not None:
            d["trigger"] = self.trigger
            d["trigger_price"] = self.trigger_price
            d["triggered"] = bool(self.triggered)
        if self.trigger_offset is not None:
            d["trigger_offset"] = self.trigger_offset
            d["trigger_reference_price"] = self.trigger_reference_price
        if self.trigger_fill_condition is not None:
            d["trigger_fill_condition"] = self.trigger_fill_condition
        if self.oto_order_ids is not None:
            d["oto_order_ids"] = list(self.oto_order_ids)
        if self.is_primary_otoco:
            d["is_primary_otoco"] = True
        if self.is_secondary_oto:
            d["is_secondary_oto"] = True
            d["primary_order_id"] = self.primary_order_id
        if self.oco_ref is not None:
            d["oco_ref"] = self.oco_ref
        return d
