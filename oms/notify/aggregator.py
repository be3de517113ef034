"""What to notify, and when: dedupe, grouping into pending notifications, emergency alerts and
their repeats until acknowledged.

No I/O. The time comes from an injected clock (ms), the accounts' settings from an injected
lookup, and every change that must survive a restart is collected as a state-store entry
(:meth:`Aggregator.changes`) for the caller to persist:

* ``p:<nid>``: a pending notification (``{"done": True, "at": ms}`` once delivered);
* ``a:<alert_id>``: an active (unacknowledged) emergency alert; deleted when acknowledged.

Idempotence across restarts: pending ids derive from the group and its first notice
(:func:`~oms.notify.model.pending_id`), a pending remembers the highest source offset it
applied per partition, and recent notice ids are remembered, so an event replayed after a
restart is recognised and not notified again.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from oms.notify.model import Notice, Pending, pending_id
from oms.notify.rules import Route, quiet_until, route
from oms.schemas import now_ms
from oms.schemas.notify_settings import NotificationSettings, Severity

# Notice ids remembered for dedupe (the oldest are forgotten first).
SEEN_CAPACITY = 500_000

Clock = Callable[[], int]
SettingsFor = Callable[[str], NotificationSettings]
# ("topic:partition", offset) of the record a notice came from.
Source = tuple[str, int]


class Aggregator:
    """Turns notices into pending notifications and hands out those that are due."""

    def __init__(
        self,
        *,
        settings_for: SettingsFor,
        max_group_events: int,
        clock: Clock = now_ms,
        seen_capacity: int = SEEN_CAPACITY,
    ) -> None:
        self._settings_for = settings_for
        self._max_group_events = max_group_events
        self._clock = clock
        self._seen_capacity = seen_capacity
        self.pendings: dict[str, Pending] = {}
        # (account, group key) -> the pending still open to more notices of that group.
        self.open_groups: dict[tuple[str, str], str] = {}
        self.last_sent: dict[tuple[str, str], int] = {}
        self.seen: OrderedDict[str, None] = OrderedDict()
        # Handed out by take_due and not delivered (or released) yet.
        self.inflight: set[str] = set()
        # Active alerts (alert id -> its state entry) and acknowledgements (alert id -> when).
        self.alerts: dict[str, dict[str, Any]] = {}
        self.acks: dict[str, int] = {}
        self.counters: Counter[str] = Counter()
        self._changes: dict[str, Any] = {}
        # Pendings grown since the last changes(): serialised once then, not once per notice.
        self._grown: set[str] = set()

    # -- state -----------------------------------------------------------------------------

    def restore(self, entries: Iterable[tuple[str, Any]]) -> None:
        """Take back the active alerts and unfinished pendings of a previous run."""
        for key, value in entries:
            if key.startswith("a:"):
                self.alerts[key[2:]] = value
            elif key.startswith("p:") and not value.get("done"):
                pending = Pending.from_dict(value)
                self.pendings[pending.nid] = pending
                if not pending.sealed:
                    self.open_groups[(pending.account_id, pending.group_key)] = pending.nid

    def changes(self) -> list[tuple[str, Any]]:
        """State entries changed since the last call, (key, value or None to delete); the
        caller persists them."""
        for nid in self._grown:
            pending = self.pendings.get(nid)
            if pending is not None:
                self._changes[f"p:{nid}"] = pending.to_dict()
        self._grown.clear()
        changes, self._changes = list(self._changes.items()), {}
        return changes

    # -- notices in ------------------------------------------------------------------------

    def admit(self, notice: Notice, source: Source | None = None) -> None:
        """Route a notice into pending notifications or raise its alert.

        ``source`` recognises a replay after a restart; the notice id recognises a
        re-announced event (same id, another offset)."""
        if not self._mark_seen(notice.notice_id):
            self.counters["duplicates"] += 1
            return
        self.counters["notices"] += 1
        now = self._clock()
        settings = self._settings_for(notice.account_id)
        routes = route(settings, notice, now)
        if not routes:
            self.counters["suppressed"] += 1
            return
        for r in routes:
            if r.emergency:
                self._raise_alert(notice, settings, r, now)
            else:
                self._group(notice, settings, r, now, source)

    def _mark_seen(self, notice_id: str) -> bool:
        """Remember a notice id; False if it was seen before."""
        if notice_id in self.seen:
            return False
        self.seen[notice_id] = None
        if len(self.seen) > self._seen_capacity:
            self.seen.popitem(last=False)
        return True

    def _group(
        self,
        notice: Notice,
        settings: NotificationSettings,
        r: Route,
        now: int,
        source: Source | None,
    ) -> None:
        quiet = quiet_until(settings, now)
        if quiet is not None:
            # Everything a route holds during quiet hours becomes one digest at their end.
            r = dataclasses.replace(r, group_key=f"quiet|{r.rule}")
        group = (notice.account_id, r.group_key)
        nid = self.open_groups.get(group)
        pending = self.pendings.get(nid) if nid else None
        if pending is not None and source is not None:
            if pending.applied.get(source[0], -1) >= source[1]:
                self.counters["replayed"] += 1
                return
        if pending is None or pending.sealed:
            due = now + int(r.group_wait_s * 1000)
            last = self.last_sent.get(group)
            if last is not None and r.group_interval_s:
                due = max(due, last + int(r.group_interval_s * 1000))
            if quiet is not None:
                due = max(due, quiet)
                self.counters["held_quiet"] += 1
            pending = Pending(
                nid=pending_id(notice.account_id, r.group_key, notice.notice_id),
                account_id=notice.account_id,
                type=notice.type,
                severity=r.severity,
                emergency=False,
                rule=r.rule,
                group_key=r.group_key,
                channels=list(r.channels),
                first_at=now,
                due_at=due,
            )
            self.pendings[pending.nid] = pending
            self.open_groups[group] = pending.nid
        pending.add(notice, settings.max_digest_items, source)
        if pending.count >= self._max_group_events:
            pending.due_at = min(pending.due_at, now)
        self._grown.add(pending.nid)

    # -- alerts ----------------------------------------------------------------------------

    def _raise_alert(
        self, notice: Notice, settings: NotificationSettings, r: Route, now: int
    ) -> None:
        alert_id = notice.alert_id or notice.notice_id
        if alert_id in self.alerts:
            self.counters["alert_already_active"] += 1
            return
        acked_at = self.acks.get(alert_id)
        if acked_at is not None and notice.timestamp <= acked_at:
            return
        alert = {
            "alert_id": alert_id,
            "account_id": notice.account_id,
            "notice": notice.to_dict(),
            "repeats": 0,
            "next_at": now + int(settings.repeat_interval_s * 1000),
        }
        self.alerts[alert_id] = alert
        self._changes[f"a:{alert_id}"] = alert
        self.counters["alerts_raised"] += 1
        self._emergency_pending(notice, alert_id, 0, now)

    def _emergency_pending(self, notice: Notice, alert_id: str, repeat: int, now: int) -> None:
        pending = emergency_pending(notice, alert_id, now, repeat)
        self.pendings[pending.nid] = pending
        self._changes[f"p:{pending.nid}"] = pending.to_dict()

    def _repeat_alerts(self, now: int) -> None:
        for alert_id, current in list(self.alerts.items()):
            if current["next_at"] > now:
                continue
            settings = self._settings_for(current["account_id"])
            repeats = int(current["repeats"]) + 1
            alert = {
                **current,
                "repeats": repeats,
                "next_at": now + int(settings.repeat_interval_s * 1000),
            }
            self.alerts[alert_id] = alert
            self._changes[f"a:{alert_id}"] = alert
            self.counters["alert_repeats"] += 1
            self._emergency_pending(
                Notice.from_dict(alert["notice"]), alert["alert_id"], repeats, now
            )

    def acknowledge(self, alert_id: str, acked_at: int) -> bool:
        """An alert was acknowledged at ``acked_at``: it stops repeating, and a notice of it
        no newer than that does not raise it again. True if it was active."""
        self.acks[alert_id] = acked_at
        if self.alerts.pop(alert_id, None) is None:
            return False
        self._changes[f"a:{alert_id}"] = None
        self.counters["alerts_acked"] += 1
        return True

    def forget_ack(self, alert_id: str) -> None:
        """The acknowledgement was pruned: forget it, as a restart after compaction would."""
        self.acks.pop(alert_id, None)

    # -- notifications out -----------------------------------------------------------------

    def take_due(self) -> list[Pending]:
        """Repeat the alerts that are due, then seal every due pending (no notice joins it
        any more) and hand it out; it stays in flight until :meth:`delivered` or
        :meth:`release`. Persist :meth:`changes` before sending what this returns."""
        now = self._clock()
        self._repeat_alerts(now)
        due = [p for p in self.pendings.values() if p.due_at <= now and p.nid not in self.inflight]
        for pending in due:
            if not pending.sealed:
                pending.sealed = True
                self.open_groups.pop((pending.account_id, pending.group_key), None)
                self._grown.add(pending.nid)
            self.inflight.add(pending.nid)
        return due

    def delivered(self, pending: Pending) -> None:
        """Delivery of ``pending`` is over (whatever the channels said): it is done."""
        now = self._clock()
        self.last_sent[(pending.account_id, pending.group_key)] = now
        self.pendings.pop(pending.nid, None)
        self._changes[f"p:{pending.nid}"] = {"done": True, "at": now}

    def release(self, nid: str) -> None:
        """``nid`` is no longer being delivered (done, or to be tried again when due)."""
        self.inflight.discard(nid)


def emergency_pending(notice: Notice, alert_id: str, now: int, repeat: int = 0) -> Pending:
    """A sealed, due-now emergency notification of ``notice`` to all the account's channels."""
    group_key = f"alert={alert_id}"
    pending = Pending(
        nid=pending_id(notice.account_id, group_key, notice.notice_id, repeat),
        account_id=notice.account_id,
        type=notice.type,
        severity=Severity.CRITICAL,
        emergency=True,
        rule="emergency",
        group_key=group_key,
        channels=[],
        first_at=now,
        due_at=now,
        alert_id=alert_id,
        repeat=repeat,
        sealed=True,
    )
    pending.add(notice, 1)
    return pending
