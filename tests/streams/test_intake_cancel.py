"""An OMS-initiated cancel: its reason is durable before the cancel leaves for the exchange.

A worker killed between the cancel and the exchange's report leaves a successor that records
the report before it replays the request; it can say "auto_cancelled" only if the table write
with the reason reached Kafka first (the chaos suite's worker-kill found one such order)."""

from __future__ import annotations

from typing import Any

from oms.lifecycle.monitor import lifecycle_request_id
from oms.orders.params import CANCEL_REASON_KEY
from oms.schemas import (
    CommandType,
    OrderEvent,
    OrderRecord,
    OrderRequest,
    OrderStatus,
    PendingAmend,
    ReasonCode,
)
from oms.schemas.commands import (
    CommandOrigin,
    InternalComponent,
    OrderCommand,
    OriginKind,
    internal_command,
)
from oms.settings import QueueSettings
from oms.streams.intake import IntakeContext, handle_command
from tests.orders.factories import BTC_PERPETUAL, order_record


class KafkaBackedTable(dict[str, Any]):
    """The order table and what of it is on Kafka: writes get there on ``flush``."""

    def __init__(self) -> None:
        super().__init__()
        self.on_kafka: dict[str, Any] = {}

    async def flush(self) -> None:
        self.on_kafka = dict(self)


class Exchange:
    """Records each cancel with what the table had on Kafka at that moment."""

    def __init__(self, table: KafkaBackedTable) -> None:
        self.table = table
        self.cancels: list[tuple[str, OrderRecord | None]] = []

    async def cancel(self, order: OrderRecord, request_id: str) -> None:
        self.cancels.append((request_id, self.table.on_kafka.get(order.order_id)))


def _context(table: KafkaBackedTable, exchange: Exchange, events: list[OrderEvent]) -> Any:
    async def emit(event: OrderEvent) -> None:
        events.append(event)

    async def nothing(*_: Any) -> None:
        return None

    return IntakeContext(
        orders=table,
        emit=emit,
        dead_letter=nothing,
        source_topic="order-commands",
        executor=exchange,  # type: ignore[arg-type]
        instrument=lambda name: None,
        account_known=lambda account: True,
        held=None,  # type: ignore[arg-type]
        queue_settings=QueueSettings(),
        on_fired=nothing,
        publish_trigger=nothing,
        make_durable=table.flush,
    )


async def _cancel(command: OrderCommand) -> list[tuple[str, OrderRecord | None]]:
    table, events = KafkaBackedTable(), []
    table["o-1"] = order_record(OrderStatus.OPEN)
    await table.flush()
    exchange = Exchange(table)
    raw = command.to_bytes()
    await handle_command(
        _context(table, exchange, events), raw, key=b"o-1", partition=0, offset=7, replayed=False
    )
    return exchange.cancels


async def test_an_auto_cancel_reason_is_on_kafka_before_the_cancel_is_sent() -> None:
    request_id = lifecycle_request_id(ReasonCode.AUTO_CANCELLED, "o-1")
    cancels = await _cancel(
        internal_command(
            OrderRequest(
                command=CommandType.CANCEL,
                request_id=request_id,
                account_id="acc",
                order_id="o-1",
                metadata={CANCEL_REASON_KEY: ReasonCode.AUTO_CANCELLED.value},
            ),
            InternalComponent.LIFECYCLE,
        )
    )
    assert len(cancels) == 1
    sent_as, on_kafka = cancels[0]
    assert sent_as == request_id
    assert on_kafka is not None and on_kafka.reason_code is ReasonCode.AUTO_CANCELLED
    assert request_id in on_kafka.seen_request_ids


async def test_a_client_cancel_has_no_reason_to_wait_for() -> None:
    cancels = await _cancel(
        OrderCommand(
            origin=CommandOrigin(kind=OriginKind.EXTERNAL, source="0:1"),
            request=OrderRequest(
                command=CommandType.CANCEL, request_id="c-1", account_id="acc", order_id="o-1"
            ),
        )
    )
    assert [(request_id, kafka.reason_code) for request_id, kafka in cancels if kafka] == [
        ("c-1", None)
    ]


async def test_an_accepted_cancel_is_recorded_on_its_order() -> None:
    """Written with the order before it leaves: the next owner finds it there should this
    worker die first (the sweep of unanswered cancels sends it again)."""
    table, events = KafkaBackedTable(), []
    table["o-1"] = order_record(OrderStatus.OPEN)
    exchange = Exchange(table)
    command = OrderCommand(
        origin=CommandOrigin(kind=OriginKind.EXTERNAL, source="0:1"),
        request=OrderRequest(
            command=CommandType.CANCEL, request_id="c-1", account_id="acc", order_id="o-1"
        ),
    )
    await handle_command(
        _context(table, exchange, events), command.to_bytes(), key=b"o-1", partition=0,
        offset=7, replayed=False,
    )
    assert [request_id for request_id, _ in exchange.cancels] == ["c-1"]
    assert table["o-1"].cancel_request_id == "c-1"
    assert table["o-1"].seen_request_ids == ["c-1"]


async def test_an_accepted_edit_is_recorded_on_its_order() -> None:
    table, events = KafkaBackedTable(), []
    table["o-1"] = order_record(OrderStatus.OPEN)
    edits: list[str] = []

    class Editor(Exchange):
        async def amend(self, order: OrderRecord, request: OrderRequest) -> None:
            edits.append(request.request_id)

    command = OrderCommand(
        origin=CommandOrigin(kind=OriginKind.EXTERNAL, source="0:1"),
        request=OrderRequest(
            command=CommandType.AMEND, request_id="a-1", account_id="acc", order_id="o-1",
            price=49_000.0,
        ),
    )
    ctx = _context(table, Editor(table), events)
    ctx.instrument = lambda name: BTC_PERPETUAL
    await handle_command(
        ctx, command.to_bytes(), key=b"o-1", partition=0, offset=7, replayed=False
    )
    assert edits == ["a-1"], events
    assert table["o-1"].amend_pending == PendingAmend(request_id="a-1", price=49_000.0)
