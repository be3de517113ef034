"""The risk engine's decisions on a book built by hand (no I/O), and the execution strategy."""

from __future__ import annotations

from oms.market.cache import MarketCache
from oms.orders.scheduling import AutoSlicing, Schedule, Strategy, plan_schedule
from oms.risk.book import RiskBook
from oms.risk.engine import RiskEngine
from oms.schemas import (
    Direction,
    InstrumentSpec,
    MarketTick,
    OrderRecord,
    OrderRequest,
    OrderStatus,
    PositionRecord,
    ReasonCode,
    now_ms,
)
from oms.schemas.risk import AccountControls, AccountLimits, TradingState
from oms.settings import RiskSettings, Settings
from tests.orders.factories import BTC_PERPETUAL

# Inverse (USD-sized, BTC-settled), as Deribit lists it.
PERP = BTC_PERPETUAL.model_copy(update={"instrument_type": "reversed"})


def engine(market: MarketCache | None = None, **limits: object) -> RiskEngine:
    settings = RiskSettings(default_limits=AccountLimits.model_validate(limits))
    market = market or MarketCache(underlying=lambda name: None)
    return RiskEngine(
        RiskBook(settings, lambda name: PERP if name == PERP.instrument_name else None),
        mark=market.mark,
        index_price=market.index_price,
    )


def order(
    order_id: str = "o-1", amount: float = 10, price: float | None = 50_000.0, **kw: object
) -> OrderRecord:
    fields: dict[str, object] = {
        "order_id": order_id,
        "request_id": order_id,
        "account_id": "a",
        "instrument_name": PERP.instrument_name,
        "direction": Direction.BUY,
        "order_type": "limit",
        "amount": amount,
        "price": price,
        "version": 2,
    }
    fields.update(kw)
    return OrderRecord.model_validate(fields)


def tick(mark: float) -> MarketTick:
    return MarketTick(instrument_name=PERP.instrument_name, timestamp=now_ms(), mark_price=mark)


def test_queued_order_breaching_the_band_at_release_is_refused_then() -> None:
    market = MarketCache(underlying=lambda name: None)
    risk = engine(market, price_band_pct=5)
    market.update([tick(50_000)])
    queued = order(status=OrderStatus.QUEUED, execute_immediately=False)
    assert risk.check_submit(queued) is None
    risk.note_accepted(queued)
    market.update([tick(60_000)])  # the market moved while it waited
    rejection = risk.check_submit(queued, at_release=True)
    assert rejection is not None
    assert rejection.reason_code is ReasonCode.PRICE_BAND_EXCEEDED
    assert rejection.message.endswith("at release")


def test_a_released_order_does_not_count_against_itself() -> None:
    risk = engine(max_open_orders=1, max_position=10)
    queued = order(status=OrderStatus.QUEUED)
    risk.note_accepted(queued)
    assert risk.check_submit(queued, at_release=True) is None
    other = risk.check_submit(order("o-2"))
    assert other is not None and other.reason_code is ReasonCode.RISK_LIMIT_EXCEEDED


def test_position_limit_counts_open_orders_on_the_same_side_and_lets_reductions_pass() -> None:
    risk = engine(max_position=100)
    risk.book.apply_position(
        PositionRecord(
            record_id="p1", account_id="a", instrument_name=PERP.instrument_name, size=60
        )
    )
    risk.note_accepted(order("o-1", amount=30, status=OrderStatus.OPEN))
    refused = risk.check_submit(order("o-2", amount=20))  # 60 + 30 + 20 > 100
    assert refused is not None and "would reach 110" in refused.message
    assert risk.check_submit(order("o-3", amount=10)) is None  # 100
    assert risk.check_submit(order("o-4", amount=150, direction=Direction.SELL)) is None
    # o-1 is cancelled: its 30 no longer count.
    risk.book.apply_order(order("o-1", amount=30, status=OrderStatus.CANCELLED, version=5))
    assert risk.check_submit(order("o-2", amount=40)) is None  # 60 + 40
    assert risk.check_submit(order("o-2", amount=50)) is not None  # 60 + 50


