"""Execution strategies as plugins: discovered through the ``oms.strategies`` entry points,
reloaded while orders are in flight (each keeps the version it started with), a broken
plugin refused with a reason code while the previous good version keeps serving.

Real intake and the real scheduler over one observed table (as in the worker), a fake
executor in place of the exchange; the plugins are files written into ``tmp_path``.
"""

from __future__ import annotations

import json
import sys
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

from oms.algos.chase import ChaseStrategy
from oms.algos.registry import STRATEGY_GROUP, StrategyRegistry
from oms.algos.scheduler import AlgoScheduler
from oms.algos.twap import TwapStrategy, child_order_id, child_request_id
from oms.orders.params import (
    ALGO_VERSION_KEY,
    CANCEL_REASON_KEY,
    ChaseParams,
    TwapParams,
    parse_params,
)
from oms.schemas import (
    OrderEvent,
    OrderEventType,
    OrderRecord,
    OrderRequest,
    OrderStatus,
    ReasonCode,
    now_ms,
)
from oms.schemas.commands import CommandOrigin, OrderCommand, OriginKind
from oms.schemas.rejection import Rejection
from oms.settings import QueueSettings
from oms.streams.intake import IntakeContext, apply_command
from oms.streams.order_table import ObservedOrders
from tests.orders.factories import BTC_PERPETUAL, order_record

ROOT = Path(__file__).resolve().parents[2]

# A strategy that nudges a working limit order's price up by ``nudge_step``, once per order
# version; the request id tells which code (TAG) and settings (label) asked.
PLUGIN = """
from pydantic import BaseModel, Field

from oms.algos.strategy import Plan, StrategyBase
from oms.schemas import CommandType, OrderRequest, OrderStatus

TAG = "{tag}"


class NudgeParams(BaseModel):
    step: float = Field(alias="nudge_step", gt=0)


class Nudge(StrategyBase):
    params_model = NudgeParams

    def on_report(self, order, ctx):
        if order.status is OrderStatus.OPEN:
            return Plan(wake_at=order.updated_at)
        return Plan.done()

    def on_timer(self, order, ctx):
        label = self.settings.get("label", "-")
        return Plan(
            requests=(
                OrderRequest(
                    command=CommandType.AMEND,
                    request_id=f"nudge.{{TAG}}.{{label}}.{{order.order_id}}.{{order.version}}",
                    account_id=order.account_id,
                    order_id=order.order_id,
                    price=order.price + ctx.params.step,
                ),
            )
        )
"""


class Executor:
    """Records what intake sends to the exchange."""

    def __init__(self) -> None:
        self.submitted: list[OrderRecord] = []

    async def submit(self, order: OrderRecord, *, check_label_first: bool) -> None:
        self.submitted.append(order)


