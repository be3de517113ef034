"""One audit and one result shape for every chaos scenario, and its one-line verdict.

The result dict (the suite's JSON, and what scenarios written elsewhere return too):
``scenario``, ``ok``, ``verdict`` ("PASS"/"FAIL"), ``requests``, ``terminal`` (orders with
exactly one terminal state), ``lost`` (orders with none), ``duplicates_at_exchange`` (labels
found more than once at the exchange), ``wrong_state``, ``positions_mismatched``,
``notifications_lost``, ``notifications_doubled`` (None: not checked), ``faults`` (what was
injected, how often it fired), ``seconds``, ``details`` (free form).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from oms.notify.rules import notice_from_event, route
from oms.positions.math import close_enough
from oms.schemas import (
    NotificationRecord,
    NotificationStatus,
    OrderEvent,
    OrderStatus,
    ReasonCode,
    now_ms,
)
from oms.schemas.notify_settings import NotificationSettings

TERMINAL = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED}
)
# What each kind of order in the flow must end as.
EXPECTED: dict[str, OrderStatus] = {
    "market_buy": OrderStatus.FILLED,
    "market_sell": OrderStatus.FILLED,
    "client_cancel": OrderStatus.CANCELLED,
    "auto_cancel": OrderStatus.CANCELLED,
}
# The exchange's ``order_state`` for an OMS terminal status.
_EXCHANGE_STATE = {OrderStatus.FILLED: "filled", OrderStatus.CANCELLED: "cancelled"}
# Accounts of the flow have no notification settings: the default route, console only.
DEFAULT_CHANNEL = "console"

KEYS = (
    "scenario",
    "ok",
    "verdict",
    "requests",
    "terminal",
    "lost",
    "duplicates_at_exchange",
    "wrong_state",
    "positions_mismatched",
    "notifications_lost",
    "notifications_doubled",
    "faults",
    "seconds",
    "details",
)


# A result's counts with their column titles, in the order reports and tables show them.
COUNT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("requests", "requests"),
    ("terminal", "terminal"),
    ("lost", "lost"),
    ("duplicates_at_exchange", "duplicates at exchange"),
    ("wrong_state", "wrong state"),
    ("positions_mismatched", "positions mismatched"),
    ("notifications_lost", "notifications lost"),
    ("notifications_doubled", "notifications doubled"),
)


def count_cell(value: Any) -> str:
    """A count as a table shows it: ``-`` for not checked, thousands separated."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


# The counts of audit_orders, under make_result's names.
ORDER_COUNTS = ("terminal", "lost", "duplicates_at_exchange", "wrong_state")


def make_result(
    scenario: str,
    *,
    requests: int,
    terminal: int,
    lost: int,
    duplicates_at_exchange: int,
    wrong_state: int,
    positions_mismatched: int | None,
    notifications_lost: int | None,
    notifications_doubled: int | None,
    faults: dict[str, Any],
    seconds: float,
    details: dict[str, Any],
    extra_failure: str | None = None,
) -> dict[str, Any]:
    """The shared result shape; ``ok`` holds when every count that was checked is clean
    (``extra_failure`` names a scenario-specific failure, e.g. a service that never came
    back)."""
    ok = (
        extra_failure is None
        and terminal == requests
        and lost == 0
        and duplicates_at_exchange == 0
        and wrong_state == 0
        and not positions_mismatched
        and not notifications_lost
        and not notifications_doubled
    )
    if extra_failure is not None:
        details = {**details, "failure": extra_failure}
    return {
        "scenario": scenario,
        "ok": ok,
        "verdict": "PASS" if ok else "FAIL",
        "requests": requests,
        "terminal": terminal,
        "lost": lost,
        "duplicates_at_exchange": duplicates_at_exchange,
        "wrong_state": wrong_state,
        "positions_mismatched": positions_mismatched,
        "notifications_lost": notifications_lost,
        "notifications_doubled": notifications_doubled,
        "faults": faults,
        "seconds": round(seconds, 1),
        "details": details,
    }


