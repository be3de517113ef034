"""Positions with Deribit's conventions, and the simple margin model built on them.

Inverse futures: ``size`` in USD (negative when short), average price harmonic in USD,
PnL in the coin: ``size * (1/avg - 1/price)``. Options: ``size`` in coin contracts, price in
coin, PnL ``size * (price - avg)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oms.exchange.paper.instruments import Instrument
from oms.exchange.paper.orders import EPS, Order

# Initial / maintenance margin as a fraction of the coin notional of futures positions.
FUTURE_IM_RATE = 0.02
FUTURE_MM_RATE = 0.01
# Short options: a fraction of the underlying plus the option's mark, per coin contract.
SHORT_OPTION_IM = 0.15
SHORT_OPTION_MM = 0.075


@dataclass(slots=True, eq=False)
class Position:
    """One account's position in one instrument."""

    inst: Instrument
    size: float = 0.0
    avg: float = 0.0
    realized: float = 0.0

    def apply_fill(self, is_buy: bool, amount: float, price: float) -> float:
        """Add a fill; returns the PnL (coin) it realizes by reducing the position."""
        delta = amount if is_buy else -amount
        size = self.size
        realized = 0.0
        if abs(size) < EPS or (size > 0) == is_buy:
            new = abs(size) + amount
            if self.inst.inverse:
                base = abs(size) / self.avg if abs(size) > EPS else 0.0
                self.avg = new / (base + amount / price)
            else:
                self.avg = (abs(size) * self.avg + amount * price) / new
            self.size = size + delta
        else:
            closing = min(abs(size), amount)
            sign = 1.0 if size > 0 else -1.0
            if self.inst.inverse:
                realized = sign * closing * (1.0 / self.avg - 1.0 / price)
            else:
                realized = sign * closing * (price - self.avg)
            self.size = round(size + delta, 10)
            if abs(self.size) < EPS:
                self.size = 0.0
                self.avg = 0.0
            elif (self.size > 0) != (size > 0):
                # Flipped through zero: the remainder opens a new position at this price.
                self.avg = price
        self.realized += realized
        return realized

    def floating(self, mark: float) -> float:
        """Unrealized PnL in the coin at ``mark``."""
        if abs(self.size) < EPS:
            return 0.0
        if self.inst.inverse:
            return self.size * (1.0 / self.avg - 1.0 / mark)
        return self.size * (mark - self.avg)

    def size_currency(self, mark: float) -> float:
        return self.size / mark if self.inst.inverse else self.size

    def initial_margin(self, mark: float) -> float:
        if self.inst.inverse:
            return abs(self.size) / mark * FUTURE_IM_RATE
        return -self.size * (SHORT_OPTION_IM + mark) if self.size < 0 else 0.0

    def maintenance_margin(self, mark: float) -> float:
        if self.inst.inverse:
            return abs(self.size) / mark * FUTURE_MM_RATE
        return -self.size * (SHORT_OPTION_MM + mark) if self.size < 0 else 0.0

    def to_dict(self, mark: float, index: float) -> dict[str, Any]:
        """The spec's ``position`` object."""
        size = self.size
        floating = self.floating(mark)
        d: dict[str, Any] = {
            "instrument_name": self.inst.name,
            "kind": self.inst.kind,
            "direction": "buy" if size > EPS else "sell" if size < -EPS else "zero",
            "size": size,
            "size_currency": self.size_currency(mark),
            "average_price": self.avg,
            "mark_price": mark,
            "index_price": index,
            "settlement_price": mark,
            "floating_profit_loss": floating,
            "realized_profit_loss": self.realized,
            "total_profit_loss": floating + self.realized,
            "initial_margin": self.initial_margin(mark),
            "maintenance_margin": self.maintenance_margin(mark),
            "open_orders_margin": 0.0,
            "delta": self.size_currency(mark),
            "leverage": self.inst.max_leverage,
            "realized_funding": 0.0,
            "interest_value": 0.0,
            "estimated_liquidation_price": 0.0,
        }
        if self.inst.inverse:
            d["average_price_usd"] = self.avg
            d["floating_profit_loss_usd"] = floating * mark
        else:
            d["average_price_usd"] = self.avg * index
            d["floating_profit_loss_usd"] = floating * index
            d["gamma"] = 0.0
            d["vega"] = 0.0
            d["theta"] = 0.0
        return d


def order_margin(order: Order) -> float:
    """Initial margin (coin) a resting order holds. Reduce-only orders hold none."""
    if order.reduce_only:
        return 0.0
    remaining = order.amount - order.filled
    if remaining <= EPS:
        return 0.0
    return initial_margin(order.inst, order.is_buy, remaining, order.price)


def initial_margin(inst: Instrument, is_buy: bool, amount: float, price: float) -> float:
    """Initial margin (coin) of an order for ``amount`` at ``price`` (``private/get_margins``
    and what resting orders hold)."""
    if inst.inverse:
        return amount / price * FUTURE_IM_RATE
    if is_buy:
        return amount * price
    return amount * (SHORT_OPTION_IM + price)
