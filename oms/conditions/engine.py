"""The trigger engine: which waiting orders does this tick (or this moment) release?

Evaluating every conditional order on every tick (:mod:`oms.conditions.naive`) costs time per tick
in proportion to the number of resting orders. Here every condition is a *watch* sitting in exactly
one sorted structure, keyed by the value that would change its truth:

* per (instrument, field), a ``rise`` heap (fires when the value goes up through a threshold)
  and a ``fall`` heap (fires when it goes down through one), ordered by threshold;
* one clock heap for time conditions and expirations.

A tick only looks at the top of the heaps of its own instrument's fields and pops the watches
it flips, so its cost is O(fields + flipped x log n), independent of how many orders rest.

A level condition (``>=``, ``<`` ...) is tracked both ways: while false it waits in the heap
that would make it true; once true it moves to the heap that would make it false again. So each
order knows how many of its conditions hold right now, and fires when all (or any) do.
A cross (``crosses_above`` / ``crosses_below``) is an event: it holds on the tick that crosses,
then re-arms on the other side. A cross needs a previous value: until the first tick of its
field it is unarmed, and that first tick only arms it.

Removal is lazy: a watch carries a token, and heap entries with an old token are skipped.
Everything here is synchronous and pure (no I/O), so it can be benchmarked alone.

The engine keeps no prices of its own: the latest value of a field (what an order arriving
now is compared with, what a cross starts from, the evidence of what held) is read from the
worker's market cache (:mod:`oms.market.cache`) through ``latest``. A tick is applied to that
cache before it is handed to :meth:`TriggerEngine.on_tick`.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from oms.conditions.trailing import TrailingBook
from oms.market.cache import PRICE_FIELDS, LatestValue
from oms.schemas.conditions import (
    ExpirationCondition,
    Operator,
    PriceCondition,
    TimeCondition,
    TrailingCondition,
)

FIELDS: tuple[str, ...] = PRICE_FIELDS

# Watch kinds.
_LEVEL = 0
_CROSS = 1
_TIME = 2
_TRAIL = 3  # an event like a cross: holds on the tick that hits the stop

# Heap entries: (sort key, tie-break 0 inclusive / 1 strict, token, watch).
_HeapEntry = tuple[float, int, int, "_Watch"]


@dataclass(slots=True)
class Fired:
    """An order whose conditions came (``release``) or whose time ran out (``expire``)."""

    order_id: str
    kind: str  # "release" | "expire"
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


class _Watch:
    __slots__ = (
        "above",
        "entry",
        "inclusive",
        "index",
        "key",
        "kind",
        "threshold",
        "token",
        "true",
    )

    def __init__(
        self,
        entry: _Entry,
        index: int,
        kind: int,
        key: Any,
        threshold: float,
        above: bool,
        inclusive: bool = False,
    ) -> None:
        self.entry = entry
        self.inclusive = inclusive  # level: holds at equality (>=, <=)
        self.index = index  # position in the order's condition list (for the audit)
        self.kind = kind
        self.key = key  # (instrument, field) for prices, None for time
        self.threshold = threshold
        self.above = above  # level: true when value is above; cross: crosses upward
        self.token = 0
        self.true = False

    def __lt__(self, other: _Watch) -> bool:
        # Only reached on equal threshold, side and token: any stable order will do.
        return id(self) < id(other)


class _Entry:
    __slots__ = (
        "crossed_at",
        "crosses",
        "match_any",
        "n_levels",
        "n_true",
        "order_id",
        "watches",
    )

    def __init__(self, order_id: str, match_any: bool) -> None:
        self.order_id = order_id
        self.match_any = match_any
        self.watches: list[_Watch] = []
        self.n_levels = 0
        self.n_true = 0
        self.crosses = 0
        self.crossed_at = -1  # tick number of the last cross of one of its watches


class _Book:
    """Watches of one (instrument, field)."""

    __slots__ = ("fall", "rise", "trailing", "unarmed")

    def __init__(self) -> None:
        self.rise: list[_HeapEntry] = []
        self.fall: list[_HeapEntry] = []
        self.unarmed: list[_Watch] = []
        # (sell-side: watermark is the high, percent offsets) -> book
        self.trailing: dict[tuple[bool, bool], TrailingBook] = {}

    def __bool__(self) -> bool:
        return bool(self.rise or self.fall or self.unarmed or any(self.trailing.values()))


class TriggerEngine:
    """Indexes the conditions of waiting orders; feed it ticks and the clock.

    ``latest(instrument, field)``: the latest value of a price field (the market cache's)."""

    def __init__(self, latest: LatestValue) -> None:
        self._latest = latest
        self._entries: dict[str, _Entry] = {}
        # instrument -> field -> book
        self._books: dict[str, dict[str, _Book]] = {}
        self._clock: list[tuple[int, int, int, _Watch | _Entry]] = []
        self._seq = itertools.count()
        self._keys: dict[tuple[str, str], tuple[str, str]] = {}
        self.ticks = 0
        self.fired = 0

    # -- orders --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._entries

    def add(
        self,
        order_id: str,
        conditions: Sequence[
            PriceCondition | TimeCondition | TrailingCondition | ExpirationCondition
        ],
        *,
        match_any: bool = False,
        now_ms: int,
        release_at: int | None = None,
        expire_at: int | None = None,
    ) -> Fired | None:
        """Start watching an order. Price conditions must name their instrument.

        ``release_at`` is a delayed order's time (a ``time >=`` condition); ``expire_at`` its
        expiration. Returns a :class:`Fired` at once if the order is already due (all
        conditions hold on the latest known values), else None.
        """
        self.remove(order_id)
        entry = _Entry(order_id, match_any)
        clock: list[tuple[int, _Watch | _Entry]] = []
        all_conditions: list[Any] = list(conditions)
        if release_at is not None:
            all_conditions.append(TimeCondition(operator=">=", value=release_at))
        for index, cond in enumerate(all_conditions):
            if isinstance(cond, ExpirationCondition):
                at = now_ms + int(cond.seconds * 1000)
                expire_at = at if expire_at is None else min(expire_at, at)
            elif isinstance(cond, TimeCondition):
                after = cond.operator in (">", ">=")
                # ``due``: the first millisecond at which the condition's truth flips.
                due = cond.value + (1 if cond.operator in (">", "<=") else 0)
                watch = _Watch(entry, index, _TIME, None, due, after)
                entry.watches.append(watch)
                entry.n_levels += 1
                watch.true = (now_ms >= due) if after else (now_ms < due)
                if watch.true:
                    entry.n_true += 1
                if now_ms < due:
                    clock.append((due, watch))
            elif isinstance(cond, TrailingCondition):
                self._add_trailing_watch(entry, index, cond)
            else:
                assert cond.instrument_name is not None
                self._add_price_watch(entry, index, cond)
        self._entries[order_id] = entry
        for due, item in clock:
            heapq.heappush(self._clock, (due, next(self._seq), 0, item))
        if expire_at is not None:
            heapq.heappush(self._clock, (expire_at, next(self._seq), 0, entry))
        if self._due(entry):
            return self._fire(entry, "conditions held when the order arrived", None)
        if not entry.match_any and self._window_closed(entry):
            return self._expire(entry, "its time window had already closed")
        return None

    def _book(self, instrument: str, fld: str) -> tuple[tuple[str, str], _Book]:
        # One shared key tuple per (instrument, field): watches are many, keys are few.
        key = self._keys.setdefault((instrument, fld), (instrument, fld))
        book = self._books.setdefault(instrument, {}).get(fld)
        if book is None:
            book = self._books[instrument][fld] = _Book()
        return key, book

    def _add_trailing_watch(self, entry: _Entry, index: int, cond: TrailingCondition) -> None:
        assert cond.instrument_name is not None
        key, book = self._book(cond.instrument_name, cond.field)
        percent = cond.offset_percent is not None
        offset = cond.offset_percent / 100 if cond.offset_percent is not None else cond.offset
        assert offset is not None
        down = cond.direction != "up"
        watch = _Watch(entry, index, _TRAIL, key, offset, not down, percent)
        entry.watches.append(watch)
        entry.crosses += 1
        latest = self._latest(*key)
        if latest is None:
            book.unarmed.append(watch)
        else:
            self._arm_trailing(book, watch, latest)

    def _arm_trailing(self, book: _Book, watch: _Watch, value: float) -> None:
        down = not watch.above
        percent = watch.inclusive
        trailing = book.trailing.get((down, percent))
        if trailing is None:
            trailing = book.trailing[(down, percent)] = TrailingBook(percent)
        watch.token += 1
        trailing.add(watch, watch.threshold, value if down else -value)

    def _add_price_watch(self, entry: _Entry, index: int, cond: PriceCondition) -> None:
        assert cond.instrument_name is not None
        key, book = self._book(cond.instrument_name, cond.field.value)
        op = cond.operator
        latest = self._latest(*key)
        if op in (Operator.CROSSES_ABOVE, Operator.CROSSES_BELOW):
            watch = _Watch(entry, index, _CROSS, key, cond.value, op is Operator.CROSSES_ABOVE)
            entry.watches.append(watch)
            entry.crosses += 1
            if latest is None:
                book.unarmed.append(watch)
            else:
                self._arm_cross(book, watch, latest)
            return
        above = op in (Operator.GT, Operator.GE)
        inclusive = op in (Operator.GE, Operator.LE)
        watch = _Watch(entry, index, _LEVEL, key, cond.value, above, inclusive)
        entry.watches.append(watch)
        entry.n_levels += 1
        holds = latest is not None and _holds(latest, cond.value, above, inclusive)
        watch.true = holds
        if holds:
            entry.n_true += 1
        self._place_level(book, watch)

    def remove(self, order_id: str) -> bool:
        """Stop watching an order (cancelled, or released elsewhere). O(1): lazy removal."""
        entry = self._entries.pop(order_id, None)
        if entry is None:
            return False
        for watch in entry.watches:
            watch.token += 1
        return True

    def order_ids(self) -> Iterable[str]:
        return self._entries.keys()

    # -- market data and clock -----------------------------------------------------------

    def on_tick(self, tick: Any) -> list[Fired]:
        """Evaluate one ticker snapshot (``MarketTick`` or anything with the same attributes)
        that the market cache has applied already."""
        self.ticks += 1
        instrument = tick.instrument_name
        books = self._books.get(instrument)
        # Flips first, decisions after: an order may depend on several fields of this tick.
        touched: list[_Entry] = []
        for fld in FIELDS:
            value = getattr(tick, fld)
            if value is None:
                continue  # not quoted on this tick (e.g. empty side): skip, keep waiting
            if books is None:
                continue
            book = books.get(fld)
            if book is None:
                continue
            if book.unarmed:
                unarmed, book.unarmed = book.unarmed, []
                for watch in unarmed:
                    if self._entries.get(watch.entry.order_id) is watch.entry:
                        if watch.kind == _TRAIL:
                            self._arm_trailing(book, watch, value)
                        else:
                            self._arm_cross(book, watch, value)
            rise = book.rise
            while rise and (rise[0][0] < value or (rise[0][0] == value and rise[0][1] == 0)):
                _, _, token, watch = heapq.heappop(rise)
                if token == watch.token:
                    self._flip(book, watch, value, touched)
            fall = book.fall
            while fall and (-fall[0][0] > value or (-fall[0][0] == value and fall[0][1] == 0)):
                _, _, token, watch = heapq.heappop(fall)
                if token == watch.token:
                    self._flip(book, watch, value, touched)
            for (down, _), trailing in book.trailing.items():
                for hit in trailing.on_value(value if down else -value):
                    owner: _Entry = hit.entry
                    if self._entries.get(owner.order_id) is owner:
                        owner.crossed_at = self.ticks
                        touched.append(owner)
                        # Stays armed from here if the order does not fire now.
                        self._arm_trailing(book, hit, value)
        fired: list[Fired] = []
        for entry in touched:
            if self._entries.get(entry.order_id) is entry and self._due(entry):
                fired.append(self._fire(entry, "conditions held", tick))
        if books is not None and not any(books.values()):
            del self._books[instrument]
        return fired

    def next_deadline(self) -> int | None:
        """When :meth:`on_time` next has something to do (ms), if ever."""
        clock = self._clock
        while clock:
            _, _, token, item = clock[0]
            if _clock_item_alive(item, token, self._entries):
                return clock[0][0]
            heapq.heappop(clock)
        return None

    def on_time(self, now_ms: int) -> list[Fired]:
        """Apply the clock: time conditions that flip and expirations that pass."""
        fired: list[Fired] = []
        clock = self._clock
        while clock and clock[0][0] <= now_ms:
            _, _, token, item = heapq.heappop(clock)
            if not _clock_item_alive(item, token, self._entries):
                continue
            if isinstance(item, _Entry):
                fired.append(self._expire(item, "expired before its conditions came"))
                continue
            watch = item
            entry = watch.entry
            if watch.above:  # time >= T: now true for good
                watch.true = True
                entry.n_true += 1
                if self._due(entry):
                    fired.append(self._fire(entry, "its time came", None))
            else:  # time < T: false for good, so an all-match order can never trigger
                watch.true = False
                entry.n_true -= 1
                if not entry.match_any:
                    fired.append(self._expire(entry, "its time window closed"))
        return fired

    # -- internals -----------------------------------------------------------------------

    def _place_level(self, book: _Book, watch: _Watch) -> None:
        """Put a level watch where its next flip will find it."""
        inclusive = watch.inclusive
        watch.token += 1
        t = watch.threshold
        # A watch that holds waits for the value to leave its region, and vice versa.
        # Entry tuples encode inclusiveness in the tie-break (0 = fires at equality).
        if watch.above:
            if watch.true:  # value > t (or >=): becomes false when it falls (to/through) t
                heapq.heappush(book.fall, (-t, 1 if inclusive else 0, watch.token, watch))
            else:
                heapq.heappush(book.rise, (t, 0 if inclusive else 1, watch.token, watch))
        else:
            if watch.true:
                heapq.heappush(book.rise, (t, 1 if inclusive else 0, watch.token, watch))
            else:
                heapq.heappush(book.fall, (-t, 0 if inclusive else 1, watch.token, watch))

    def _arm_cross(self, book: _Book, watch: _Watch, value: float) -> None:
        watch.token += 1
        t = watch.threshold
        if watch.above:
            if value < t:  # below: armed, fires when the value reaches t
                heapq.heappush(book.rise, (t, 0, watch.token, watch))
                watch.true = False
            else:  # at or above: wait to go below first
                heapq.heappush(book.fall, (-t, 1, watch.token, watch))
                watch.true = True
        else:
            if value > t:
                heapq.heappush(book.fall, (-t, 0, watch.token, watch))
                watch.true = False
            else:
                heapq.heappush(book.rise, (t, 1, watch.token, watch))
                watch.true = True

    def _flip(self, book: _Book, watch: _Watch, value: float, touched: list[_Entry]) -> None:
        entry = watch.entry
        if watch.kind == _CROSS:
            crossed = not watch.true  # we were armed on the far side: this is the cross
            self._arm_cross(book, watch, value)
            if crossed:
                entry.crossed_at = self.ticks
                touched.append(entry)
            return
        watch.true = not watch.true
        entry.n_true += 1 if watch.true else -1
        self._place_level(book, watch)
        if watch.true:
            touched.append(entry)

    def _due(self, entry: _Entry) -> bool:
        crossed_now = entry.crossed_at == self.ticks
        if entry.match_any:
            return crossed_now or entry.n_true > 0
        if entry.n_true < entry.n_levels:
            return False
        if entry.crosses == 0:
            return entry.n_levels > 0
        # All levels hold and the (single) cross happens on this tick.
        return crossed_now and entry.crosses == 1

    def _window_closed(self, entry: _Entry) -> bool:
        return any(w.kind == _TIME and not w.above and not w.true for w in entry.watches)

    def _fire(self, entry: _Entry, reason: str, tick: Any) -> Fired:
        self.remove(entry.order_id)
        self.fired += 1
        return Fired(entry.order_id, "release", reason, self._evidence(entry, tick))

    def _expire(self, entry: _Entry, reason: str) -> Fired:
        self.remove(entry.order_id)
        self.fired += 1
        return Fired(entry.order_id, "expire", reason, self._evidence(entry, None))

    def _evidence(self, entry: _Entry, tick: Any) -> dict[str, Any]:
        """What held, with the values observed: stored on the order's event for the audit."""
        observed = []
        for watch in entry.watches:
            item: dict[str, Any] = {"index": watch.index, "held": watch.true}
            if watch.key is not None:
                item["instrument_name"], item["field"] = watch.key
                item["value"] = self._latest(*watch.key)
                item["threshold"] = watch.threshold
            else:
                item["time"] = watch.threshold
            observed.append(item)
        details: dict[str, Any] = {"conditions": observed}
        if tick is not None:
            details["tick"] = {
                "instrument_name": tick.instrument_name,
                "timestamp": tick.timestamp,
                **{f: getattr(tick, f) for f in FIELDS if getattr(tick, f) is not None},
            }
        return details


def _holds(value: float, threshold: float, above: bool, inclusive: bool) -> bool:
    if above:
        return value > threshold or (inclusive and value == threshold)
    return value < threshold or (inclusive and value == threshold)


def _clock_item_alive(item: _Watch | _Entry, token: int, entries: dict[str, _Entry]) -> bool:
    entry = item if isinstance(item, _Entry) else item.entry
    return entries.get(entry.order_id) is entry
