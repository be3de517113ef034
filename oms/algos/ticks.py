"""The latest MarketTick per instrument, for execution algorithms (chase).

Fed by the worker's :class:`~oms.streams.tick_feed.TickFeed` (every worker reads the whole
tick stream); anything that needs prices takes its ``latest`` as a callable.
"""

from __future__ import annotations

from collections.abc import Iterable

from oms.schemas import MarketTick


class TickCache:
    """The newest tick per instrument."""

    def __init__(self) -> None:
        self._latest: dict[str, MarketTick] = {}

    def latest(self, instrument: str) -> MarketTick | None:
        return self._latest.get(instrument)

    def update(self, ticks: Iterable[MarketTick]) -> None:
        latest = self._latest
        for tick in ticks:
            known = latest.get(tick.instrument_name)
            if known is None or tick.timestamp >= known.timestamp:
                latest[tick.instrument_name] = tick
