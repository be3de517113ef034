"""Where the answers of the worker's own commands go (``InPlaceRoute``): applied in the
process that owns the order's partition, published on execution-reports otherwise, and
published first whenever they carry fills (the position keeper reads fills from there)."""

from __future__ import annotations

from oms.kafka.partitioning import partition_of
from oms.schemas import ExchangeOrderState, ExecutionReport, ReportSource
from oms.schemas.execution import Fill
from oms.streams.in_place import InPlaceRoute

PARTITIONS = 8


def report(order_id: str, *, fills: int = 0) -> ExecutionReport:
    return ExecutionReport(
        report_id=f"{order_id}:rpc",
        order_id=order_id,
        account_id="acc",
        source=ReportSource.RPC,
        instrument_name="BTC-PERPETUAL",
        order_state=ExchangeOrderState.FILLED if fills else ExchangeOrderState.OPEN,
        fills=[Fill(trade_id=f"t{i}", amount=10, price=100.0) for i in range(fills)],
    )


class Route:
    """A route whose outputs are recorded in the order they happen."""

    def __init__(self, owned: set[int], *, ready: bool = True, failing: bool = False) -> None:
        self.owned = owned
        self.ready = ready
        self.calls: list[tuple[str, str]] = []
        # Partitions taken away while the broker answers a durable publish.
        self.revoke_on_publish: set[int] = set()

        async def apply(r: ExecutionReport) -> None:
            if failing:
                raise RuntimeError("the order could not be written")
            self.calls.append(("applied", r.report_id))

        async def publish(r: ExecutionReport) -> None:
            self.calls.append(("published", r.report_id))

        async def publish_durably(r: ExecutionReport) -> None:
            self.calls.append(("published_durably", r.report_id))
            self.owned -= self.revoke_on_publish

        self.route: InPlaceRoute[ExecutionReport] = InPlaceRoute(
            apply=apply,
            publish=publish,
            publish_durably=publish_durably,
            also_published=lambda r: bool(r.fills),
            partitions=PARTITIONS,
            owned_partitions=lambda: frozenset(self.owned),
            ready=lambda: self.ready,
        )


async def test_an_answer_without_fills_on_an_owned_partition_is_applied_and_not_published() -> (
    None
):
    r = report("o-1")
    route = Route({partition_of("o-1", PARTITIONS)})
    await route.route(r)
    assert route.calls == [("applied", r.report_id)]
    assert (route.route.applied, route.route.published) == (1, 0)


async def test_an_answer_with_fills_reaches_the_broker_before_it_is_applied() -> None:
    r = report("o-2", fills=2)
    route = Route({partition_of("o-2", PARTITIONS)})
    await route.route(r)
    assert route.calls == [("published_durably", r.report_id), ("applied", r.report_id)]


async def test_an_order_of_another_worker_goes_through_the_topic() -> None:
    r = report("o-3")
    mine = partition_of("o-3", PARTITIONS)
    route = Route(set(range(PARTITIONS)) - {mine})
    await route.route(r)
    assert route.calls == [("published", r.report_id)]
    assert (route.route.applied, route.route.published) == (0, 1)


async def test_while_rebalancing_every_answer_goes_through_the_topic() -> None:
    r = report("o-4")
    route = Route(set(range(PARTITIONS)), ready=False)
    await route.route(r)
    assert route.calls == [("published", r.report_id)]


async def test_a_partition_lost_while_the_broker_answered_is_left_to_its_new_owner() -> None:
    r = report("o-5", fills=1)
    mine = partition_of("o-5", PARTITIONS)
    route = Route({mine})
    route.revoke_on_publish = {mine}
    await route.route(r)
    assert route.calls == [("published_durably", r.report_id)]
    assert (route.route.applied, route.route.published) == (0, 1)


async def test_records_nobody_else_reads_are_never_published_when_applied_in_place() -> None:
    """A route without ``also_published`` (the engine's triggers) applies an owned record and
    publishes nothing."""
    from oms.schemas.conditions import OrderTrigger, TriggerKind

    seen: list[tuple[str, str]] = []

    async def apply(t: OrderTrigger) -> None:
        seen.append(("applied", t.order_id))

    async def publish(t: OrderTrigger) -> None:
        seen.append(("published", t.order_id))

    owned = {partition_of("o-6", PARTITIONS)}
    route: InPlaceRoute[OrderTrigger] = InPlaceRoute(
        apply=apply,
        publish=publish,
        partitions=PARTITIONS,
        owned_partitions=lambda: frozenset(owned),
        ready=lambda: True,
    )
    for order_id in ("o-6", "o-7"):
        await route(OrderTrigger(order_id=order_id, kind=TriggerKind.RELEASE, reason="test"))
    expected = [("applied", "o-6")]
    if partition_of("o-7", PARTITIONS) not in owned:
        expected.append(("published", "o-7"))
    else:
        expected.append(("applied", "o-7"))
    assert seen == expected


async def test_a_record_that_fails_to_apply_goes_through_its_topic() -> None:
    """Nothing decided is stranded by a failure in place: the topic's agent applies it."""
    r = report("o-8")
    route = Route({partition_of("o-8", PARTITIONS)}, failing=True)
    await route.route(r)
    assert route.calls == [("published", r.report_id)]
    assert route.route.failed == 1


async def test_a_record_with_fills_that_fails_to_apply_is_not_published_twice() -> None:
    r = report("o-9", fills=1)
    route = Route({partition_of("o-9", PARTITIONS)}, failing=True)
    await route.route(r)
    assert route.calls == [("published_durably", r.report_id)]
    assert route.route.failed == 1
