"""The one market cache of a worker: what it keeps, what it refuses, what readers see."""

from __future__ import annotations

from oms.market.cache import MarketCache
from oms.schemas import MarketTick

BTC = "BTC-PERPETUAL"
OPTION = "BTC-27JUN26-100000-C"


def tick(instrument: str, timestamp: int, **prices: float) -> MarketTick:
    return MarketTick(instrument_name=instrument, timestamp=timestamp, **prices)


def test_newest_tick_wins_and_empty_fields_keep_their_last_value() -> None:
    market = MarketCache(underlying=lambda instrument: None)
    first = tick(BTC, 10, last_price=100.0, best_bid_price=99.5, mark_price=100.2)
    no_bid = tick(BTC, 20, last_price=101.0, mark_price=101.1)  # empty bid side
    assert market.update([first, no_bid]) == [first, no_bid]
    assert market.latest(BTC) == no_bid
    assert market.value(BTC, "last_price") == 101.0
    assert market.value(BTC, "best_bid_price") == 99.5  # kept from the earlier tick
    assert market.mark(BTC) == 101.1
    assert market.latest("ETH-PERPETUAL") is None and market.mark("ETH-PERPETUAL") is None


def test_an_older_tick_is_a_replay_and_changes_nothing() -> None:
    """A restarted feed reads its warm-up again: those ticks are older than the known."""
    market = MarketCache(underlying=lambda instrument: None)
    market.update([tick(BTC, 20, last_price=101.0)])
    replayed = [tick(BTC, 10, last_price=90.0), tick(BTC, 20, last_price=101.0)]
    applied = market.update(replayed)
    assert [t.timestamp for t in applied] == [20]  # same time: the same tick again
    assert market.value(BTC, "last_price") == 101.0
    assert market.stats() == {"instruments": 1, "applied": 2, "stale": 1}


def test_index_prices_are_kept_per_currency_once_it_is_known() -> None:
    """Ticks read before the instrument catalog is loaded still count once it is."""
    currencies: dict[str, str] = {}
    market = MarketCache(underlying=currencies.get)
    market.update([tick(OPTION, 10, index_price=60_000.0)])
    assert market.index_price("BTC") is None  # which currency is not known yet
    currencies[OPTION] = currencies[BTC] = "BTC"
    assert market.index_price("BTC") == 60_000.0
    market.update([tick(BTC, 30, index_price=61_000.0), tick(OPTION, 20, index_price=60_500.0)])
    assert market.index_price("BTC") == 61_000.0  # the newest, whichever instrument had it
    assert market.index_price("ETH") is None
