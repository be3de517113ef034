"""Market data and instrument specifications."""

from __future__ import annotations

from pydantic import Field

from oms.schemas.base import Record, now_ms


class MarketTick(Record):
    """A ticker snapshot on ``oms.market-ticks``, keyed by instrument (Deribit ``ticker``)."""

    instrument_name: str
    timestamp: int
    last_price: float | None = None
    mark_price: float | None = None
    index_price: float | None = None
    best_bid_price: float | None = None
    best_bid_amount: float | None = None
    best_ask_price: float | None = None
    best_ask_amount: float | None = None
    open_interest: float | None = None
    state: str = "open"
    received_at: int = Field(default_factory=now_ms)


class InstrumentSpec(Record):
    """The fields of Deribit's instrument object that order validation needs."""

    model_config = Record.model_config | {"extra": "ignore"}

    instrument_name: str
    kind: str
    base_currency: str
    quote_currency: str
    settlement_currency: str | None = None
    counter_currency: str | None = None
    tick_size: float
    contract_size: float
    min_trade_amount: float
    is_active: bool = True
    instrument_type: str | None = None  # "reversed" (inverse) or "linear"
    expiration_timestamp: int | None = None
    option_type: str | None = None
    strike: float | None = None
