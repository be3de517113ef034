"""The order state machine: forward-only application of exchange reports."""

from __future__ import annotations

from oms.orders.state_machine import IllegalTransition, Outcome, apply_report, transition
from oms.schemas import (
    CommandType,
    ExchangeOrderState,
    ExecutionReport,
    Fill,
    OrderEventType,
    OrderStatus,
    PendingAmend,
    ReasonCode,
    ReportSource,
)

from .factories import order_record as _order


def _report(state: ExchangeOrderState | None, filled: float = 0.0, ts: int = 1, **kw: object):
    base: dict[str, object] = dict(
        report_id=f"r:{state}:{filled}:{ts}",
        order_id="o-1",
        account_id="acc",
        source=ReportSource.SUBSCRIPTION,
        instrument_name="BTC-PERPETUAL",
        exchange_order_id="ex-1",
        order_state=state,
        amount=100.0,
        price=50_000.0,
        filled_amount=filled,
        average_price=50_000.0 if filled else None,
        exchange_timestamp=ts,
    )
    base.update(kw)
    return ExecutionReport(**base)  # type: ignore[arg-type]


def test_open_then_partial_then_filled_emits_one_event_each() -> None:
    order = _order()
    seen = []
    for report in (
        _report(ExchangeOrderState.OPEN, 0, 1),
        _report(ExchangeOrderState.OPEN, 40, 2),
        _report(ExchangeOrderState.FILLED, 100, 3),
    ):
        result = apply_report(order, report)
        assert result.outcome is Outcome.APPLIED
        order = result.order
        seen += [e.event_type for e in result.events]
    assert seen == [
        OrderEventType.OPEN,
        OrderEventType.PARTIALLY_FILLED,
        OrderEventType.FILLED,
    ]
    assert order.status is OrderStatus.FILLED and order.filled_amount == 100
    assert order.version == 5


def test_subscription_before_rpc_reply_produces_no_duplicate_event() -> None:
    order = _order()
    from_stream = apply_report(order, _report(ExchangeOrderState.OPEN, 0, 5))
    assert [e.event_type for e in from_stream.events] == [OrderEventType.OPEN]
    rpc_reply = _report(ExchangeOrderState.OPEN, 0, 5, source=ReportSource.RPC)
    again = apply_report(from_stream.order, rpc_reply)
    assert again.outcome is Outcome.STALE and again.events == []


def test_late_open_after_fill_is_stale_not_a_regression() -> None:
    filled = apply_report(_order(), _report(ExchangeOrderState.FILLED, 100, 9)).order
    late = apply_report(filled, _report(ExchangeOrderState.OPEN, 0, 3))
    assert late.outcome is Outcome.STALE
    assert late.order.status is OrderStatus.FILLED


def test_contradicting_terminal_state_is_refused() -> None:
    cancelled = apply_report(_order(), _report(ExchangeOrderState.CANCELLED, 0, 4)).order
    result = apply_report(cancelled, _report(ExchangeOrderState.FILLED, 100, 9))
    assert result.outcome is Outcome.ILLEGAL
    assert result.order is cancelled and result.events == []


def test_submit_error_rejects_with_reason() -> None:
    report = _report(
        None, command=CommandType.SUBMIT, error_code=10009, error_message="not_enough_funds"
    )
    result = apply_report(_order(), report)
    assert result.order.status is OrderStatus.REJECTED
    assert result.events[0].reason_code is ReasonCode.NOT_ENOUGH_FUNDS


def test_failed_cancel_leaves_order_and_reports_command_rejected() -> None:
    order = _order(OrderStatus.OPEN)
    report = _report(
        None, command=CommandType.CANCEL, request_id="c-1", error_code=11044, error_message="x"
    )
    result = apply_report(order, report)
    assert result.order is order
    assert [e.event_type for e in result.events] == [OrderEventType.COMMAND_REJECTED]


def test_a_failed_cancel_is_no_longer_pending() -> None:
    """The refusal of the cancel on its way answers it (nothing sends it again); that of an
    earlier cancel leaves the later one pending."""
    order = _order(OrderStatus.OPEN).model_copy(update={"cancel_request_id": "c-2"})
    for request_id, pending in [("c-1", "c-2"), ("c-2", None)]:
        report = _report(
            None, command=CommandType.CANCEL, request_id=request_id, error_code=11044,
            error_message="x",
        )
        result = apply_report(order, report)
        assert result.order.status is OrderStatus.OPEN
        assert result.order.cancel_request_id == pending


def test_fills_are_counted_once_by_trade_id() -> None:
    fill = Fill(trade_id="t-1", amount=40, price=50_000, fee=0.01)
    trades = _report(None, fills=[fill])
    once = apply_report(_order(OrderStatus.OPEN), trades)
    twice = apply_report(once.order, trades)
    assert once.order.fee == 0.01 and once.order.trade_ids == ["t-1"]
    assert twice.outcome is Outcome.STALE and twice.order.fee == 0.01


def test_amend_report_emits_amended() -> None:
    order = _order(OrderStatus.OPEN, exchange_updated_at=1)
    result = apply_report(order, _report(ExchangeOrderState.OPEN, 0, 2, amount=200.0, price=49_000))
    assert [e.event_type for e in result.events] == [OrderEventType.AMENDED]
    assert result.order.amount == 200 and result.order.price == 49_000


def test_the_answer_to_the_edit_on_its_way_clears_it() -> None:
    """Done, refused or changing nothing: answered, so nothing sends it again. An answer to
    another request, or news that is not an answer, leaves it pending."""
    pending = PendingAmend(request_id="a-2", amount=200.0, price=49_000)
    order = _order(OrderStatus.OPEN, exchange_updated_at=1, amend_pending=pending)
    done = _report(
        ExchangeOrderState.OPEN, 0, 2, amount=200.0, price=49_000, command=CommandType.AMEND,
        request_id="a-2",
    )
    refused = _report(
        None, command=CommandType.AMEND, request_id="a-2", error_code=11044, error_message="x"
    )
    unchanged = _report(
        ExchangeOrderState.OPEN, 0, 1, command=CommandType.AMEND, request_id="a-2"
    )
    for answer in (done, refused, unchanged):
        assert apply_report(order, answer).order.amend_pending is None
    earlier = refused.model_copy(update={"request_id": "a-1"})
    news = _report(ExchangeOrderState.OPEN, 40, 2)
    for other in (earlier, news):
        assert apply_report(order, other).order.amend_pending == pending
    assert [e.event_type for e in apply_report(order, done).events] == [OrderEventType.AMENDED]


def test_event_ids_are_deterministic_for_replays() -> None:
    report = _report(ExchangeOrderState.OPEN, 0, 1)
    first = apply_report(_order(), report).events[0].event_id
    second = apply_report(_order(), report).events[0].event_id
    assert first == second


def test_illegal_direct_transition_raises() -> None:
    try:
        transition(_order(OrderStatus.FILLED), OrderStatus.OPEN)
    except IllegalTransition:
        return
    raise AssertionError("FILLED -> OPEN must be refused")


def test_reannouncement_repeats_the_current_status_event() -> None:
    from oms.orders.state_machine import reannouncement

    opened = apply_report(_order(), _report(ExchangeOrderState.OPEN, 0, 1))
    again = reannouncement(opened.order)
    assert again.event_type is OrderEventType.OPEN
    assert again.event_id == opened.events[0].event_id
    assert again.details == {"reannounced": True}
