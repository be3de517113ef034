"""The chaos audit on synthetic inputs: each way an order, a position or a notification can
go wrong is counted where it belongs, and the verdict line says so."""

from __future__ import annotations

from typing import Any

from oms.notify.rules import notice_from_event, route
from oms.schemas import (
    NotificationRecord,
    NotificationStatus,
    OrderEvent,
    OrderEventType,
    OrderStatus,
    ReasonCode,
)
from oms.schemas.notify_settings import NotificationSettings
from oms_dev.chaos.verdict import (
    KEYS,
    audit_notifications,
    audit_orders,
    compare_positions,
    make_result,
    verdict_line,
)


def _event(
    order_id: str,
    status: OrderStatus,
    event_type: OrderEventType,
    *,
    event_id: str | None = None,
    reason: ReasonCode | None = None,
) -> OrderEvent:
    return OrderEvent(
        event_id=event_id or f"{order_id}-{status.value}",
        event_type=event_type,
        order_id=order_id,
        account_id="acct",
        instrument_name="BTC-PERPETUAL",
        status=status,
        previous_status=OrderStatus.OPEN,
        reason_code=reason,
    )


FILLED = (OrderStatus.FILLED, OrderEventType.FILLED)
CANCELLED = (OrderStatus.CANCELLED, OrderEventType.CANCELLED)


def _terminal(*events: OrderEvent) -> dict[str, OrderEvent]:
    return {e.status.value: e for e in events if e.status is not None}


def test_audit_counts_each_fault_once_where_it_belongs() -> None:
    kind_of = {
        "ok-fill": "market_buy",
        "ok-cancel": "client_cancel",
        "ok-refused": "market_sell",
        "lost": "market_buy",
        "two-states": "market_sell",
        "wrong-kind": "client_cancel",
        "auto-no-reason": "auto_cancel",
        "exchange-open": "market_buy",
        "twice": "market_buy",
    }
    filled = {"order_state": "filled"}
    terminal = {
        "ok-fill": _terminal(_event("ok-fill", *FILLED)),
        "ok-cancel": _terminal(_event("ok-cancel", *CANCELLED)),
        "ok-refused": _terminal(
            _event(
                "ok-refused",
                OrderStatus.REJECTED,
                OrderEventType.REJECTED,
                reason=ReasonCode.RETRIES_EXHAUSTED,
            )
        ),
        "two-states": _terminal(_event("two-states", *FILLED), _event("two-states", *CANCELLED)),
        "wrong-kind": _terminal(_event("wrong-kind", *FILLED)),
        "auto-no-reason": _terminal(_event("auto-no-reason", *CANCELLED)),
        "exchange-open": _terminal(_event("exchange-open", *FILLED)),
        "twice": _terminal(_event("twice", *FILLED)),
    }
    at_exchange: dict[str, list[dict[str, Any]]] = {
        "ok-fill": [filled],
        "ok-cancel": [{"order_state": "cancelled"}],
        "two-states": [filled],
        "wrong-kind": [filled],
        "auto-no-reason": [{"order_state": "cancelled"}],
        "exchange-open": [{"order_state": "open"}],
        "twice": [filled, filled],
    }
    audit = audit_orders(kind_of, terminal, at_exchange)
    assert audit["lost"] == 1 and audit["details"]["examples"]["lost"] == ["lost"]
    assert audit["terminal"] == 7  # all but "lost" and "two-states"
    assert audit["duplicates_at_exchange"] == 1
    # two-states, wrong-kind, auto-no-reason (no auto_cancelled reason), exchange-open.
    assert audit["wrong_state"] == 4
    assert audit["details"]["several_terminal_states"] == 1
    assert audit["details"]["disagreeing_with_exchange"] == 1


def test_refused_order_found_at_the_exchange_is_wrong() -> None:
    refused = _event(
        "o", OrderStatus.REJECTED, OrderEventType.REJECTED, reason=ReasonCode.RETRIES_EXHAUSTED
    )
    audit = audit_orders({"o": "market_buy"}, {"o": _terminal(refused)}, {"o": [{}]})
    assert audit["wrong_state"] == 1 and audit["terminal"] == 1