class Rig:
    """Intake and the algorithm scheduler sharing one observed table, like a worker."""

    def __init__(self, registry: StrategyRegistry) -> None:
        self.registry = registry
        self.data: dict[str, OrderRecord] = {}
        self.events: list[OrderEvent] = []
        self.published: list[OrderRequest] = []
        self.scheduler = AlgoScheduler(
            order_of=self.data.get,
            owns=lambda order_id: True,
            publish_request=self._publish,
            latest_tick=lambda instrument: None,
            strategies=registry,
        )
        self.table = ObservedOrders(self.data, [self.scheduler])
        self.intake = IntakeContext(
            orders=self.table,
            emit=self._emit,
            dead_letter=self._nothing,
            source_topic="order-commands",
            executor=Executor(),  # type: ignore[arg-type]
            instrument=lambda name: BTC_PERPETUAL,
            account_known=lambda account: True,
            held=None,  # type: ignore[arg-type]
            queue_settings=QueueSettings(),
            on_fired=self._nothing,
            publish_trigger=self._nothing,
            strategies=registry,
        )

    async def _publish(self, request: OrderRequest) -> None:
        self.published.append(request)

    async def _emit(self, event: OrderEvent) -> None:
        self.events.append(event)

    async def _nothing(self, *_: Any) -> None:
        return None

    async def submit(self, request_id: str, metadata: dict[str, Any]) -> OrderEvent:
        """A limit order through intake; its first event."""
        request = OrderRequest.model_validate(
            {
                "request_id": request_id,
                "account_id": "acc",
                "instrument_name": BTC_PERPETUAL.instrument_name,
                "direction": "buy",
                "amount": 10,
                "order_type": "limit",
                "price": 50_000.0,
                "metadata": metadata,
            }
        )
        origin = CommandOrigin(kind=OriginKind.EXTERNAL, source="0:1")
        before = len(self.events)
        command = OrderCommand(origin=origin, request=request)
        await apply_command(self.intake, command, replayed=False)
        return self.events[before]

    def becomes(self, order_id: str, status: OrderStatus) -> None:
        """The exchange's news about an order, written to the table."""
        order = self.data[order_id]
        self.table[order_id] = order.model_copy(
            update={"status": status, "version": order.version + 1, "updated_at": now_ms()}
        )

    async def nudges(self) -> dict[str, str]:
        """One timer pass: order id -> the tag of the nudge published for it."""
        before = len(self.published)
        await self.scheduler.run_once(now_ms() + 1)
        return {r.order_id or "": r.request_id.split(".")[1] for r in self.published[before:]}


def write_plugin(path: Path, tag: str) -> None:
    path.write_text(PLUGIN.format(tag=tag))


async def test_a_reload_keeps_orders_in_flight_on_their_version(tmp_path: Path) -> None:
    plugin = tmp_path / "nudge.py"
    write_plugin(plugin, "v1")
    registry = StrategyRegistry({"nudge": f"{plugin}:Nudge"})
    assert registry.refresh().loaded == [
        ("twap", registry.current("twap").version),  # type: ignore[union-attr]
        ("chase", registry.current("chase").version),  # type: ignore[union-attr]
        ("sor", registry.current("sor").version),  # type: ignore[union-attr]
        ("nudge", registry.current("nudge").version),  # type: ignore[union-attr]
    ]
    v1 = registry.current("nudge")
    assert v1 is not None
    rig = Rig(registry)
    first = await rig.submit("r-old", {"algo": "nudge", "nudge_step": 5})
    assert first.event_type is OrderEventType.SUBMITTED
    assert rig.data[first.order_id].metadata[ALGO_VERSION_KEY] == v1.version
    rig.becomes(first.order_id, OrderStatus.OPEN)

    write_plugin(plugin, "v2")  # the code changes while the first order works
    report = registry.refresh()
    v2 = registry.current("nudge")
    assert v2 is not None and v2.version != v1.version
    assert report.loaded == [("nudge", v2.version)] and report.dropped == []
    assert registry.get("nudge", v1.version) is v1  # held by the order in flight
    # A client cannot choose its version: intake records the current one.
    second = await rig.submit("r-new", {"algo": "nudge", "nudge_step": 5, "algo_version": "x"})
    assert rig.data[second.order_id].metadata[ALGO_VERSION_KEY] == v2.version
    rig.becomes(second.order_id, OrderStatus.OPEN)

    assert await rig.nudges() == {first.order_id: "v1", second.order_id: "v2"}
    assert await rig.nudges() == {}  # never twice
    assert registry.describe()["held"] == {
        f"twap@{registry.current('twap').version}": 0,  # type: ignore[union-attr]
        f"chase@{registry.current('chase').version}": 0,  # type: ignore[union-attr]
        f"sor@{registry.current('sor').version}": 0,  # type: ignore[union-attr]
        f"nudge@{v1.version}": 1,
        f"nudge@{v2.version}": 1,
    }

    # The old order ends: nobody holds v1 any more, it is dropped with its module copy.
    rig.becomes(first.order_id, OrderStatus.FILLED)
    assert registry.get("nudge", v1.version) is None
    assert v1.module_name not in sys.modules
    assert registry.get("nudge", v2.version) is v2
    assert v2.module_name in sys.modules


