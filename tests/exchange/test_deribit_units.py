"""Error table and rate-limit model, without a socket."""

from __future__ import annotations

import pytest

from oms.exchange.deribit.rate_limit import (
    MATCHING_ENGINE_METHODS,
    RateLimitConfig,
    RateLimiter,
    is_matching_engine,
)
from oms.exchange.errors import (
    ConnectionLost,
    ExchangeBusy,
    ExchangeError,
    InvalidParams,
    NotEnoughFunds,
    NotOpenOrder,
    OrderNotFound,
    OrderRejected,
    PostOnlyReject,
    RateLimited,
    RequestTimeout,
    RetryLater,
    Unauthorized,
    error_class,
    from_rpc_error,
)
from oms.settings import ExchangeSettings


@pytest.mark.parametrize(
    ("code", "cls", "reason", "retryable"),
    [
        (10028, RateLimited, "too_many_requests", True),
        (10047, RateLimited, "matching_engine_queue_full", True),
        (10066, RateLimited, "too_many_concurrent_requests", True),
        (10009, NotEnoughFunds, "not_enough_funds", False),
        (10004, OrderNotFound, "order_not_found", False),
        (11044, NotOpenOrder, "not_open_order", False),
        (11054, PostOnlyReject, "post_only_reject", False),
        (13009, Unauthorized, "unauthorized", False),
        (13004, Unauthorized, "invalid_credentials", False),
        (-32602, InvalidParams, "invalid_params", False),
        (10021, InvalidParams, "invalid_amount", False),
        (10043, InvalidParams, "price_wrong_tick", False),
        (10040, ExchangeBusy, "retry", True),
        (13888, ExchangeBusy, "timed_out", True),
        (10041, ExchangeBusy, "settlement_in_progress", True),
        (11098, OrderRejected, "account_locked", False),
    ],
)
def test_code_table(code: int, cls: type[ExchangeError], reason: str, retryable: bool) -> None:
    err = from_rpc_error({"code": code, "message": "m"}, method="private/buy")
    assert type(err) is cls and error_class(code) is cls
    assert err.code == code and err.reason == reason and err.retryable is retryable
    assert err.message == "m" and err.method == "private/buy"
    assert not err.outcome_unknown
    assert isinstance(err, ExchangeError)


def test_unknown_and_malformed_errors() -> None:
    err = from_rpc_error({"code": 99999, "message": "new"})
    assert type(err) is ExchangeError and err.reason == "exchange_error" and not err.retryable
    assert from_rpc_error("weird").code == 0
    assert from_rpc_error({"code": "x"}).code == 0


def test_client_side_errors() -> None:
    assert RetryLater is ExchangeBusy
    lost = ConnectionLost(-1001, "gone")
    assert lost.retryable and lost.outcome_unknown and lost.reason == "connection_lost"
    timeout = RequestTimeout(-1002)
    assert timeout.retryable and timeout.outcome_unknown and timeout.reason == "request_timeout"
    assert str(timeout) == "request_timeout (-1002)"


def test_matching_engine_table() -> None:
    for m in (
        "private/buy",
        "private/sell",
        "private/edit",
        "private/cancel",
        "private/cancel_all",
        "private/cancel_by_label",
        "private/close_position",
    ):
        assert is_matching_engine(m)
    for m in ("private/get_order_state", "public/get_time", "public/auth", "private/subscribe"):
        assert not is_matching_engine(m)
    assert all(m.startswith("private/") for m in MATCHING_ENGINE_METHODS)


def test_limiter_config_from_settings() -> None:
    s = ExchangeSettings(
        credits_max=1000,
        credits_refill_per_s=100,
        credits_cost=10,
        matching_rate_per_s=2,
        matching_burst=3,
    )
    lim = RateLimiter(RateLimitConfig.from_settings(s, headroom=0))
    assert lim.credits.capacity == 1000 and lim.credits.rate == 100
    assert lim.matching.capacity == 3 and lim.matching.rate == 2
    safe = RateLimiter(RateLimitConfig.from_settings(s))
    assert safe.matching.rate == pytest.approx(1.8) and safe.matching.capacity == pytest.approx(2.7)
    assert safe.credits.rate == pytest.approx(90)
    assert lim.delay_for("private/buy") == 0


async def test_limiter_cancel_refunds() -> None:
    import asyncio

    lim = RateLimiter(RateLimitConfig(matching_rate_per_s=1, matching_burst=1, headroom=0))
    assert await lim.acquire("private/buy")
    waiter = asyncio.ensure_future(lim.acquire("private/buy"))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert lim.matching.available > -0.5
    assert not await lim.acquire("private/buy", max_wait=0.5)
