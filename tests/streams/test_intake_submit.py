"""Intake applies the domain's one decision: typed parameters parsed from ``metadata`` once,
then the execution strategy, recorded with its reason on the order's first event."""

from __future__ import annotations

from typing import Any

from oms.algos import twap
from oms.schemas import (
    ExchangeOrderState,
    ExecutionReport,
    OrderEvent,
    OrderEventType,
    OrderRecord,
    OrderRequest,
    OrderStatus,
    ReasonCode,
    now_ms,
)
from oms.schemas.commands import (
    CommandOrigin,
    InternalComponent,
    OrderCommand,
    OriginKind,
    internal_command,
)
from oms.settings import QueueSettings
from oms.streams.intake import IntakeContext, apply_command
from tests.orders.factories import BTC_PERPETUAL

PERP = BTC_PERPETUAL


class Executor:
    """Records what intake sends to the exchange."""

    def __init__(self) -> None:
        self.submitted: list[OrderRecord] = []

    async def submit(self, order: OrderRecord, *, check_label_first: bool) -> None:
        self.submitted.append(order)


async def _submit(
    origin: OriginKind = OriginKind.EXTERNAL,
    reports: list[ExecutionReport] | None = None,
    **fields: Any,
) -> tuple[dict[str, OrderRecord], list[OrderEvent], Executor]:
    table: dict[str, OrderRecord] = {}
    events: list[OrderEvent] = []
    executor = Executor()

    async def emit(event: OrderEvent) -> None:
        events.append(event)

    async def publish_report(report: ExecutionReport) -> None:
        if reports is not None:
            reports.append(report)

    async def nothing(*_: Any) -> None:
        return None

    ctx = IntakeContext(
        orders=table,
        emit=emit,
        dead_letter=nothing,
        source_topic="order-commands",
        executor=executor,  # type: ignore[arg-type]
        instrument=lambda name: PERP if name == PERP.instrument_name else None,
        account_known=lambda account: True,
        held=None,  # type: ignore[arg-type]
        queue_settings=QueueSettings(),
        on_fired=nothing,
        publish_trigger=nothing,
        publish_report=publish_report,
    )
    request = OrderRequest.model_validate(
        {
            "request_id": "r-1",
            "account_id": "acc",
            "instrument_name": PERP.instrument_name,
            "direction": "buy",
            "amount": 30,
            "order_type": "market",
            **fields,
        }
    )
    if origin is OriginKind.INTERNAL:
        command = internal_command(request, InternalComponent.ALGO)
    else:
        command = OrderCommand(origin=CommandOrigin(kind=origin, source="0:1"), request=request)
    await apply_command(ctx, command, replayed=False)
    return table, events, executor


async def test_a_twap_parent_is_worked_not_sent() -> None:
    table, events, executor = await _submit(
        metadata={"algo": "twap", "twap_duration": 6, "twap_slices": 3}
    )
    [event] = events
    assert event.event_type is OrderEventType.OPEN
    assert event.details["strategy"] == "sliced" and event.details["algo"] == "twap"
    assert "3 slices" in event.details["execution_reason"]
    assert executor.submitted == []
    # The record keeps the wire keys, and the lot the timer slices by.
    metadata = table[event.order_id].metadata
    assert (metadata["twap_slices"], metadata["twap_duration"], metadata["twap_lot"]) == (3, 6, 10)


async def test_a_bad_parameter_rejects_the_order_naming_it() -> None:
    table, events, executor = await _submit(
        metadata={"algo": "twap", "twap_duration": 6, "twap_slices": "three"}
    )
    [event] = events
    assert event.event_type is OrderEventType.REJECTED
    assert event.reason_code is ReasonCode.SCHEMA_INVALID
    assert event.message is not None and "metadata.twap_slices" in event.message
    assert table[event.order_id].status is OrderStatus.REJECTED and executor.submitted == []


async def test_an_immediate_order_is_sent_with_its_strategy_and_reason() -> None:
    _, events, executor = await _submit()
    [event] = events
    assert event.event_type is OrderEventType.SUBMITTED
    assert event.details["strategy"] == event.details["execution_strategy"] == "immediate"
    assert event.details["execution_reason"]
    assert [order.order_id for order in executor.submitted] == [event.order_id]


async def test_a_client_cannot_name_a_parent() -> None:
    # A child's news is folded into the parent it names: a client naming someone's order
    # there would add its own fills to it.
    reports: list[ExecutionReport] = []
    _, events, executor = await _submit(reports=reports, metadata={"parent_id": "victim"})
    [event] = events
    assert event.event_type is OrderEventType.REJECTED
    assert event.reason_code is ReasonCode.SCHEMA_INVALID
    assert event.message is not None and "metadata.parent_id" in event.message
    assert executor.submitted == [] and reports == []


async def test_a_child_refused_at_intake_tells_its_parent() -> None:
    # Refused before the exchange (here: an amount off the lot), so no exchange report would
    # ever reach the parent: intake reports the child ended, nothing filled.
    reports: list[ExecutionReport] = []
    _, events, executor = await _submit(
        OriginKind.INTERNAL, reports, amount=15, metadata={"parent_id": "parent-1"}
    )
    [event] = events
    assert event.event_type is OrderEventType.REJECTED and executor.submitted == []
    [report] = reports
    assert report.order_id == "parent-1" and report.request_id == event.order_id
    assert report.order_state is ExchangeOrderState.REJECTED and report.filled_amount == 0
    assert twap.is_child_report(report)


async def test_a_parent_ignores_news_of_another_accounts_child() -> None:
    table, events, _ = await _submit(
        metadata={"algo": "twap", "twap_duration": 6, "twap_slices": 3}
    )
    parent = table[events[0].order_id]
    news = ExecutionReport(
        report_id="child:x:1",
        order_id=parent.order_id,
        account_id="someone-else",
        source="reconcile",
        request_id="x",
        instrument_name=PERP.instrument_name,
        order_state=ExchangeOrderState.FILLED,
        amount=30,
        filled_amount=30,
        average_price=50_000.0,
    )
    result = twap.apply_child_report(parent, news)
    assert result.order is parent and result.events == []
    ours = news.model_copy(update={"account_id": parent.account_id})
    assert twap.apply_child_report(parent, ours).order.filled_amount == 30


async def test_a_late_twap_request_is_still_spread_over_its_duration() -> None:
    # Created 10 s before it reached the OMS (a queue, a worker down): its slices count from
    # when the parent started working, not from the client's clock, so they do not all go
    # out at once.
    created = now_ms() - 10_000
    table, events, _ = await _submit(
        created_at=created, metadata={"algo": "twap", "twap_duration": 6, "twap_slices": 3}
    )
    parent = table[events[0].order_id]
    params = twap.params_of(parent)
    assert params.start_ms is not None and params.start_ms >= created + 10_000
    assert [twap.due_at(parent, params, i) - params.start_ms for i in range(3)] == [0, 2000, 4000]