async def test_a_broken_plugin_is_refused_and_the_good_version_keeps_serving(
    tmp_path: Path,
) -> None:
    plugin = tmp_path / "nudge.py"
    write_plugin(plugin, "v1")
    registry = StrategyRegistry({"nudge": f"{plugin}:Nudge"})
    registry.refresh()
    good = registry.current("nudge")
    assert good is not None
    rig = Rig(registry)
    first = await rig.submit("r-1", {"algo": "nudge", "nudge_step": 5})
    rig.becomes(first.order_id, OrderStatus.OPEN)

    plugin.write_text(PLUGIN.format(tag="v2") + "\ndef broken(:\n")
    report = await registry.refresh_async()
    [refused] = report.refused
    assert refused.reason_code is ReasonCode.STRATEGY_REFUSED
    assert refused.name == "nudge" and "SyntaxError" in refused.message
    assert registry.current("nudge") is good
    assert registry.error("nudge") == refused
    assert (await registry.refresh_async()).refused == []  # reported once, not at every check

    # New orders still get the good version, and both orders are worked by it.
    second = await rig.submit("r-2", {"algo": "nudge", "nudge_step": 5})
    assert rig.data[second.order_id].metadata[ALGO_VERSION_KEY] == good.version
    rig.becomes(second.order_id, OrderStatus.OPEN)
    assert await rig.nudges() == {first.order_id: "v1", second.order_id: "v1"}

    write_plugin(plugin, "v3")  # fixed: loaded at the next check
    assert registry.refresh().loaded[0][0] == "nudge"
    assert registry.error("nudge") is None


async def test_orders_naming_an_unknown_or_refused_strategy_are_rejected_at_intake(
    tmp_path: Path,
) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("import not_a_module_anywhere\n")
    registry = StrategyRegistry({"broken": f"{broken}:Broken"})
    [refused] = registry.refresh().refused
    assert "ModuleNotFoundError" in refused.message
    rig = Rig(registry)
    for name, why in [("broken", "refused at load (ModuleNotFoundError"), ("vwap", "twap")]:
        event = await rig.submit(f"r-{name}", {"algo": name})
        assert event.event_type is OrderEventType.REJECTED
        assert event.reason_code is ReasonCode.UNKNOWN_STRATEGY
        assert event.message is not None and why in event.message
    # The built-ins keep their own checks and messages.
    event = await rig.submit("r-chase", {"algo": "chase", "chase_limit": 51_000})
    assert (event.event_type, event.reason_code) == (
        OrderEventType.REJECTED,
        ReasonCode.SCHEMA_INVALID,
    )
    assert event.message == "chase needs a post_only limit order"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("class Nudge:\n    def on_order(self, o, c): ...\n", "missing hooks: check, on_report"),
        (
            "from oms.algos.strategy import StrategyBase\n"
            "class Nudge(StrategyBase):\n    params_model = dict\n",
            "params_model must be a pydantic model class",
        ),
        (
            "from pydantic import BaseModel\n"
            "from oms.algos.strategy import StrategyBase\n"
            "class Nudge(StrategyBase):\n    params_model = BaseModel\n"
            "    def __init__(self, settings):\n        raise ValueError('no key')\n",
            "ValueError: no key",
        ),
        ("raise SystemExit(3)\n", "SystemExit"),
        ("x = 1\n", "no attribute 'Nudge'"),
    ],
)
def test_a_plugin_that_cannot_run_is_refused_with_its_reason(
    tmp_path: Path, body: str, why: str
) -> None:
    plugin = tmp_path / "nudge.py"
    plugin.write_text(body)
    registry = StrategyRegistry({"nudge": f"{plugin}:Nudge"}, builtins=False)
    [refused] = registry.refresh().refused
    assert refused.reason_code is ReasonCode.STRATEGY_REFUSED
    assert why in refused.message
    assert registry.current("nudge") is None
    rejection = parse_params({"algo": "nudge"}, registry.params_model)
    assert isinstance(rejection, Rejection)
    assert rejection.reason_code is ReasonCode.UNKNOWN_STRATEGY