def test_positions_compared_per_account_and_instrument_missing_is_zero() -> None:
    recorded = [
        {"account_id": "a", "instrument_name": "BTC-PERPETUAL", "size": 10.0},
        {"account_id": "b", "instrument_name": "BTC-PERPETUAL", "size": 0.0},
        {"account_id": "c", "instrument_name": "BTC-PERPETUAL", "size": 20.0},
    ]
    exchange = {
        ("a", "BTC-PERPETUAL"): 10.0,
        ("c", "BTC-PERPETUAL"): 30.0,
        ("d", "ETH-PERPETUAL"): 1.0,
    }
    mismatched, examples = compare_positions(recorded, exchange)
    assert mismatched == 2
    assert examples[0].startswith("c/BTC-PERPETUAL") and examples[1].startswith("d/")


def _record(
    event: OrderEvent,
    *,
    channel: str = "console",
    count: int = 1,
    status: NotificationStatus = NotificationStatus.SENT,
) -> NotificationRecord:
    notice = notice_from_event(event)
    assert notice is not None
    [r] = route(NotificationSettings(account_id=event.account_id), notice, 0)
    return NotificationRecord(
        notification_id=f"n-{event.event_id}",
        account_id=event.account_id,
        notification_type=notice.type.value,
        channel=channel,
        status=status,
        group_key=r.group_key,
        event_count=count,
    )


def test_notifications_lost_doubled_and_merged() -> None:
    a, b, c = (_event(o, *FILLED) for o in ("a", "b", "c"))
    a_again = a.model_copy()  # re-announced: same event id, one notice
    # b's created and filled events: two notices with different group keys.
    b_created = _event("b", OrderStatus.OPEN, OrderEventType.SUBMITTED)
    b_created.previous_status = OrderStatus.PENDING
    events = [a, a_again, b_created, b, c]
    records = [
        _record(a),
        _record(b_created),
        _record(b),
        _record(b),  # doubled
        _record(b, channel="email"),  # delivered elsewhere too: doubled
        _record(c, status=NotificationStatus.FAILED),  # failed attempts are not deliveries
    ]
    lost, doubled, details = audit_notifications(events, records)
    assert (lost, doubled) == (1, 2)  # c lost; b twice on console and once on email
    assert details["expected"] == 4 and details["failed_attempts"] == 1


def test_notifications_of_one_group_delivered_as_a_digest_count_once_each() -> None:
    first = _event("a", OrderStatus.OPEN, OrderEventType.ACCEPTED, event_id="e1")
    second = _event("a", OrderStatus.OPEN, OrderEventType.SUBMITTED, event_id="e2")
    second.previous_status = OrderStatus.PENDING
    digest = _record(first, count=2)
    assert audit_notifications([first, second], [digest])[:2] == (0, 0)
    assert audit_notifications([first, second], [_record(first)])[:2] == (1, 0)


def test_result_shape_and_verdict_line() -> None:
    clean: dict[str, Any] = dict(
        requests=1_000, terminal=1_000, lost=0, duplicates_at_exchange=0, wrong_state=0,
        positions_mismatched=0, notifications_lost=0, notifications_doubled=0,
        faults={"kills": 15, "summary": "15 kills"}, seconds=301.23, details={},
    )  # fmt: skip
    result = make_result("worker-kill", **clean)
    assert tuple(result) == KEYS and result["ok"] and result["seconds"] == 301.2
    assert verdict_line(result) == (
        "PASS  worker-kill  1,000 requests, 1,000 terminal, 0 lost, 0 duplicates at exchange, "
        "0 wrong state, 0 positions mismatched, 0/0 notifications lost/doubled (15 kills)"
    )
    lost_one = make_result("worker-kill", **{**clean, "terminal": 999, "lost": 1})
    assert not lost_one["ok"] and verdict_line(lost_one).startswith("FAIL  worker-kill  ")
    unchecked = make_result(
        "hostile",
        **{**clean, "positions_mismatched": None, "notifications_lost": None,
           "notifications_doubled": None},
    )  # fmt: skip
    assert unchecked["ok"] and "- positions mismatched, - notifications" in verdict_line(unchecked)
    down = make_result("broker-restart", **clean, extra_failure="services down: notifier")
    assert not down["ok"] and verdict_line(down).endswith("[services down: notifier]")
