"""Candles of the synthetic market for ``public/get_tradingview_chart_data``.

Prices are the instrument's mark at every market tick (the market maker quotes around it, so
it is where the instrument trades); volume and cost are the fills. One-minute bars are kept
per instrument for :data:`KEPT_MINUTES` and aggregated on request into Deribit's resolutions.
Kept in memory only: a restarted exchange charts from its restart on.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

MINUTE_MS = 60_000
KEPT_MINUTES = 2 * 1440
# Deribit's resolutions, in minutes ("1D" is a day).
RESOLUTIONS = {
    "1": 1, "3": 3, "5": 5, "10": 10, "15": 15, "30": 30, "60": 60, "120": 120, "180": 180,
    "360": 360, "720": 720, "1D": 1440,
}


@dataclass(slots=True)
class Bar:
    """One bar: its start (ms), prices, base-currency volume and quote-currency cost."""

    start: int
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0
    cost: float = 0.0

    def add_price(self, price: float) -> None:
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.close = price


class Candles:
    """Minute bars of every instrument."""

    def __init__(self, kept_minutes: int = KEPT_MINUTES) -> None:
        self._bars: dict[str, deque[Bar]] = {}
        self._kept = kept_minutes

    def _bar(self, name: str, ts: int, price: float) -> Bar:
        bars = self._bars.get(name)
        if bars is None:
            bars = self._bars[name] = deque(maxlen=self._kept)
        start = ts - ts % MINUTE_MS
        if bars and bars[-1].start == start:
            return bars[-1]
        if bars and bars[-1].start > start:  # a clock step back: keep to the current bar
            return bars[-1]
        bar = Bar(start, price, price, price, price)
        bars.append(bar)
        return bar

    def price(self, name: str, ts: int, price: float) -> None:
        """A market tick at ``price``."""
        self._bar(name, ts, price).add_price(price)

    def fill(self, name: str, ts: int, price: float, volume: float, cost: float) -> None:
        """A trade: moves the bar like a tick and adds to its volume and cost."""
        bar = self._bar(name, ts, price)
        bar.add_price(price)
        bar.volume += volume
        bar.cost += cost

    def chart(self, name: str, start: int, end: int, minutes: int) -> dict[str, Any]:
        """The bars of ``minutes`` each that start in ``[start, end]``, in Deribit's
        column form."""
        width = minutes * MINUTE_MS
        merged: list[Bar] = []
        for bar in self._bars.get(name, ()):
            bucket = bar.start - bar.start % width
            if bucket < start - start % width or bucket > end:
                continue
            if merged and merged[-1].start == bucket:
                last = merged[-1]
                last.high = max(last.high, bar.high)
                last.low = min(last.low, bar.low)
                last.close = bar.close
                last.volume += bar.volume
                last.cost += bar.cost
            else:
                merged.append(
                    Bar(bucket, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.cost)
                )
        return {
            "status": "ok" if merged else "no_data",
            "ticks": [b.start for b in merged],
            "open": [b.open for b in merged],
            "high": [b.high for b in merged],
            "low": [b.low for b in merged],
            "close": [b.close for b in merged],
            "volume": [b.volume for b in merged],
            "cost": [b.cost for b in merged],
        }
