"""Test data for the order domain and the agents that apply it."""

from __future__ import annotations

from oms.schemas import Direction, InstrumentSpec, OrderRecord, OrderStatus, OrderType


def order_record(status: OrderStatus = OrderStatus.SUBMITTED, **kw: object) -> OrderRecord:
    """A limit buy of 100 BTC-PERPETUAL at 50,000 (order ``o-1``, account ``acc``) in
    ``status``; ``kw`` overrides any field."""
    base: dict[str, object] = dict(
        order_id="o-1",
        request_id="r-1",
        account_id="acc",
        instrument_name="BTC-PERPETUAL",
        direction=Direction.BUY,
        order_type=OrderType.LIMIT,
        amount=100.0,
        price=50_000.0,
        status=status,
        version=2,
    )
    base.update(kw)
    return OrderRecord(**base)  # type: ignore[arg-type]


# Deribit's BTC perpetual as the domain tests see it: 0.5 USD ticks, 10 USD contracts.
BTC_PERPETUAL = InstrumentSpec(
    instrument_name="BTC-PERPETUAL",
    kind="future",
    base_currency="BTC",
    quote_currency="USD",
    settlement_currency="BTC",
    tick_size=0.5,
    contract_size=10,
    min_trade_amount=10,
)