def test_position_limits_see_the_sum_over_venues() -> None:
    """Splitting a position across venues does not multiply its limits: size, open orders
    and USD notional per currency all count every venue's part."""
    risk = engine(max_position=100, max_position_notional_per_currency={"BTC": 120})
    for venue, size in (("deribit", 60), ("second", 30)):
        risk.book.apply_position(
            PositionRecord(
                record_id=f"p-{venue}", account_id="a", instrument_name=PERP.instrument_name,
                venue=venue, size=size,
            )
        )  # fmt: skip
    assert risk.book.position("a", PERP.instrument_name) == 90
    for venue in ("deribit", "second"):
        refused = risk.check_submit(order("o-2", amount=20, venue=venue))  # 90 + 20 > 100
        assert refused is not None and "would reach 110" in refused.message
    # An open order at one venue counts against an order at the other.
    risk.note_accepted(order("o-1", amount=5, venue="second", status=OrderStatus.OPEN))
    refused = risk.check_submit(order("o-3", amount=10, venue="deribit"))  # 90 + 5 + 10 > 100
    assert refused is not None and "would reach 105" in refused.message
    # A later record of one venue replaces that venue's part only.
    risk.book.apply_position(
        PositionRecord(
            record_id="p-second-2", account_id="a", instrument_name=PERP.instrument_name,
            venue="second", size=0,
        )
    )  # fmt: skip
    assert risk.check_submit(order("o-4", amount=30, venue="second")) is None  # 60 + 5 + 30
    wider = engine(max_position=1_000, max_position_notional_per_currency={"BTC": 120})
    for venue, size in (("deribit", 60), ("second", 50)):
        wider.book.apply_position(
            PositionRecord(
                record_id=f"p-{venue}", account_id="a", instrument_name=PERP.instrument_name,
                venue=venue, size=size,
            )
        )  # fmt: skip
    refused = wider.check_submit(order("o-5", amount=20, venue="deribit"))  # 130 USD > 120
    assert refused is not None and "position notional would be 130.00 USD" in refused.message


def test_state_and_notional() -> None:
    risk = engine(max_order_notional=1_000)
    assert risk.check_submit(order(amount=2_000)).reason_code is ReasonCode.RISK_LIMIT_EXCEEDED  # type: ignore[union-attr]
    controls = AccountControls(account_id="a", trading_state=TradingState.HALTED)
    risk.book.apply_controls(controls)
    assert risk.check_submit(order()).reason_code is ReasonCode.TRADING_HALTED  # type: ignore[union-attr]
    assert risk.check_cancel("a") is None


def request(**kw: object) -> OrderRequest:
    fields: dict[str, object] = {
        "request_id": "r1",
        "account_id": "a",
        "instrument_name": PERP.instrument_name,
        "amount": 10,
        "direction": "buy",
        "price": 50_000.0,
    }
    fields.update(kw)
    return OrderRequest.model_validate(fields)


def test_execution_strategy() -> None:
    settings = Settings(risk=RiskSettings(slice_above_amount=1_000))
    now = now_ms()
    in_a_minute = now + 60_000
    cases = [
        (request(), Strategy.IMMEDIATE),
        (request(execute_immediately=False, priority="high"), Strategy.QUEUED),
        (request(amount=5_000), Strategy.SLICED),
        (
            request(conditions=[{"kind": "time", "operator": ">=", "value": in_a_minute}]),
            Strategy.DELAYED,
        ),
        (
            request(
                conditions=[
                    {"kind": "price", "field": "last_price", "operator": ">=", "value": 70_000}
                ]
            ),
            Strategy.CONDITIONAL,
        ),
    ]

    def decide(req: OrderRequest) -> Schedule:
        schedule = plan_schedule(
            req,
            now_ms=now,
            settings=settings.queue,
            instrument=lambda name: PERP if name == PERP.instrument_name else None,
            slicing=AutoSlicing.from_settings(settings.risk),
        )
        assert isinstance(schedule, Schedule), (req, schedule)
        return schedule

    for req, want in cases:
        schedule = decide(req)
        assert schedule.strategy is want, (req, schedule)
        assert schedule.reason
    assert "high" in decide(cases[1][0]).reason
    sliced = decide(cases[2][0]).twap
    assert sliced is not None and sliced.slices == 5  # one per threshold of amount


