"""Channel names, who is subscribed to what, and fan-out of engine events as notifications.

Channels (Deribit's names): ``ticker.{instrument}.{interval}``,
``book.{instrument}.{interval}``, ``user.orders|trades|changes.{instrument}.{interval}``,
``user.orders|trades|changes.{kind}.{currency}.{interval}`` (kind and currency may be
``any``) and ``user.portfolio.{currency}``. ``raw`` user channels get one notification per
event; ``100ms`` ones are batched and flushed by :meth:`Hub.flush_batches`.
"""

from __future__ import annotations

from typing import Any

from oms.exchange.paper.engine import Engine
from oms.exchange.paper.instruments import Instrument
from oms.exchange.paper.orders import Order
from oms.exchange.paper.positions import Position
from oms.exchange.paper.session import Session, notification
from oms.exchange.paper.validation import to_price

INTERVALS = ("raw", "100ms", "agg2")
BOOK_DEPTH = 10_000  # book channels carry the whole book
USER_TOPICS = ("orders", "trades", "changes")
KINDS = ("future", "option", "spot", "future_combo", "option_combo", "any")
CURRENCIES = ("BTC", "ETH", "USDC", "USDT", "any")


class Hub:
    """Subscriptions of every session, and the engine's :class:`EventSink`."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.ticker_subs: dict[str, set[Session]] = {}  # instrument -> sessions
        self.book_subs: dict[str, set[Session]] = {}
        self.user_subs: dict[str, set[Session]] = {}  # account_id -> sessions
        self.portfolio_subs: set[Session] = set()
        # Per instrument, the book as last published: (change_id, bids, asks), ticks -> amount.
        self._books: dict[str, tuple[int, dict[int, float], dict[int, float]]] = {}
        self._candidates: dict[tuple[str, str], tuple[tuple[str, bool], ...]] = {}
        self.notifications = 0

    # ---- channel grammar -------------------------------------------------------------------

    def is_valid(self, channel: str, private: bool) -> bool:
        """Whether ``channel`` names something this exchange publishes."""
        assert self.engine is not None
        parts = channel.split(".")
        instruments = self.engine.instruments
        if parts[0] in ("ticker", "book"):
            return len(parts) == 3 and parts[1] in instruments and parts[2] in INTERVALS
        if parts[0] != "user" or not private or len(parts) < 3:
            return False
        if parts[1] == "portfolio":
            return len(parts) == 3 and parts[2].upper() in CURRENCIES
        if parts[1] not in USER_TOPICS or parts[-1] not in INTERVALS:
            return False
        if len(parts) == 4:
            return parts[2] in instruments
        return len(parts) == 5 and parts[2] in KINDS and parts[3] in CURRENCIES

    def subscribe(self, session: Session, channels: list[str], private: bool) -> list[str]:
        """Add the valid channels; returns them (Deribit leaves out the ones it refused)."""
        done = []
        for ch in channels:
            if not self.is_valid(ch, private):
                continue
            session.channels.add(ch)
            parts = ch.split(".")
            if parts[0] == "ticker":
                self.ticker_subs.setdefault(parts[1], set()).add(session)
            elif parts[0] == "book":
                self.book_subs.setdefault(parts[1], set()).add(session)
            elif session.account is not None:
                if parts[1] == "portfolio":
                    self.portfolio_subs.add(session)
                else:
                    self.user_subs.setdefault(session.account.account_id, set()).add(session)
            done.append(ch)
        return done

    def unsubscribe(self, session: Session, channels: list[str]) -> list[str]:
        """Remove channels; returns the ones that were subscribed."""
        done = [ch for ch in channels if ch in session.channels]
        session.channels.difference_update(done)
        session.books_sent.difference_update(done)
        self._reindex(session)
        return done

    def drop(self, session: Session) -> None:
        """Forget a closed session."""
        session.channels.clear()
        session.books_sent.clear()
        self._reindex(session)

    def _reindex(self, session: Session) -> None:
        for index in (self.ticker_subs, self.book_subs):
            for name, subs in list(index.items()):
                prefix = f"{'ticker' if index is self.ticker_subs else 'book'}.{name}."
                if session in subs and not any(c.startswith(prefix) for c in session.channels):
                    subs.discard(session)
        if not any(c.startswith("user.portfolio.") for c in session.channels):
            self.portfolio_subs.discard(session)
        if session.account is not None:
            user = self.user_subs.get(session.account.account_id)
            if user and not any(
                c.startswith("user.") and not c.startswith("user.portfolio.")
                for c in session.channels
            ):
                user.discard(session)

    # ---- user events (EventSink) -----------------------------------------------------------

    def _channels_for(self, inst: Instrument, topic: str) -> tuple[tuple[str, bool], ...]:
        key = (inst.name, topic)
        found = self._candidates.get(key)
        if found is None:
            names = [f"user.{topic}.{inst.name}"]
            for kind in (inst.kind, "any"):
                for cur in (inst.currency, "any"):
                    names.append(f"user.{topic}.{kind}.{cur}")
            found = tuple(
                (f"{n}.{iv}", iv == "raw") for n in names for iv in INTERVALS
            )
            self._candidates[key] = found
        return found

    def _deliver(
        self, account_id: str, inst: Instrument, topic: str, data: Any, as_list: bool
    ) -> None:
        sessions = self.user_subs.get(account_id)
        if not sessions:
            return
        candidates = self._channels_for(inst, topic)
        for session in sessions:
            chans = session.channels
            for channel, raw in candidates:
                if channel not in chans:
                    continue
                if raw:
                    session.notify(channel, [data] if as_list else data)
                    self.notifications += 1
                else:
                    session.batches.setdefault(channel, []).append(data)
            changes = self._channels_for(inst, "changes")
            for channel, raw in changes:
                if channel in chans:
                    item = (topic, data)
                    if raw:
                        session.notify(channel, _changes(inst, [item]))
                        self.notifications += 1
                    else:
                        session.batches.setdefault(channel, []).append(item)

    def on_order(self, order: Order) -> None:
        if order.account is None or order.account not in self.user_subs:
            return
        self._deliver(order.account, order.inst, "orders", order.to_dict(), as_list=False)

    def on_trade(self, account_id: str, inst: Instrument, trade: dict[str, Any]) -> None:
        if account_id in self.user_subs:
            self._deliver(account_id, inst, "trades", trade, as_list=True)

    def on_position(self, account_id: str, position: Position) -> None:
        if account_id not in self.user_subs or self.engine is None:
            return
        sessions = self.user_subs[account_id]
        inst = position.inst
        if not any(ch.startswith("user.changes.") for s in sessions for ch in s.channels):
            return
        data = position.to_dict(self.engine.mark(inst), self.engine.index(inst.base))
        for session in sessions:
            for channel, raw in self._channels_for(inst, "changes"):
                if channel in session.channels:
                    if raw:
                        session.notify(channel, _changes(inst, [("positions", data)]))
                    else:
                        session.batches.setdefault(channel, []).append(("positions", data))

    # ---- periodic publication --------------------------------------------------------------

    def flush_batches(self, sessions: list[Session]) -> None:
        """Send everything the 100ms channels buffered."""
        assert self.engine is not None
        for session in sessions:
            if not session.batches:
                continue
            batches, session.batches = session.batches, {}
            for channel, items in batches.items():
                topic = channel.split(".")[1]
                if topic == "trades":
                    session.notify(channel, items)
                elif topic == "orders":
                    # Deribit's 100ms order channels carry arrays of orders.
                    session.notify(channel, items)
                else:
                    by_inst: dict[str, list[tuple[str, Any]]] = {}
                    for kind, data in items:
                        by_inst.setdefault(data["instrument_name"], []).append((kind, data))
                    for name, group in by_inst.items():
                        session.notify(channel, _changes(self.engine.instruments[name], group))
                self.notifications += 1

    def publish_market(self, ts: int) -> None:
        """Tickers and book notifications for every subscribed instrument (one tick)."""
        engine = self.engine
        assert engine is not None
        for name, sessions in self.ticker_subs.items():
            if not sessions:
                continue
            inst = engine.instruments[name]
            data = engine.ticker(inst, ts)
            for interval in INTERVALS:
                channel = f"ticker.{name}.{interval}"
                text: str | None = None
                for session in sessions:
                    if channel in session.channels:
                        if text is None:
                            text = notification(channel, data)
                        session.send_text(text)
                        self.notifications += 1
        for name, sessions in self.book_subs.items():
            if sessions:
                self._publish_book(engine.instruments[name], sessions, ts)
            else:
                self._books.pop(name, None)

    def _publish_book(self, inst: Instrument, sessions: set[Session], ts: int) -> None:
        """Deribit's book channel: a snapshot to each new subscriber, then the changes since
        the previous notification (``new``/``change``/``delete`` levels, chained by
        ``prev_change_id``), only when something changed."""
        assert self.engine is not None
        book = self.engine.books[inst.name]
        bids = dict(book.bids.depth(BOOK_DEPTH))
        asks = dict(book.asks.depth(BOOK_DEPTH))
        prev = self._books.get(inst.name)
        if prev is None:
            change_id, changed = 1, True
            bid_changes: list[list[Any]] = []
            ask_changes: list[list[Any]] = []
        else:
            bid_changes = _level_changes(inst, prev[1], bids)
            ask_changes = _level_changes(inst, prev[2], asks)
            changed = bool(bid_changes or ask_changes)
            change_id = prev[0] + 1 if changed else prev[0]
        self._books[inst.name] = (change_id, bids, asks)
        snapshot: dict[str, Any] = {
            "type": "snapshot", "timestamp": ts, "instrument_name": inst.name,
            "change_id": change_id,
            "bids": [["new", to_price(t, inst), a] for t, a in bids.items()],
            "asks": [["new", to_price(t, inst), a] for t, a in asks.items()],
        }
        change: dict[str, Any] | None = None
        if changed and prev is not None:
            change = {
                "type": "change", "timestamp": ts, "instrument_name": inst.name,
                "prev_change_id": prev[0], "change_id": change_id,
                "bids": bid_changes, "asks": ask_changes,
            }
        for interval in INTERVALS:
            channel = f"book.{inst.name}.{interval}"
            texts: dict[str, str] = {}
            for session in sessions:
                if channel not in session.channels:
                    continue
                if channel not in session.books_sent:
                    kind, data = "snapshot", snapshot
                    session.books_sent.add(channel)
                elif change is not None:
                    kind, data = "change", change
                else:
                    continue
                text = texts.get(kind)
                if text is None:
                    text = texts[kind] = notification(channel, data)
                session.send_text(text)
                self.notifications += 1


    def publish_portfolio(self) -> None:
        """``user.portfolio.{currency}``: the account summary, once per tick."""
        engine = self.engine
        assert engine is not None
        for session in self.portfolio_subs:
            account = session.account
            if account is None:
                continue
            for ch in session.channels:
                if ch.startswith("user.portfolio."):
                    cur = ch.split(".")[2].upper()
                    for c in (("BTC", "ETH", "USDC") if cur == "ANY" else (cur,)):
                        session.notify(
                            ch, account.summary(c, engine.mark, engine.instruments)
                        )


def _level_changes(
    inst: Instrument, before: dict[int, float], after: dict[int, float]
) -> list[list[Any]]:
    """Deribit's book deltas from one side's levels (ticks -> amount) to the next."""
    out: list[list[Any]] = []
    for ticks in sorted(before.keys() | after.keys()):
        old, new = before.get(ticks), after.get(ticks)
        if new is None:
            out.append(["delete", to_price(ticks, inst), 0.0])
        elif old is None:
            out.append(["new", to_price(ticks, inst), new])
        elif old != new:
            out.append(["change", to_price(ticks, inst), new])
    return out


def _changes(inst: Instrument, items: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "instrument_name": inst.name,
        "orders": [],
        "trades": [],
        "positions": [],
    }
    for kind, item in items:
        data[kind].append(item)
    return data
