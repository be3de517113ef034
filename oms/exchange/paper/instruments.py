"""The paper exchange's instrument catalogue, with Deribit's real conventions.

Inverse (``reversed``) futures are quoted in USD and traded in USD amounts (BTC: 10 USD
contracts); options are traded in coin and priced in coin. Dated expiries are computed
relative to "now" so the catalogue never contains an expired instrument.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
EXPIRY_HOUR_UTC = 8
# Starting index prices for the synthetic market.
START_INDEX = {"BTC": 95_000.0, "ETH": 3_500.0}


@dataclass(slots=True, eq=False)
class Instrument:
    """One tradeable instrument; ``to_dict`` is the spec's ``instrument`` object."""

    name: str
    kind: str  # future | option
    base: str
    contract_size: float
    min_trade_amount: float
    tick_size: float
    instrument_id: int
    creation_ms: int
    expiry_ms: int
    settlement_period: str  # perpetual | month | week
    maker_commission: float
    taker_commission: float
    max_leverage: int = 50
    option_type: str | None = None
    strike: float | None = None
    block_trade_tick_size: float = 0.01
    block_trade_min_trade_amount: float = 200_000
    block_trade_commission: float = 0.00025
    _dict: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def inverse(self) -> bool:
        """Coin-margined futures: amounts in USD, PnL in coin."""
        return self.kind == "future"

    @property
    def is_option(self) -> bool:
        return self.kind == "option"

    @property
    def currency(self) -> str:
        """Settlement (and margin) currency."""
        return self.base

    @property
    def index_name(self) -> str:
        return index_name(self.base)

    def to_dict(self) -> dict[str, Any]:
        """The spec's ``instrument`` object (built once: the catalogue is immutable)."""
        if not self._dict:
            d: dict[str, Any] = {
                "instrument_name": self.name,
                "instrument_id": self.instrument_id,
                "kind": self.kind,
                "base_currency": self.base,
                # Deribit quotes options in the coin; futures in USD.
                "quote_currency": self.base if self.is_option else "USD",
                "settlement_currency": self.base,
                "counter_currency": "USD",
                "contract_size": _num(self.contract_size),
                "min_trade_amount": _num(self.min_trade_amount),
                "tick_size": self.tick_size,
                "is_active": True,
                "state": "open",
                "creation_timestamp": self.creation_ms,
                "expiration_timestamp": self.expiry_ms,
                "settlement_period": self.settlement_period,
                "price_index": self.index_name,
                "maker_commission": self.maker_commission,
                "taker_commission": self.taker_commission,
                "block_trade_commission": self.block_trade_commission,
                "block_trade_tick_size": self.block_trade_tick_size,
                "block_trade_min_trade_amount": self.block_trade_min_trade_amount,
                "rfq": False,
            }
            if self.is_option:
                d["option_type"] = self.option_type
                d["strike"] = self.strike
            else:
                d["future_type"] = "reversed"
                d["instrument_type"] = "reversed"
                d["max_leverage"] = self.max_leverage
                d["max_liquidation_commission"] = 0.0075
            self._dict = d
        return self._dict


def index_name(currency: str) -> str:
    """Deribit's name of a currency's USD index (``btc_usd``)."""
    return f"{currency.lower()}_usd"


def _num(x: float) -> float | int:
    return int(x) if float(x).is_integer() else x


def _last_friday(year: int, month: int) -> dt.date:
    last_day = calendar.monthrange(year, month)[1]
    d = dt.date(year, month, last_day)
    return d - dt.timedelta(days=(d.weekday() - 4) % 7)


def next_expiry(now: dt.datetime, quarterly: bool, min_days: int = 7) -> dt.datetime:
    """The next last-Friday-of-month (quarterly: Mar/Jun/Sep/Dec) 08:00 UTC expiry that is at
    least ``min_days`` away, as Deribit lists its monthly and quarterly contracts."""
    year, month = now.year, now.month
    while True:
        if not quarterly or month % 3 == 0:
            day = _last_friday(year, month)
            expiry = dt.datetime(day.year, day.month, day.day, EXPIRY_HOUR_UTC, tzinfo=dt.UTC)
            if expiry - now >= dt.timedelta(days=min_days):
                return expiry
        month += 1
        if month > 12:
            year, month = year + 1, 1


def expiry_code(expiry: dt.datetime) -> str:
    """Deribit's date code: ``25DEC26`` (day without a leading zero)."""
    return f"{expiry.day}{MONTHS[expiry.month - 1]}{expiry.year % 100:02d}"


def default_instruments(now_ms: int) -> list[Instrument]:
    """Perpetuals for BTC and ETH, a quarterly BTC future and a few BTC options."""
    now = dt.datetime.fromtimestamp(now_ms / 1000, tz=dt.UTC)
    created = now_ms - 30 * 86_400_000
    perpetual_expiry = 32_503_708_800_000  # Deribit's "never" (3000-01-01)
    out = [
        Instrument(
            "BTC-PERPETUAL",
            "future",
            "BTC",
            10,
            10,
            0.5,
            124972,
            created,
            perpetual_expiry,
            "perpetual",
            0.0,
            0.0005,
        ),
        Instrument(
            "ETH-PERPETUAL",
            "future",
            "ETH",
            1,
            1,
            0.05,
            124887,
            created,
            perpetual_expiry,
            "perpetual",
            0.0,
            0.0005,
        ),
    ]
    quarter = next_expiry(now, quarterly=True)
    out.append(
        Instrument(
            f"BTC-{expiry_code(quarter)}",
            "future",
            "BTC",
            10,
            10,
            2.5,
            300001,
            created,
            int(quarter.timestamp() * 1000),
            "month",
            -0.0001,
            0.0005,
        )
    )
    month = next_expiry(now, quarterly=False)
    atm = math.floor(START_INDEX["BTC"] / 5000) * 5000
    iid = 400001
    for strike in (atm - 5000, atm, atm + 5000):
        for option_type in ("call", "put"):
            name = f"BTC-{expiry_code(month)}-{strike}-{option_type[0].upper()}"
            out.append(
                Instrument(
                    name,
                    "option",
                    "BTC",
                    1,
                    0.1,
                    0.0005,
                    iid,
                    created,
                    int(month.timestamp() * 1000),
                    "month",
                    0.0003,
                    0.0003,
                    option_type=option_type,
                    strike=float(strike),
                    block_trade_tick_size=0.0001,
                    block_trade_min_trade_amount=25,
                    block_trade_commission=0.00015,
                )
            )
            iid += 1
    return out
