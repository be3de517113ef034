"""The synthetic market: seeded random-walk index prices, mark prices derived from them and
the market maker's resting quotes.

Everything random comes from one ``random.Random(seed)`` consumed in a fixed order per step,
so the same seed gives the same index path and quotes for the same number of steps,
whatever the users trade.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

from oms.exchange.paper.instruments import START_INDEX, Instrument

YEAR_MS = 365 * 86_400_000
OPTION_VOL = 0.6
FUTURE_CARRY = 0.05  # annual basis of dated futures over the index
LEVELS = 5


def _norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def black_scholes(spot: float, strike: float, years: float, vol: float, is_call: bool) -> float:
    """Option value in USD (zero rates)."""
    if years <= 0 or vol <= 0:
        return max(0.0, spot - strike) if is_call else max(0.0, strike - spot)
    sd = vol * math.sqrt(years)
    d1 = (math.log(spot / strike) + 0.5 * sd * sd) / sd
    d2 = d1 - sd
    if is_call:
        return spot * _norm_cdf(d1) - strike * _norm_cdf(d2)
    return strike * _norm_cdf(-d2) - spot * _norm_cdf(-d1)


def option_delta(spot: float, strike: float, years: float, vol: float, is_call: bool) -> float:
    if years <= 0:
        return (1.0 if spot > strike else 0.0) if is_call else (-1.0 if spot < strike else 0.0)
    sd = vol * math.sqrt(years)
    d1 = (math.log(spot / strike) + 0.5 * sd * sd) / sd
    return _norm_cdf(d1) if is_call else _norm_cdf(d1) - 1.0


class SyntheticMarket:
    """Index and mark prices plus market-maker quotes for a set of instruments."""

    def __init__(self, instruments: list[Instrument], seed: int, volatility: float = 2e-4) -> None:
        self.instruments = instruments
        self.rng = random.Random(seed)
        self.volatility = volatility
        self.currencies = sorted({i.base for i in instruments})
        self.index = {c: START_INDEX.get(c, 100.0) for c in self.currencies}
        self.steps = 0
        self.marks: dict[str, float] = {}
        self._reprice(int(time.time() * 1000))

    def step(self, now_ms: int | None = None) -> None:
        """Advance every index one random-walk step and reprice the marks."""
        for c in self.currencies:
            self.index[c] *= math.exp(self.volatility * self.rng.gauss(0.0, 1.0))
        self.steps += 1
        self._reprice(now_ms if now_ms is not None else int(time.time() * 1000))

    def _reprice(self, now_ms: int) -> None:
        for inst in self.instruments:
            spot = self.index[inst.base]
            if inst.is_option:
                years = max(0.0, (inst.expiry_ms - now_ms) / YEAR_MS)
                usd = black_scholes(
                    spot, inst.strike or spot, years, OPTION_VOL, inst.option_type == "call"
                )
                self.marks[inst.name] = usd / spot
            elif inst.settlement_period == "perpetual":
                self.marks[inst.name] = spot
            else:
                years = max(0.0, (inst.expiry_ms - now_ms) / YEAR_MS)
                self.marks[inst.name] = spot * (1.0 + FUTURE_CARRY * years)

    def mark(self, inst: Instrument) -> float:
        return self.marks[inst.name]

    def state(self) -> dict[str, Any]:
        """Everything a restart needs to continue the walk where it was (JSON-able)."""
        version, internal, gauss_next = self.rng.getstate()
        return {
            "index": dict(self.index),
            "steps": self.steps,
            "rng": [version, list(internal), gauss_next],
        }

    def restore_state(self, state: dict[str, Any], now_ms: int | None = None) -> None:
        """Continue from a :meth:`state`: same prices, same random sequence from here on."""
        for currency, price in state["index"].items():
            if currency in self.index:
                self.index[currency] = float(price)
        self.steps = int(state["steps"])
        version, internal, gauss_next = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss_next))
        self._reprice(now_ms if now_ms is not None else int(time.time() * 1000))

    def quotes(self, inst: Instrument) -> list[tuple[bool, int, float]]:
        """The market maker's book for this step: ``(is_buy, price_ticks, amount)``."""
        mark = self.marks[inst.name]
        tick = inst.tick_size
        rng = self.rng
        if inst.is_option:
            half = max(tick, mark * 0.03)
            lot, max_lots = inst.min_trade_amount, 50
        else:
            half = max(tick, mark * 0.0002)
            lot, max_lots = inst.min_trade_amount * 10, 50
        step_ticks = max(1, round(half / tick))
        bid = math.floor((mark - half) / tick)
        ask = math.ceil((mark + half) / tick)
        if ask <= bid:
            ask = bid + 1
        out: list[tuple[bool, int, float]] = []
        for level in range(LEVELS):
            b = bid - level * step_ticks
            a = ask + level * step_ticks
            bid_amount = round(rng.randint(1, max_lots) * lot, 8)
            ask_amount = round(rng.randint(1, max_lots) * lot, 8)
            if b >= 1:
                out.append((True, b, bid_amount))
            out.append((False, a, ask_amount))
        return out
