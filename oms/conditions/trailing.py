"""Trailing stops without a per-tick scan.

A trailing stop fires when the price retreats ``offset`` (absolute, or a fraction) from its
watermark: the best price seen since the stop was activated. Stops activated at different
times have different watermarks, but a new extreme lifts every lower watermark to the same
value, so stops that share a watermark are kept together in a *group*, ordered by offset. A tick
only touches:

* the groups whose watermark it exceeds: they merge into one (smaller into larger, so a stop is
  moved O(log n) times over its life) with the tick's value as their watermark;
* the groups whose trigger level (watermark minus their smallest offset) it reaches.

Everything works on a transformed value ``x``: ``x = price`` for a sell stop (watermark = the
highest price, fires on a drop) and ``x = -price`` for a buy stop (the lowest price, fires on a
rise), so one implementation serves both directions.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any


class _Group:
    __slots__ = ("alive", "offsets", "token", "wm")

    def __init__(self, wm: float) -> None:
        self.wm = wm
        self.offsets: list[tuple[float, int, int, Any]] = []  # (offset, seq, token, watch)
        self.token = 0
        self.alive = True


class TrailingBook:
    """Trailing stops of one instrument field, one direction and one offset type."""

    def __init__(self, percent: bool) -> None:
        self.percent = percent
        self._by_wm: list[tuple[float, int, _Group]] = []  # lowest watermark first
        self._levels: list[tuple[float, int, int, _Group]] = []  # highest level first (negated)
        self._seq = itertools.count()
        self._newest: _Group | None = None

    def __bool__(self) -> bool:
        return bool(self._by_wm)

    def level(self, wm: float, offset: float) -> float:
        """The value at which a stop with this watermark and offset fires."""
        return wm - abs(wm) * offset if self.percent else wm - offset

    def add(self, watch: Any, offset: float, x: float) -> None:
        """Activate a stop at the current value ``x`` (its first watermark)."""
        group = self._newest
        if group is None or not group.alive or group.wm != x:
            group = self._newest = _Group(x)
            heapq.heappush(self._by_wm, (x, next(self._seq), group))
        heapq.heappush(group.offsets, (offset, next(self._seq), watch.token, watch))
        self._push_level(group)

    def on_value(self, x: float) -> list[Any]:
        """Apply a new value; return the watches whose stop it hits (live or not: the caller
        checks their tokens)."""
        merged: _Group | None = None
        by_wm = self._by_wm
        while by_wm and by_wm[0][0] < x:
            group = heapq.heappop(by_wm)[2]
            if not group.alive:
                continue
            if merged is None:
                merged = group
            else:
                if len(merged.offsets) < len(group.offsets):
                    merged, group = group, merged
                for item in group.offsets:
                    heapq.heappush(merged.offsets, item)
                group.alive = False
        if merged is not None:
            merged.wm = x
            heapq.heappush(by_wm, (x, next(self._seq), merged))
            self._push_level(merged)
        hits: list[Any] = []
        levels = self._levels
        while levels and -levels[0][0] >= x:
            _, _, token, group = heapq.heappop(levels)
            if not group.alive or token != group.token:
                continue
            offsets = group.offsets
            while offsets and self.level(group.wm, offsets[0][0]) >= x:
                _, _, watch_token, watch = heapq.heappop(offsets)
                if watch_token == watch.token:
                    hits.append(watch)
            if offsets:
                self._push_level(group)
            else:
                group.alive = False
        return hits

    def _push_level(self, group: _Group) -> None:
        group.token += 1
        level = self.level(group.wm, group.offsets[0][0])
        heapq.heappush(self._levels, (-level, next(self._seq), group.token, group))
