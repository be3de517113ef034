"""The notifier's aggregator on its own (no Kafka, no channels): dedupe, grouping windows,
alerts repeating until acknowledged, and the state entries it asks to persist, all on an
injected clock."""

from __future__ import annotations

from typing import Any

from oms.notify.accounts import SettingsBook
from oms.notify.aggregator import Aggregator
from oms.notify.model import Notice
from oms.notify.settings_io import build_settings
from oms.schemas.notify_settings import NotificationType

T0 = 1_800_000_000_000  # ms


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1000)


def notice(n: int, kind: NotificationType = NotificationType.FILLED, **kw: Any) -> Notice:
    return Notice(
        notice_id=f"e-{n}", account_id="a", type=kind, timestamp=T0,
        order_id=f"o-{n}", instrument_name="BTC-PERPETUAL", **kw,
    )  # fmt: skip


def aggregator(clock: Clock, *, max_group_events: int = 500, **settings: Any) -> Aggregator:
    book = SettingsBook()
    book.apply(build_settings("a", **settings))
    return Aggregator(
        settings_for=book.settings_for, max_group_events=max_group_events, clock=clock
    )


FILLS_RULE = {"name": "fills", "event_types": ["filled"], "group_by": ["event_type"],
              "group_wait_s": 10, "group_interval_s": 60}  # fmt: skip


def test_a_group_waits_for_its_window_then_is_sealed_and_handed_out_once() -> None:
    clock = Clock()
    agg = aggregator(clock, rules=[FILLS_RULE])
    agg.admit(notice(1))
    clock.advance(3)
    agg.admit(notice(2))
    (pending,) = agg.pendings.values()
    assert pending.count == 2 and pending.due_at == T0 + 10_000
    clock.advance(6.9)
    assert agg.take_due() == []
    clock.advance(0.1)
    assert agg.take_due() == [pending]
    assert pending.sealed and pending.nid in agg.inflight
    assert agg.take_due() == []  # in flight: not handed out twice
    # A notice after sealing starts a new notification of the same group.
    agg.admit(notice(3))
    assert len(agg.pendings) == 2


def test_the_next_batch_of_a_group_waits_for_the_group_interval() -> None:
    clock = Clock()
    agg = aggregator(clock, rules=[FILLS_RULE])
    agg.admit(notice(1))
    clock.advance(10)
    (first,) = agg.take_due()
    agg.delivered(first)
    agg.release(first.nid)
    assert agg.pendings == {} and agg.inflight == set()
    agg.admit(notice(2))
    (second,) = agg.pendings.values()
    assert second.due_at == clock.now + 60_000  # last sent + group_interval_s, not + 10 s


def test_a_full_group_is_due_at_once() -> None:
    clock = Clock()
    agg = aggregator(clock, max_group_events=3, rules=[FILLS_RULE])
    for n in range(3):
        agg.admit(notice(n))
    assert len(agg.take_due()) == 1


def test_duplicates_and_replays_are_not_notified_again() -> None:
    clock = Clock()
    agg = aggregator(clock, rules=[FILLS_RULE])
    agg.admit(notice(1), ("events:0", 5))
    agg.admit(notice(1), ("events:0", 9))  # the same event re-announced
    agg.admit(notice(2), ("events:0", 5))  # a replay of an offset already applied
    agg.admit(notice(3), ("events:0", 6))
    (pending,) = agg.pendings.values()
    assert pending.count == 2 and pending.applied == {"events:0": 6}
    assert agg.counters["duplicates"] == 1 and agg.counters["replayed"] == 1


def test_an_alert_repeats_until_acknowledged() -> None:
    clock = Clock()
    agg = aggregator(clock, repeat_interval_s=60)
    agg.admit(notice(1, NotificationType.MARGIN_CALL, alert_id="margin_call:a:BTC"))
    (first,) = agg.take_due()  # due at once, sealed, to every channel
    assert first.emergency and first.sealed and first.channels == [] and first.repeat == 0
    agg.delivered(first)
    agg.release(first.nid)
    # Raised again while active: the same alert, nothing new.
    agg.admit(notice(2, NotificationType.MARGIN_CALL, alert_id="margin_call:a:BTC"))
    assert agg.counters["alert_already_active"] == 1 and agg.take_due() == []
    clock.advance(60)
    (again,) = agg.take_due()
    assert again.repeat == 1 and again.nid != first.nid
    assert agg.acknowledge("margin_call:a:BTC", acked_at=clock.now)
    clock.advance(600)
    assert agg.take_due() == []  # no repeat #2 (and #1 is still in flight)
    assert agg.counters["alert_repeats"] == 1 and agg.counters["alerts_acked"] == 1
    # A notice of the alert from before the acknowledgement does not raise it again.
    agg.admit(notice(3, NotificationType.MARGIN_CALL, alert_id="margin_call:a:BTC"))
    assert agg.alerts == {}


def test_changes_are_what_a_restart_needs_and_restore_takes_them_back() -> None:
    clock = Clock()
    agg = aggregator(clock, rules=[FILLS_RULE])
    agg.admit(notice(1), ("events:0", 1))
    agg.admit(notice(2, NotificationType.SYSTEM_ERROR, alert_id="system_error:x"))
    state = dict(agg.changes())
    assert agg.changes() == []  # handed over once
    assert {k[:2] for k in state} == {"p:", "a:"}
    grouped = next(v for k, v in state.items() if k.startswith("p:") and not v["emergency"])
    assert grouped["count"] == 1 and not grouped["sealed"]

    again = aggregator(Clock(), rules=[FILLS_RULE])
    again.restore(state.items())
    assert set(again.alerts) == {"system_error:x"}
    assert set(again.pendings) == {k[2:] for k in state if k.startswith("p:")}
    # The open group is open again: a later notice joins it, a replayed one does not.
    again.admit(notice(1), ("events:0", 1))
    again.admit(notice(3), ("events:0", 2))
    assert again.pendings[grouped["nid"]].count == 2

    # Delivered and acknowledged: the entries say so.
    clock.advance(10)
    for pending in agg.take_due():
        agg.delivered(pending)
    agg.acknowledge("system_error:x", clock.now)
    done = dict(agg.changes())
    assert all(v == {"done": True, "at": clock.now} for k, v in done.items() if k[:2] == "p:")
    assert done["a:system_error:x"] is None
    restarted = aggregator(Clock())
    merged = {k: v for k, v in {**state, **done}.items() if v is not None}  # None deletes
    restarted.restore(merged.items())
    assert restarted.pendings == {} and restarted.alerts == {}


def test_notices_in_quiet_hours_are_held_until_they_end() -> None:
    clock = Clock()  # 2027-01-15 08:00 UTC
    agg = aggregator(clock, quiet_hours=[{"start": "07:00", "end": "09:30"}])
    agg.admit(notice(1))
    agg.admit(notice(2, NotificationType.REJECTED))
    (held,) = agg.pendings.values()
    assert held.count == 2 and agg.counters["held_quiet"] == 1
    assert held.due_at == T0 + 90 * 60_000
    clock.advance(90 * 60 - 1)
    assert agg.take_due() == []
    clock.advance(1)
    assert agg.take_due() == [held]
