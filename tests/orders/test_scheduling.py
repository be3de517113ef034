"""The execution-strategy decision: when and how an accepted order goes out, and why."""

from __future__ import annotations

from oms.orders.params import AlgoParams, ChaseParams, TwapParams
from oms.orders.scheduling import AutoSlicing, Schedule, Strategy, plan_schedule
from oms.schemas import OrderRequest, ReasonCode
from oms.schemas.rejection import Rejection
from oms.settings import QueueSettings
from tests.orders.factories import BTC_PERPETUAL

NOW = 1_800_000_000_000
PERP = BTC_PERPETUAL
SLICING = AutoSlicing(above=1_000, duration_s=60)


def _req(**kw: object) -> OrderRequest:
    fields: dict[str, object] = {
        "request_id": "r1",
        "account_id": "a",
        "instrument_name": PERP.instrument_name,
        "amount": 100,
        "direction": "buy",
        "price": 50_000.0,
    }
    fields.update(kw)
    return OrderRequest.model_validate(fields)


def _plan(
    request: OrderRequest, algo: AlgoParams | None = None, slicing: AutoSlicing | None = None
) -> Schedule | Rejection:
    return plan_schedule(
        request,
        now_ms=NOW,
        settings=QueueSettings(),
        instrument=lambda name: PERP if name == PERP.instrument_name else None,
        algo=algo,
        slicing=slicing,
    )


def _strategy(
    request: OrderRequest, algo: AlgoParams | None = None, slicing: AutoSlicing | None = None
) -> Strategy:
    schedule = _plan(request, algo, slicing)
    assert isinstance(schedule, Schedule), schedule
    assert schedule.reason
    return schedule.strategy


def test_a_delay_holds_the_order_until_its_time() -> None:
    schedule = _plan(_req(delay=2.5))
    assert isinstance(schedule, Schedule)
    assert (schedule.strategy, schedule.release_at) == (Strategy.DELAYED, NOW + 2_500)
    assert schedule.held


def test_a_release_time_that_has_just_come_queues_the_order() -> None:
    schedule = _plan(_req(execute_at=NOW - 500))
    assert isinstance(schedule, Schedule)
    assert schedule.strategy is Strategy.QUEUED and not schedule.held
    assert "time has come" in schedule.reason


def test_time_conditions_alone_delay_market_conditions_make_it_conditional() -> None:
    later = {"kind": "time", "operator": ">=", "value": NOW + 60_000}
    price = {"kind": "price", "operator": ">=", "value": 70_000}
    expiry = {"kind": "expiration", "seconds": 60}
    assert _strategy(_req(conditions=[later, expiry])) is Strategy.DELAYED
    assert _strategy(_req(conditions=[later, price])) is Strategy.CONDITIONAL
    assert _strategy(_req(conditions=[expiry])) is Strategy.IMMEDIATE


def test_a_twap_asked_for_is_sliced_whatever_its_size() -> None:
    params = TwapParams(duration_s=6, slices=3)
    schedule = _plan(_req(), algo=params)
    assert isinstance(schedule, Schedule)
    assert (schedule.strategy, schedule.twap) == (Strategy.SLICED, params)
    # A parent is never sent itself, so it has no queue turn to wait for ...
    assert _strategy(_req(execute_immediately=False), algo=params) is Strategy.SLICED
    # ... but one that must wait for a time or the market is held like any order (and starts
    # slicing when released).
    assert _strategy(_req(delay=5.0), algo=params) is Strategy.DELAYED


def test_above_the_threshold_an_immediate_order_is_sliced() -> None:
    schedule = _plan(_req(amount=2_500), slicing=SLICING)
    assert isinstance(schedule, Schedule) and schedule.strategy is Strategy.SLICED
    assert schedule.twap is not None
    assert (schedule.twap.slices, schedule.twap.duration_s) == (3, 60.0)
    assert schedule.twap.reason and "threshold" in schedule.reason
    assert _strategy(_req(amount=1_000), slicing=SLICING) is Strategy.IMMEDIATE
    assert _strategy(_req(amount=2_500)) is Strategy.IMMEDIATE  # no threshold set


def test_what_is_not_an_immediate_plain_order_is_never_sliced_by_size() -> None:
    chase = ChaseParams(limit=51_000)
    expiry = [{"kind": "expiration", "seconds": 60}]
    assert _strategy(_req(amount=2_500), algo=chase, slicing=SLICING) is Strategy.IMMEDIATE
    with_expiry = _req(amount=2_500, conditions=expiry)
    assert _strategy(with_expiry, slicing=SLICING) is Strategy.IMMEDIATE
    queued = _req(amount=2_500, execute_immediately=False)
    assert _strategy(queued, slicing=SLICING) is Strategy.QUEUED


def test_slices_are_never_fewer_than_whole_lots() -> None:
    # A threshold below the instrument's lot: 20 (two lots of 10) above 5 makes 2 slices, not 4.
    schedule = _plan(_req(amount=20), slicing=AutoSlicing(above=5, duration_s=60))
    assert isinstance(schedule, Schedule) and schedule.twap is not None
    assert schedule.twap.slices == 2


def test_timing_mistakes_are_refused_with_their_reason() -> None:
    too_late = _plan(_req(delay=301))
    assert isinstance(too_late, Rejection) and too_late.reason_code is ReasonCode.DELAY_TOO_LONG
    past = _plan(_req(conditions=[{"kind": "time", "operator": ">=", "value": NOW - 5_000}]))
    assert isinstance(past, Rejection) and past.reason_code is ReasonCode.TIME_IN_PAST