async def test_settings_changes_reload_and_an_unloaded_strategy_takes_no_new_orders(
    tmp_path: Path,
) -> None:
    plugin = tmp_path / "nudge.py"
    write_plugin(plugin, "v1")
    config = tmp_path / "strategies.json"

    def configure(**entry: Any) -> None:
        config.write_text(json.dumps({"nudge": {"source": f"{plugin}:Nudge", **entry}}))

    configure(settings={"label": "a"})
    registry = StrategyRegistry(config_file=config)
    registry.refresh()
    first = registry.current("nudge")
    assert first is not None
    rig = Rig(registry)
    order = await rig.submit("r-1", {"algo": "nudge", "nudge_step": 1})
    rig.becomes(order.order_id, OrderStatus.OPEN)

    configure(settings={"label": "b"})
    assert [name for name, _ in registry.refresh().loaded] == ["nudge"]
    assert registry.current("nudge") is not first

    configure(settings={"label": "b"}, enabled=False)
    assert registry.refresh().unloaded == ["nudge"]
    rejected = await rig.submit("r-2", {"algo": "nudge", "nudge_step": 1})
    assert rejected.reason_code is ReasonCode.UNKNOWN_STRATEGY
    # The order in flight still runs the version (and settings) it started with.
    await rig.scheduler.run_once(now_ms() + 1)
    [nudge] = rig.published
    assert nudge.request_id.startswith("nudge.v1.a.")

    config.write_text("{not json")  # a bad edit changes nothing
    assert registry.refresh().unloaded == []
    assert registry.current("twap") is not None


async def test_a_failing_hook_is_counted_and_the_timer_goes_on(tmp_path: Path) -> None:
    plugin = tmp_path / "nudge.py"
    plugin.write_text(
        PLUGIN.format(tag="v1").replace(
            "label = self.settings", "raise RuntimeError('bug')\n        label = self.settings"
        )
    )
    registry = StrategyRegistry({"nudge": f"{plugin}:Nudge"})
    registry.refresh()
    rig = Rig(registry)
    order = await rig.submit("r-1", {"algo": "nudge", "nudge_step": 1})
    rig.becomes(order.order_id, OrderStatus.OPEN)
    assert await rig.nudges() == {}
    assert rig.scheduler.counters["strategy_errors"] == 1


def _declared_entry_points() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared: dict[str, str] = project["entry-points"][STRATEGY_GROUP]
    return declared


def test_the_builtins_are_found_through_their_entry_points(tmp_path: Path) -> None:
    declared = _declared_entry_points()
    assert declared == {
        "twap": "oms.algos.twap:TwapStrategy",
        "chase": "oms.algos.chase:ChaseStrategy",
        "sor": "oms.algos.sor:SorStrategy",
    }
    # The metadata an install of the package writes (the shared venv is not reinstalled
    # here): importlib.metadata reads it from this directory like from site-packages.
    dist = tmp_path / "oms_strategies_probe-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: oms-strategies-probe\n")
    lines = [f"[{STRATEGY_GROUP}]", *(f"{name} = {value}" for name, value in declared.items())]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    registry = StrategyRegistry(discover=True, search_path=[str(tmp_path)], builtins=False)
    report = registry.refresh()
    assert sorted(name for name, _ in report.loaded) == ["chase", "sor", "twap"]
    twap, chase = registry.current("twap"), registry.current("chase")
    assert twap is not None and chase is not None
    # Private copies of the modules, running the same classes' code.
    assert type(twap.strategy).__name__ == TwapStrategy.__name__
    assert type(chase.strategy).__name__ == ChaseStrategy.__name__
    assert twap.strategy.params_model is TwapParams
    assert chase.strategy.params_model is ChaseParams
    assert twap.module_name.startswith("oms.algos.twap__v")

    # Given explicitly, the same entry points load the same versions.
    given = [EntryPoint(name, value, STRATEGY_GROUP) for name, value in declared.items()]
    explicit = StrategyRegistry(entry_points=given, builtins=False)
    explicit.refresh()
    assert explicit.current("twap").version == twap.version  # type: ignore[union-attr]
    assert explicit.names == ["chase", "sor", "twap"]


