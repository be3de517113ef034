"""Where exchange news is recorded: execution reports applied to the order table.

News comes two ways. The gateway's (the exchange's order and trade streams), the
reconciliation's and a child order's news for its parent arrive on ``execution-reports`` and
are applied by the ``order_state`` agent (:func:`handle_report`). The answers of this worker's
own commands are published too, but applied where they are received when this worker owns
the order's partition (:class:`~oms.streams.in_place.InPlaceRoute`), without waiting for the
topic to bring them back; the agent then finds them applied. Both ways end in
:func:`apply_news`, which is idempotent: the same report applied twice changes nothing the
second time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from oms.algos import twap
from oms.orders.links import facts_about
from oms.orders.retention import FinishedOrders
from oms.orders.state_machine import Outcome, apply_report, lost_alert, reannouncement
from oms.schemas import ExecutionReport, OrderRecord
from oms.schemas.conditions import OrderTrigger
from oms.streams.context import AgentContext

log = structlog.get_logger(__name__)


@dataclass(kw_only=True)
class OrderStateContext(AgentContext):
    """Order state also tells linked orders about fills (``oms.orders.links``) and forwards
    a child order's news to its parent (execution algorithms)."""

    publish_trigger: Callable[[OrderTrigger], Awaitable[None]]
    publish_report: Callable[[ExecutionReport], Awaitable[None]] | None = None
    # Markers of orders that left the table (late reports about them); None: no purge.
    finished: FinishedOrders | None = None


async def handle_report(
    ctx: OrderStateContext,
    raw: bytes | None,
    *,
    key: bytes | None,
    partition: int | None,
    offset: int | None,
    replayed: bool = False,
) -> None:
    """Apply one message of ``execution-reports``. ``replayed``: a previous owner of the
    partition may already have applied it (see :func:`reannouncement`)."""
    report = await ctx.decode(ExecutionReport, raw, key=key, partition=partition, offset=offset)
    if report is None:
        return
    await apply_news(ctx, report, replayed=replayed)


async def apply_news(ctx: OrderStateContext, report: ExecutionReport, *, replayed: bool) -> None:
    """Apply one report to its order: the new state on the table, then its events and what
    linked orders and parents must hear.

    The order is read and written before the first ``await``, so a caller that checked just
    before calling that it owns the order's partition still owns it at the write."""
    order: OrderRecord | None = ctx.orders.get(report.order_id) if report.order_id else None
    if order is None:
        ended = ctx.finished.get(report.order_id) if ctx.finished is not None else None
        if ended is not None:
            # News about an order that ended and left the table (a late or replayed report):
            # its history is in ClickHouse, its fills reach the position keeper from the
            # report itself. Counted, never written back.
            ctx.count("reports_purged_order")
            log.info(
                "order_state.report_for_purged_order",
                order_id=report.order_id,
                ended=ended.status.value,
                report_id=report.report_id,
                order_state=report.order_state.value if report.order_state else None,
                fills=len(report.fills),
            )
            return
        # Orders placed outside the OMS (no label of ours) or reports racing a table
        # recovery are logged, never invented into the table.
        ctx.count("reports_unknown_order")
        log.info(
            "order_state.unknown_order",
            order_id=report.order_id,
            exchange_order_id=report.exchange_order_id,
        )
        return
    if twap.is_child_report(report):
        result = twap.apply_child_report(order, report)
    else:
        result = apply_report(order, report)
    ctx.count(f"reports_{result.outcome.value}")
    if result.outcome is Outcome.ILLEGAL:
        log.warning(
            "order_state.illegal_transition",
            order_id=order.order_id,
            note=result.note,
            report_id=report.report_id,
        )
        return
    if result.order is not order:
        ctx.orders[order.order_id] = result.order
    events = result.events
    if replayed and result.outcome is Outcome.STALE:
        events = [reannouncement(order)]
        alert = lost_alert(order)  # an emergency is never lost to a crash either
        if alert is not None:
            events.append(alert)
    for event in events:
        await ctx.emit(event)
    updated = result.order
    if updated.links and (
        (replayed and result.outcome is Outcome.STALE)
        or updated.filled_amount != order.filled_amount
        or updated.status.is_terminal != order.status.is_terminal
    ):
        for fact in facts_about(updated):
            await ctx.publish_trigger(fact)
    if ctx.publish_report is not None and (result.changed or replayed):
        # A child order's news goes on to its parent (idempotent there).
        forward = twap.child_update(order, result.order, force=replayed)
        if forward is not None:
            await ctx.publish_report(forward)
