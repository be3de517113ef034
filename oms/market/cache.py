"""The one store of latest market data in a worker process.

Fed by one consumer (:class:`~oms.market.feed.TickFeed`, every worker reads the whole tick
stream) and read by everything that needs prices, each through a narrow read-only callable:

* the trigger engine (:mod:`oms.conditions.engine`): the latest value of an instrument's
  field (:meth:`MarketCache.value`), which conditions compare with and crosses start from;
* pre-trade risk (:mod:`oms.risk.engine`): marks (:meth:`MarketCache.mark`) and index prices
  per currency (:meth:`MarketCache.index_price`);
* execution algorithms (:mod:`oms.algos.scheduler`, chase): the newest tick of an instrument
  (:meth:`MarketCache.latest`).

One instrument's ticks arrive in order (the topic is keyed by instrument), so a tick older than
the one known is a replay (a restarted feed reading its warm-up again): it is not applied, and
the values stay those of the newest tick. A field a tick leaves empty (an empty book side)
keeps its last value. Plain data, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from oms.schemas import MarketTick
from oms.schemas.conditions import PriceField

# The ticker fields whose latest value is kept (the ones conditions may watch).
PRICE_FIELDS: tuple[str, ...] = tuple(f.value for f in PriceField)

# What readers take: the newest tick of an instrument; the latest value of one of its fields;
# a price by instrument (marks) or by currency (index prices).
LatestTick = Callable[[str], MarketTick | None]
LatestValue = Callable[[str, str], float | None]
LatestPrice = Callable[[str], float | None]


class MarketCache:
    """The newest tick and the latest value of each price field, per instrument.

    ``underlying(instrument)`` names an instrument's base currency (``None`` while unknown,
    e.g. before the instrument catalog is loaded): index prices are kept per currency.
    """

    def __init__(self, underlying: Callable[[str], str | None]) -> None:
        self._underlying = underlying
        self._ticks: dict[str, MarketTick] = {}
        self._values: dict[tuple[str, str], float] = {}
        # Per currency: (timestamp, index price) of the newest tick that carried one.
        self._index: dict[str, tuple[int, float]] = {}
        # Per instrument whose currency was not known yet when its index price came.
        self._unplaced: dict[str, tuple[int, float]] = {}
        self.applied = 0
        self.stale = 0

    # -- writing (the feed only) ---------------------------------------------------------

    def update(self, ticks: Iterable[MarketTick]) -> list[MarketTick]:
        """Apply ticks in arrival order; returns those applied (not older than the known)."""
        applied: list[MarketTick] = []
        known_ticks, values = self._ticks, self._values
        for tick in ticks:
            name = tick.instrument_name
            known = known_ticks.get(name)
            if known is not None and tick.timestamp < known.timestamp:
                self.stale += 1
                continue
            known_ticks[name] = tick
            for fld in PRICE_FIELDS:
                value = getattr(tick, fld)
                if value is not None:
                    values[(name, fld)] = value
            if tick.index_price is not None:
                self._place_index(name, tick.timestamp, tick.index_price)
            applied.append(tick)
        self.applied += len(applied)
        return applied

    def _place_index(self, instrument: str, timestamp: int, price: float) -> None:
        currency = self._underlying(instrument)
        if currency is None:
            self._unplaced[instrument] = (timestamp, price)
            return
        known = self._index.get(currency)
        if known is None or timestamp >= known[0]:
            self._index[currency] = (timestamp, price)

    # -- reading ---------------------------------------------------------------------------

    def latest(self, instrument: str) -> MarketTick | None:
        """The newest tick of ``instrument``."""
        return self._ticks.get(instrument)

    def value(self, instrument: str, fld: str) -> float | None:
        """The latest value of one of ``instrument``'s price fields (e.g. ``last_price``)."""
        return self._values.get((instrument, fld))

    def mark(self, instrument: str) -> float | None:
        """The latest mark price of ``instrument``."""
        return self._values.get((instrument, PriceField.MARK_PRICE.value))

    def index_price(self, currency: str) -> float | None:
        """The latest index price of a base currency (from any of its instruments' ticks)."""
        if self._unplaced:
            for instrument, (timestamp, price) in list(self._unplaced.items()):
                if self._underlying(instrument) is not None:
                    del self._unplaced[instrument]
                    self._place_index(instrument, timestamp, price)
        known = self._index.get(currency)
        return known[1] if known is not None else None

    def stats(self) -> dict[str, int]:
        """Counters for the worker's ``/stats``."""
        return {"instruments": len(self._ticks), "applied": self.applied, "stale": self.stale}