async def test_a_plugin_bug_rejects_its_order_or_stops_following_it_never_more(
    tmp_path: Path,
) -> None:
    plugin = tmp_path / "nudge.py"
    plugin.write_text(
        PLUGIN.format(tag="v1")
        + "\n    def check(self, request, spec, params):\n"
        + "        if params.step > 100:\n            raise KeyError('oops')\n"
        + "\n\nclass Rogue(Nudge):\n"
        + "    def on_timer(self, order, ctx):\n"
        + "        plan = super().on_timer(order, ctx)\n"
        + "        return Plan(requests=tuple(\n"
        + "            r.model_copy(update={'account_id': 'someone-else'}) for r in plan.requests\n"
        + "        ))\n"
    )
    registry = StrategyRegistry({"nudge": f"{plugin}:Nudge", "rogue": f"{plugin}:Rogue"})
    registry.refresh()
    rig = Rig(registry)
    event = await rig.submit("r-1", {"algo": "nudge", "nudge_step": 500})
    assert (event.event_type, event.reason_code) == (
        OrderEventType.REJECTED,
        ReasonCode.INTERNAL_ERROR,
    )
    assert event.message == "strategy check failed: KeyError: 'oops'"
    # A request for another account is never published.
    rogue = await rig.submit("r-2", {"algo": "rogue", "nudge_step": 1})
    rig.becomes(rogue.order_id, OrderStatus.OPEN)
    assert await rig.nudges() == {}
    assert rig.scheduler.counters["strategy_errors"] == 1
    # Intake and the timer go on.
    fine = await rig.submit("r-3", {"algo": "nudge", "nudge_step": 1})
    rig.becomes(fine.order_id, OrderStatus.OPEN)
    assert await rig.nudges() == {fine.order_id: "v1"}


async def test_the_twap_plugin_cancels_a_cancelled_parents_children_once() -> None:
    published: list[OrderRequest] = []

    async def publish(request: OrderRequest) -> None:
        published.append(request)

    data: dict[str, OrderRecord] = {}
    scheduler = AlgoScheduler(data.get, lambda order_id: True, publish, lambda i: None)
    table = ObservedOrders(data, [scheduler])
    t0 = now_ms()
    meta = {**TwapParams(duration_s=40, slices=4, lot=10.0).to_metadata(), "algo": "twap"}
    parent = order_record(
        OrderStatus.OPEN, order_id="p", amount=40.0, metadata=meta, created_at=t0, updated_at=t0
    )
    table["p"] = parent
    await scheduler.run_once(t0 + 10_000)  # slices 0 and 1 are due
    assert [r.request_id for r in published] == [child_request_id("p", i) for i in range(2)]
    table["p"] = parent.model_copy(
        update={"status": OrderStatus.CANCELLED, "version": 3, "updated_at": t0 + 11_000}
    )
    await scheduler.run_once(t0 + 11_500)
    cancels = published[2:]
    assert [r.order_id for r in cancels] == [child_order_id(parent, i) for i in range(2)]
    assert {r.metadata[CANCEL_REASON_KEY] for r in cancels} == {"linked_order_cancelled"}
    await scheduler.run_once(t0 + 12_000)
    assert len(published) == 4  # once
    await scheduler.run_once(t0 + 11_000 + 120_001)  # past the window: no longer followed
    assert scheduler.followed == 0