def audit_orders(
    kind_of: Mapping[str, str],
    terminal: Mapping[str, Mapping[str, OrderEvent]],
    at_exchange: Mapping[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    """Order outcomes: per order its terminal states (keyed by status, a re-announcement of
    the same status is one state) and the orders the exchange holds under its label.

    An order is in a wrong state when it has several terminal states, ends other than its
    kind expects, or disagrees with the exchange. Rejected is right only as retries
    exhausted with nothing at the exchange (every attempt was refused)."""
    final: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    lost: list[str] = []
    several: list[str] = []
    wrong: list[str] = []
    mismatch: list[str] = []
    twice: list[str] = []
    for order_id, kind in kind_of.items():
        states = terminal.get(order_id, {})
        orders = at_exchange.get(order_id, [])
        if len(orders) > 1:
            twice.append(order_id)
        if not states:
            lost.append(order_id)
            continue
        if len(states) > 1:
            several.append(order_id)
        status_value, event = next(iter(states.items()))
        status = OrderStatus(status_value)
        final[f"{kind}:{status_value}"] += 1
        if event.reason_code is not None:
            reasons[event.reason_code.value] += 1
        if status is OrderStatus.REJECTED:
            if event.reason_code is not ReasonCode.RETRIES_EXHAUSTED or orders:
                wrong.append(order_id)
        elif status is not EXPECTED[kind] or (
            kind == "auto_cancel" and event.reason_code is not ReasonCode.AUTO_CANCELLED
        ):
            wrong.append(order_id)
        elif not orders or orders[-1].get("order_state") != _EXCHANGE_STATE[status]:
            mismatch.append(order_id)
    wrong_state = set(several) | set(wrong) | set(mismatch)
    return {
        "terminal": sum(1 for oid in kind_of if len(terminal.get(oid, {})) == 1),
        "lost": len(lost),
        "duplicates_at_exchange": len(twice),
        "wrong_state": len(wrong_state),
        "details": {
            "final_states": dict(sorted(final.items())),
            "reason_codes": dict(sorted(reasons.items())),
            "several_terminal_states": len(several),
            "unexpected_state": len(wrong),
            "disagreeing_with_exchange": len(mismatch),
            "examples": {
                "lost": lost[:5],
                "several": several[:5],
                "wrong": wrong[:5],
                "mismatch": mismatch[:5],
                "twice": twice[:5],
            },
        },
    }


def order_counts(audit: Mapping[str, Any]) -> dict[str, int]:
    """The counts of :func:`audit_orders` named as :func:`make_result` takes them."""
    return {key: int(audit[key]) for key in ORDER_COUNTS}


def compare_positions(
    recorded: Iterable[Mapping[str, Any]], exchange: Mapping[tuple[str, str], float]
) -> tuple[int, list[str]]:
    """Positions whose recorded size differs from the exchange's (a missing one is size 0);
    returns the count and a few examples."""
    ours: dict[tuple[str, str], float] = {}
    for p in recorded:
        ours[(str(p["account_id"]), str(p["instrument_name"]))] = float(p.get("size") or 0.0)
    bad: list[str] = []
    for key in sorted(ours.keys() | exchange.keys()):
        mine, theirs = ours.get(key, 0.0), exchange.get(key, 0.0)
        if not close_enough(mine, theirs):
            bad.append(f"{key[0]}/{key[1]}: keeper {mine:g}, exchange {theirs:g}")
    return len(bad), bad[:5]


def expected_notifications(events: Iterable[OrderEvent]) -> Counter[str]:
    """Notices the notifier must deliver per group key, from the order events (distinct
    event ids; the notifier drops a re-announced event). Emergencies repeat until
    acknowledged, so they are not counted here."""
    seen: set[str] = set()
    expected: Counter[str] = Counter()
    now = now_ms()
    settings: dict[str, NotificationSettings] = {}
    for event in events:
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        notice = notice_from_event(event)
        if notice is None or notice.type.is_emergency:
            continue
        account = settings.setdefault(
            notice.account_id, NotificationSettings(account_id=notice.account_id)
        )
        for r in route(account, notice, now):
            expected[r.group_key] += 1
    return expected


def audit_notifications(
    events: Iterable[OrderEvent], records: Iterable[NotificationRecord]
) -> tuple[int, int, dict[str, Any]]:
    """(lost, doubled, details): notices per group key the rules should have sent against
    the events delivered (``sent`` records, their ``event_count``) per group key and channel.
    Lost: expected but not delivered; doubled: delivered more often than expected, or on a
    channel other than the default one."""
    expected = expected_notifications(events)
    delivered: Counter[tuple[str, str]] = Counter()
    failed = 0
    for record in records:
        if record.group_key is None or record.group_key not in expected:
            continue
        if record.status is NotificationStatus.SENT:
            delivered[(record.group_key, record.channel)] += record.event_count
        else:
            failed += 1
    lost = doubled = 0
    examples: list[str] = []
    for key, n in expected.items():
        got = delivered.get((key, DEFAULT_CHANNEL), 0)
        if got != n:
            examples.append(f"{key}: expected {n}, delivered {got}")
        lost += max(0, n - got)
        doubled += max(0, got - n)
    for (key, channel), got in delivered.items():
        if channel != DEFAULT_CHANNEL:
            doubled += got
            examples.append(f"{key} on {channel}: {got}")
    details = {
        "expected": sum(expected.values()),
        "delivered": sum(delivered.values()),
        "failed_attempts": failed,
        "examples": examples[:5],
    }
    return lost, doubled, details


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def verdict_line(result: Mapping[str, Any]) -> str:
    """``PASS  worker-kill  1,000 requests, 1,000 terminal, 0 lost, ...  (15 kills)``."""
    lost, doubled = result.get("notifications_lost"), result.get("notifications_doubled")
    notes = "-" if lost is None and doubled is None else f"{_n(lost)}/{_n(doubled)}"
    parts = [
        f"{result['requests']:,} requests",
        f"{result['terminal']:,} terminal",
        f"{result['lost']:,} lost",
        f"{result['duplicates_at_exchange']:,} duplicates at exchange",
        f"{result['wrong_state']:,} wrong state",
        f"{_n(result.get('positions_mismatched'))} positions mismatched",
        f"{notes} notifications lost/doubled",
    ]
    summary = result.get("faults", {}).get("summary")
    tail = f" ({summary})" if summary else ""
    failure = result.get("details", {}).get("failure")
    if failure:
        tail += f" [{failure}]"
    return f"{result['verdict']:<5} {result['scenario']}  {', '.join(parts)}{tail}"
