"""Pure parts of the lifecycle: per-order policies, TWAP slicing and chase targets."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from oms.algos import chase, twap
from oms.errors import AdvancedOrderError, InvalidOrderError
from oms.exchange.deribit.venue import DeribitVenue
from oms.exchange.interface import Exchange
from oms.exchange.paper.venue import PaperVenue
from oms.exchange.venues import create_exchange
from oms.lifecycle.policy import check_policy, policy_of, policy_problem
from oms.schemas import Direction, MarketTick, OrderRecord, OrderType, ReasonCode
from oms.secrets import SecretStore
from oms.settings import LifecycleSettings, Settings


def test_metadata_overrides_the_settings_and_only_retry_retries() -> None:
    defaults = LifecycleSettings(retry_attempts=3)
    assert policy_of({}, defaults).submit_attempts == 4
    manual = policy_of({"error_handling": "manual", "auto_cancel_timeout": 5}, defaults)
    assert (manual.submit_attempts, manual.auto_cancel_timeout) == (1, 5.0)
    assert policy_of({"error_handling": "cancel"}, defaults).submit_attempts == 1


@pytest.mark.parametrize(
    "metadata",
    [
        {"error_handling": "pray"},
        {"partial_fill_handling": "sometimes"},
        {"retry_attempts": 2.5},
        {"retry_attempts": -1},
        {"auto_cancel_timeout": "soon"},
        {"partial_fill_grace": True},
    ],
)
def test_invalid_overrides_raise_with_a_reason_code(metadata: dict[str, object]) -> None:
    assert policy_problem(metadata) is not None
    with pytest.raises(InvalidOrderError) as raised:
        check_policy(metadata)
    assert isinstance(raised.value, AdvancedOrderError)
    assert raised.value.reason_code is ReasonCode.SCHEMA_INVALID


@pytest.mark.parametrize(
    ("amount", "lot", "slices"),
    [(70, 10, 3), (100_000, 10, 7), (1.3, 0.1, 4), (0.5, 0.1, 5), (2.7, 0.1, 10)],
)
def test_slices_are_whole_lots_summing_exactly_to_the_parent(
    amount: float, lot: float, slices: int
) -> None:
    parts = twap.slice_amounts(amount, lot, slices)
    assert len(parts) == slices
    assert sum(Decimal(str(p)) for p in parts) == Decimal(str(amount))
    for part in parts:
        assert Decimal(str(part)) % Decimal(str(lot)) == 0
    assert max(parts) - min(parts) <= lot + 1e-12


def _order(direction: Direction, price: float, limit: float) -> OrderRecord:
    return OrderRecord(
        order_id="o-1",
        request_id="r",
        account_id="a",
        instrument_name="BTC-PERPETUAL",
        direction=direction,
        order_type=OrderType.LIMIT,
        amount=10,
        price=price,
        post_only=True,
        metadata={"algo": "chase", "chase_limit": limit},
        version=3,
    )


def test_chase_follows_the_touch_but_never_passes_its_limit() -> None:
    tick = MarketTick(
        instrument_name="BTC-PERPETUAL", timestamp=1, best_bid_price=100.0, best_ask_price=101.0
    )
    buy = _order(Direction.BUY, 90.0, 95.0)
    assert chase.target_price(buy, tick) == 95.0  # capped
    assert chase.target_price(_order(Direction.BUY, 90.0, 120.0), tick) == 100.0
    assert chase.target_price(_order(Direction.SELL, 110.0, 105.0), tick) == 105.0
    assert chase.target_price(_order(Direction.SELL, 110.0, 99.0), tick) == 101.0
    request = chase.requote(buy, tick)
    assert request is not None and request.price == 95.0
    assert chase.requote(_order(Direction.BUY, 95.0, 95.0), tick) is None


def test_venues_implement_the_exchange_interface(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    secrets = SecretStore(tmp_path / "secrets.json")

    def venue_named(name: str) -> Settings:
        return settings.model_copy(
            update={"exchange": settings.exchange.model_copy(update={"venue": name})}
        )

    assert isinstance(create_exchange(settings, secrets), DeribitVenue)  # the default
    for name, cls in (("deribit", DeribitVenue), ("paper", PaperVenue)):
        venue = create_exchange(venue_named(name), secrets)
        assert isinstance(venue, cls) and isinstance(venue, Exchange)
        assert venue.name == name
    with pytest.raises(ValueError, match="unknown exchange"):
        create_exchange(venue_named("mtgox"), secrets)