def test_exchange_account_mapping(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from oms.secrets import Credentials, SecretStore, write_secrets_file

    path = tmp_path / "secrets.json"
    write_secrets_file(path, {"sub-1": Credentials("cid-1", "sec-1")})
    risk = RiskSettings.model_validate(
        {"accounts": {"alice": {"permissions": {"exchange_account": "sub-1"}}}}
    )
    store = SecretStore(path, risk.exchange_accounts())
    creds = store.credentials("alice")
    assert creds is not None and creds.client_id == "cid-1"
    assert store.trading_accounts(["alice", "bob"]) == ["alice", "sub-1"]


def test_daily_loss_makes_the_account_reducing_until_resumed() -> None:
    loaded: dict[str, InstrumentSpec] = {}  # the catalog loads after the first records
    settings = RiskSettings(default_limits=AccountLimits(max_daily_loss={"BTC": 1.0}))
    book = RiskBook(settings, lambda name: loaded.get(name or ""))
    market = MarketCache(underlying=lambda name: None)
    risk = RiskEngine(book, mark=market.mark, index_price=market.index_price)
    for i, (realized, fee) in enumerate([(-0.6, 0.01), (-0.5, 0.01)]):
        book.apply_position(
            PositionRecord(
                record_id=f"p{i}",
                account_id="a",
                instrument_name=PERP.instrument_name,
                size=0,
                realized_pnl=realized,
                fee=fee,
            )
        )
    book.apply_position(  # the same record again (redelivery) counts once
        PositionRecord(
            record_id="p1",
            account_id="a",
            instrument_name=PERP.instrument_name,
            size=0,
            realized_pnl=-0.5,
            fee=0.01,
        )
    )
    loaded[PERP.instrument_name] = PERP
    assert round(book.daily_loss("a", "BTC"), 6) == 1.12
    state, why = book.effective_state("a")
    assert state is TradingState.REDUCING and "daily loss" in why
    refused = risk.check_submit(order())
    assert refused is not None and refused.reason_code is ReasonCode.TRADING_REDUCING
    limits = settings.default_limits
    book.apply_controls(AccountControls(account_id="a", version=1, limits=limits))
    assert book.effective_state("a")[0] is TradingState.REDUCING  # still breached
    resumed = AccountControls(account_id="a", version=2, limits=limits, resumed_at=now_ms())
    book.apply_controls(resumed)
    assert book.effective_state("a")[0] is TradingState.ACTIVE


def test_deleted_order_and_controls_stop_counting() -> None:
    """What a tombstone on the orders changelog or on risk-controls does to the book."""
    e = engine(max_open_orders=1)
    book = e.book
    book.apply_order(order("o-1", status=OrderStatus.OPEN))
    assert e.check_submit(order("o-2")) is not None  # the limit counts o-1
    book.forget_order("o-1")
    assert book.open_order_count("a") == 0
    assert book.open_remaining("a", PERP.instrument_name, Direction.BUY, "o-2") == 0.0
    assert e.check_submit(order("o-2")) is None
    book.apply_controls(AccountControls(account_id="a", trading_state=TradingState.HALTED))
    assert book.controls_of("a").trading_state is TradingState.HALTED
    assert book.drop_controls("a") and not book.drop_controls("a")
    assert book.controls_of("a").trading_state is TradingState.ACTIVE
