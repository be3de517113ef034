"""Where the worker's own news goes (``InPlaceRoute``): applied in the process that owns the
order's partition, left to its topic otherwise. The worker's reports are also published first,
durably (the position keeper reads their fills, and one read again after a crash re-announces
its order); its engine's triggers are not."""

from __future__ import annotations

from oms.kafka.partitioning import partition_of
from oms.schemas import ExchangeOrderState, ExecutionReport, ReportSource
from oms.schemas.conditions import OrderTrigger, TriggerKind
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
    """A route whose outputs are recorded in the order they happen. ``durable``: records are
    published durably first (as the worker's reports are)."""

    def __init__(
        self,
        owned: set[int],
        *,
        durable: bool = True,
        ready: bool = True,
        failing: bool = False,
    ) -> None:
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
            publish_durably=publish_durably if durable else None,
            partitions=PARTITIONS,
            owned_partitions=lambda: frozenset(self.owned),
            ready=lambda: self.ready,
        )


def other_partition_id(than: str) -> str:
    """An order id whose partition is not ``than``'s."""
    mine = partition_of(than, PARTITIONS)
    return next(f"o-{i}" for i in range(100) if partition_of(f"o-{i}", PARTITIONS) != mine)


async def test_an_owned_answer_reaches_the_broker_before_it_is_applied() -> None:
    """With or without fills: the keeper reads the fills, and the copy on the topic is what
    re-announces the order after a crash."""
    for r in (report("o-1"), report("o-2", fills=2)):
        route = Route({partition_of(r.order_id, PARTITIONS)})
        await route.route(r)
        assert route.calls == [("published_durably", r.report_id), ("applied", r.report_id)]
        assert (route.route.applied, route.route.through_topic) == (1, 0)


async def test_an_order_of_another_worker_goes_through_the_topic() -> None:
    r = report("o-3")
    mine = partition_of("o-3", PARTITIONS)
    route = Route(set(range(PARTITIONS)) - {mine})
    await route.route(r)
    assert route.calls == [("published", r.report_id)]
    assert (route.route.applied, route.route.through_topic) == (0, 1)


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
    assert (route.route.applied, route.route.through_topic) == (0, 1)


async def test_records_nobody_else_reads_are_never_published_when_applied_in_place() -> None:
    """A route without ``publish_durably`` (the engine's triggers) applies an owned record and
    publishes nothing; another worker's goes through the topic."""
    seen: list[tuple[str, str]] = []

    async def apply(t: OrderTrigger) -> None:
        seen.append(("applied", t.order_id))

    async def publish(t: OrderTrigger) -> None:
        seen.append(("published", t.order_id))

    other = other_partition_id("o-6")
    route: InPlaceRoute[OrderTrigger] = InPlaceRoute(
        apply=apply,
        publish=publish,
        partitions=PARTITIONS,
        owned_partitions=lambda: frozenset({partition_of("o-6", PARTITIONS)}),
        ready=lambda: True,
    )
    for order_id in ("o-6", other):
        await route(OrderTrigger(order_id=order_id, kind=TriggerKind.RELEASE, reason="test"))
    assert seen == [("applied", "o-6"), ("published", other)]
    assert (route.applied, route.through_topic) == (1, 1)


async def test_a_record_that_fails_to_apply_goes_through_its_topic() -> None:
    """Nothing decided is stranded by a failure in place: the topic's agent applies it."""
    r = report("o-8")
    route = Route({partition_of("o-8", PARTITIONS)}, durable=False, failing=True)
    await route.route(r)
    assert route.calls == [("published", r.report_id)]
    assert route.route.failed == 1


async def test_a_durable_record_that_fails_to_apply_is_not_published_twice() -> None:
    r = report("o-9", fills=1)
    route = Route({partition_of("o-9", PARTITIONS)}, failing=True)
    await route.route(r)
    assert route.calls == [("published_durably", r.report_id)]
    assert route.route.failed == 1
