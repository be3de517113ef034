"""Intake enrols a trader's new order in an experiment once, before its parameters are
parsed: the record carries the variant's strategy, its assignment and the arrival mark; the
OMS's own submits (algorithm slices) are never enrolled."""

from __future__ import annotations

from typing import Any

from oms.orders.experiments import Experiments
from oms.schemas import OrderEvent, OrderEventType, OrderRecord, OrderRequest, ReasonCode
from oms.schemas.commands import (
    CommandOrigin,
    InternalComponent,
    OrderCommand,
    OriginKind,
    internal_command,
)
from oms.settings import ExperimentSettings, QueueSettings
from oms.streams.intake import IntakeContext, apply_command
from tests.orders.factories import BTC_PERPETUAL

PERP = BTC_PERPETUAL
MARK = 50_123.5
ALL_TWAP = ExperimentSettings.model_validate(
    {
        "name": "exec-ab",
        "select": "untagged",
        "variants": [
            # Every order lands in "twap": the intake path is what is tested here.
            {
                "name": "twap",
                "weight": 1,
                "algo": "twap",
                "params": {"twap_duration": 6, "twap_slices": 3},
            },
            {"name": "plain", "weight": 1e-12, "algo": "none"},
        ],
    }
)


class Executor:
    def __init__(self) -> None:
        self.submitted: list[OrderRecord] = []

    async def submit(self, order: OrderRecord, *, check_label_first: bool) -> None:
        self.submitted.append(order)


class Intake:
    def __init__(self) -> None:
        self.table: dict[str, OrderRecord] = {}
        self.events: list[OrderEvent] = []
        self.executor = Executor()

        async def emit(event: OrderEvent) -> None:
            self.events.append(event)

        async def nothing(*_: Any) -> None:
            return None

        self.ctx = IntakeContext(
            orders=self.table,
            emit=emit,
            dead_letter=nothing,
            source_topic="order-commands",
            executor=self.executor,  # type: ignore[arg-type]
            instrument=lambda name: PERP if name == PERP.instrument_name else None,
            account_known=lambda account: True,
            held=None,  # type: ignore[arg-type]
            queue_settings=QueueSettings(),
            on_fired=nothing,
            publish_trigger=nothing,
            experiments=Experiments.from_settings([ALL_TWAP]),
            mark=lambda name: MARK if name == PERP.instrument_name else None,
        )

    async def submit(self, *, internal: bool = False, **fields: Any) -> OrderEvent:
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
        command = (
            internal_command(request, InternalComponent.ALGO)
            if internal
            else OrderCommand(
                origin=CommandOrigin(kind=OriginKind.EXTERNAL, source="0:1"), request=request
            )
        )
        before = len(self.events)
        await apply_command(self.ctx, command, replayed=False)
        [event] = self.events[before:]
        return event


async def test_an_enrolled_order_runs_its_variant_and_records_the_assignment() -> None:
    intake = Intake()
    event = await intake.submit()
    # The variant's TWAP: a worked parent, never sent itself.
    assert event.event_type is OrderEventType.OPEN and event.details["algo"] == "twap"
    assert intake.executor.submitted == []
    metadata = intake.table[event.order_id].metadata
    assert metadata["experiment"] == "exec-ab" and metadata["variant"] == "twap"
    assert metadata["arrival_mark"] == MARK and isinstance(metadata["arrival_at"], int)
    assert (metadata["twap_slices"], metadata["twap_duration"]) == (3, 6)
    assert intake.ctx.counters["experiment_enrolled"] == 1


async def test_the_oms_own_submits_are_not_enrolled() -> None:
    intake = Intake()
    event = await intake.submit(internal=True, metadata={"parent_id": "o-parent", "twap_slice": 0})
    assert event.event_type is OrderEventType.SUBMITTED
    assert intake.table[event.order_id].metadata == {"parent_id": "o-parent", "twap_slice": 0}
    assert "experiment_enrolled" not in intake.ctx.counters


async def test_a_forged_assignment_is_rejected_with_its_reason() -> None:
    intake = Intake()
    event = await intake.submit(metadata={"variant": "plain"})
    assert event.event_type is OrderEventType.REJECTED
    assert event.reason_code is ReasonCode.SCHEMA_INVALID
    assert event.message is not None and "metadata.variant" in event.message
    assert intake.executor.submitted == []
