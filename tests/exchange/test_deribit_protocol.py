"""DeribitClient against a real local WebSocket server speaking Deribit's wire protocol."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

import pytest
import structlog

from oms.exchange.deribit import DeribitClient, RateLimitConfig
from oms.exchange.deribit.testing import FakeDeribit, FakeRpcError
from oms.exchange.errors import (
    ConnectionLost,
    ExchangeError,
    NotEnoughFunds,
    RateLimited,
    RequestTimeout,
    Unauthorized,
)
from oms.secrets import Credentials
from oms.settings import ExchangeSettings

SECRET = "s3cr3t-value-never-logged"
CREDS = Credentials("client-a", SECRET)
FAST = ExchangeSettings(
    request_timeout=2.0, reconnect_min_delay=0.01, reconnect_max_delay=0.05, heartbeat_interval=15
)


@pytest.fixture
async def srv() -> Any:
    async with FakeDeribit({"client-a": SECRET}) as server:
        yield server


def client(srv: FakeDeribit, **kw: Any) -> DeribitClient:
    kw.setdefault("settings", FAST)
    return DeribitClient(srv.url, CREDS, name="t", **kw)


async def test_session_setup_auth_and_heartbeat(srv: FakeDeribit) -> None:
    async with client(srv) as c:
        assert c.is_connected
        assert isinstance(await c.get_time(), int)
    auth = srv.calls("public/auth")
    assert len(auth) == 1
    assert auth[0].params == {
        "grant_type": "client_credentials",
        "client_id": "client-a",
        "client_secret": SECRET,
    }
    assert srv.calls("public/set_heartbeat")[0].params == {"interval": 15}
    assert srv.connections[0].authenticated
    assert not c.is_connected


async def test_anonymous_client_skips_auth(srv: FakeDeribit) -> None:
    async with DeribitClient(srv.url, settings=FAST) as c:
        await c.get_time()
        with pytest.raises(Unauthorized) as info:
            await c.get_positions("BTC")
    assert info.value.code == 13009 and info.value.reason == "unauthorized"
    assert not srv.calls("public/auth")


async def test_answers_heartbeat_test_request(srv: FakeDeribit) -> None:
    async with client(srv) as c:
        await srv.test_request()
        await srv.wait_for(lambda: len(srv.calls("public/test")) == 1)
        await srv.test_request()
        await srv.wait_for(lambda: len(srv.calls("public/test")) == 2)
        assert c.stats.heartbeats == 2


async def test_error_mapping_from_wire(srv: FakeDeribit) -> None:
    srv.errors["private/buy"] = (10009, "not_enough_funds")
    srv.errors["private/sell"] = (10028, "too_many_requests")
    srv.errors["private/edit"] = (77777, "something new")
    async with client(srv) as c:
        with pytest.raises(NotEnoughFunds) as funds:
            await c.buy(instrument_name="BTC-PERPETUAL", amount=10, label="x")
        assert not funds.value.retryable and funds.value.reason == "not_enough_funds"
        assert funds.value.method == "private/buy"
        with pytest.raises(RateLimited) as limited:
            await c.sell(instrument_name="BTC-PERPETUAL", amount=10)
        assert limited.value.retryable
        with pytest.raises(ExchangeError) as unknown:
            await c.edit(order_id="1", amount=10)
        assert type(unknown.value) is ExchangeError and unknown.value.code == 77777
        assert c.stats.errors_by_code == {10009: 1, 10028: 1, 77777: 1}


async def test_error_data_is_kept_but_not_printed(srv: FakeDeribit) -> None:
    def reject(conn: Any, params: dict[str, Any]) -> Any:
        raise FakeRpcError(-32602, "Invalid params", {"reason": "must be a multiple of 10"})

    srv.handlers["private/buy"] = reject
    async with client(srv) as c:
        with pytest.raises(ExchangeError) as info:
            await c.buy(instrument_name="BTC-PERPETUAL", amount=7)
    assert info.value.data == {"reason": "must be a multiple of 10"}
    assert "multiple" not in str(info.value) and "multiple" not in repr(info.value)
    assert info.value.reason == "invalid_params"


async def test_request_timeout_then_late_reply_is_ignored(srv: FakeDeribit) -> None:
    srv.silent.add("private/get_order_state")
    async with client(srv) as c:
        t0 = time.monotonic()
        with pytest.raises(RequestTimeout) as info:
            await c.call("private/get_order_state", {"order_id": "1"}, timeout=0.2)
        assert 0.15 < time.monotonic() - t0 < 1.0
        assert info.value.retryable and info.value.outcome_unknown
        assert c.inflight == 0 and c.stats.timeouts == 1
        # The connection is still usable.
        assert isinstance(await c.get_time(), int)


async def test_inflight_fails_on_disconnect_and_is_not_resent(srv: FakeDeribit) -> None:
    srv.silent.add("private/buy")
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    async with client(srv, on_reconnect=on_reconnect) as c:
        order = asyncio.ensure_future(c.buy(instrument_name="BTC-PERPETUAL", amount=10, label="L1"))
        await srv.wait_for(lambda: len(srv.calls("private/buy")) == 1)
        await srv.drop_all()
        with pytest.raises(ConnectionLost) as info:
            await order
        assert info.value.retryable and info.value.outcome_unknown
        assert c.inflight == 0
        await asyncio.wait_for(reconnected.wait(), 5)
        assert c.is_connected
        await asyncio.sleep(0.1)
    # Never resent automatically: one buy across both connections.
    assert len(srv.calls("private/buy")) == 1
    assert c.stats.reconnects == 1


async def test_reconnect_reauths_reheartbeats_and_resubscribes(srv: FakeDeribit) -> None:
    got: list[tuple[str, Any]] = []
    hook_calls = 0

    async def on_reconnect() -> None:
        nonlocal hook_calls
        hook_calls += 1

    async with client(srv, on_reconnect=on_reconnect) as c:
        confirmed = await c.subscribe(
            ["ticker.BTC-PERPETUAL.100ms", "user.orders.any.any.raw"],
            lambda ch, data: got.append((ch, data)),
        )
        assert sorted(confirmed) == ["ticker.BTC-PERPETUAL.100ms", "user.orders.any.any.raw"]
        assert srv.calls("public/subscribe")[0].params == {
            "channels": ["ticker.BTC-PERPETUAL.100ms"]
        }
        assert srv.calls("private/subscribe")[0].params == {"channels": ["user.orders.any.any.raw"]}
        await srv.push("ticker.BTC-PERPETUAL.100ms", {"p": 1})
        await srv.wait_for(lambda: len(got) == 1)

        for round_ in range(2):
            await srv.drop_all()

            def back(r: int = round_) -> bool:
                return c.is_connected and c.stats.reconnects == r + 1

            await srv.wait_for(back)
            new = srv.live[-1]
            assert new.authenticated and new.heartbeat_interval == 15
            assert new.channels == {"ticker.BTC-PERPETUAL.100ms", "user.orders.any.any.raw"}
            await srv.push("user.orders.any.any.raw", {"order_id": round_})

            def delivered(r: int = round_) -> bool:
                return got[-1] == ("user.orders.any.any.raw", {"order_id": r})

            await srv.wait_for(delivered)
        await srv.wait_for(lambda: hook_calls == 2)
    assert len(srv.calls("public/auth")) == 3
    assert len(srv.calls("public/set_heartbeat")) == 3


async def test_reconnect_keeps_trying_while_server_is_down() -> None:
    async with FakeDeribit({"client-a": SECRET}) as srv:
        c = client(srv)
        await c.connect()
        srv.errors["public/auth"] = (13028, "temporarily_unavailable")
        await srv.drop_all()
        await srv.wait_for(lambda: len(srv.calls("public/auth")) >= 4)
        assert not c.is_connected
        with pytest.raises(ConnectionLost) as info:
            await c.call("public/get_time", timeout=0.05)
        assert not info.value.outcome_unknown  # never sent
        del srv.errors["public/auth"]
        await srv.wait_for(lambda: c.is_connected)
        await c.get_time()
        await c.close()


async def test_token_refresh_before_expiry() -> None:
    async with FakeDeribit({"client-a": SECRET}, token_ttl=1) as srv:
        async with client(srv) as c:
            await srv.wait_for(lambda: len(srv.calls("public/auth")) >= 3, timeout=5)
            grants = [r.params["grant_type"] for r in srv.calls("public/auth")]
            assert grants[0] == "client_credentials"
            assert set(grants[1:]) == {"refresh_token"}
            assert srv.calls("public/auth")[1].params["refresh_token"] == "refresh-1"
            # The server saw the request; the client counts the refresh when the reply lands.
            await srv.wait_for(lambda: c.stats.token_refreshes >= 2, timeout=5)
            assert c.is_connected


async def test_refresh_failure_falls_back_to_login() -> None:
    async with FakeDeribit({"client-a": SECRET}, token_ttl=1) as srv:
        async with client(srv) as c:
            srv._refresh_tokens.discard("refresh-1")
            await srv.wait_for(lambda: len(srv.calls("public/auth")) >= 3, timeout=5)
            grants = [r.params["grant_type"] for r in srv.calls("public/auth")]
            assert grants[:3] == ["client_credentials", "refresh_token", "client_credentials"]
            assert c.is_connected


async def test_bad_credentials_fail_connect_without_leaking(
    srv: FakeDeribit, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = Credentials("client-a", "wrong-" + SECRET)
    c = DeribitClient(srv.url, wrong, settings=FAST)
    with pytest.raises(Unauthorized) as info:
        await c.connect()
    assert info.value.reason == "invalid_credentials"
    for text in (str(info.value), repr(info.value), repr(c), repr(wrong), repr(c._auth)):
        assert SECRET not in text
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err + caplog.text
    assert not c.is_connected
    await c.close()


async def test_no_secret_in_logs_over_a_reconnect(
    srv: FakeDeribit, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        async with client(srv) as c:
            await srv.drop_all()
            await srv.wait_for(lambda: c.stats.reconnects == 1)
    finally:
        structlog.reset_defaults()
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err + caplog.text
    assert "refresh-" not in out.out + out.err + caplog.text


async def test_call_before_connect_fails_fast() -> None:
    c = DeribitClient("ws://127.0.0.1:9/ws/api/v2", settings=FAST)
    with pytest.raises(ConnectionLost) as info:
        await c.get_time()
    assert not info.value.outcome_unknown


async def test_close_fails_pending(srv: FakeDeribit) -> None:
    srv.silent.add("private/get_positions")
    c = client(srv)
    await c.connect()
    pending = asyncio.ensure_future(c.get_positions("BTC"))
    await srv.wait_for(lambda: len(srv.calls("private/get_positions")) == 1)
    await c.close()
    with pytest.raises(ConnectionLost):
        await pending
    await asyncio.sleep(0.1)
    assert c.stats.reconnects == 0 and not srv.live


async def test_async_handler_keeps_order_and_may_call_client(srv: FakeDeribit) -> None:
    seen: list[int] = []

    async with client(srv) as c:

        async def handler(channel: str, data: Any) -> None:
            # Calling the client from a handler must not deadlock the reader.
            await c.get_time()
            seen.append(data["n"])

        await c.subscribe(["book.BTC-PERPETUAL.100ms"], handler)
        for n in range(50):
            await srv.push("book.BTC-PERPETUAL.100ms", {"n": n})
        await srv.wait_for(lambda: len(seen) == 50)
    assert seen == list(range(50))


async def test_rejected_channels_are_not_kept(srv: FakeDeribit) -> None:
    async with client(srv) as c:
        confirmed = await c.subscribe(["bad.channel", "ticker.ETH-PERPETUAL.raw"], print)
        assert confirmed == ["ticker.ETH-PERPETUAL.raw"]
        assert c.subscriptions == ["ticker.ETH-PERPETUAL.raw"]
        await c.unsubscribe(["ticker.ETH-PERPETUAL.raw"])
        assert c.subscriptions == []
        assert srv.calls("public/unsubscribe")[0].params == {
            "channels": ["ticker.ETH-PERPETUAL.raw"]
        }


async def test_handler_exception_does_not_kill_reader(srv: FakeDeribit) -> None:
    def boom(channel: str, data: Any) -> None:
        raise RuntimeError("handler bug")

    async with client(srv) as c:
        await c.subscribe(["ticker.BTC-PERPETUAL.raw"], boom)
        await srv.push("ticker.BTC-PERPETUAL.raw", {})
        assert isinstance(await c.get_time(), int)
        assert c.is_connected


def _max_in_window(times: list[float], window: float) -> int:
    best = 0
    j = 0
    for i, t in enumerate(times):
        while times[j] < t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


async def test_matching_engine_rate_never_exceeded(srv: FakeDeribit) -> None:
    limits = RateLimitConfig(matching_rate_per_s=20.0, matching_burst=5, headroom=0)
    async with client(srv, rate_limits=limits) as c:
        t0 = time.monotonic()
        await asyncio.gather(
            *(c.buy(instrument_name="BTC-PERPETUAL", amount=10, label=f"l{i}") for i in range(25))
        )
        elapsed = time.monotonic() - t0
    times = sorted(r.at for r in srv.calls("private/buy"))
    assert len(times) == 25
    # 5 at once, then 20 more at 20/s: about a second, never faster.
    assert elapsed >= 0.95
    # In any window of w seconds at most burst + rate*w requests (small slack for timestamps).
    for w in (0.1, 0.25, 0.5):
        assert _max_in_window(times, w) <= 5 + 20 * w + 1
    assert c.rate_limiter.waits == 20
    snap = c.snapshot()
    assert snap["rate_limit_waits"] == 20 and snap["requests"] >= 27 and snap["inflight"] == 0
    # Other requests use the credit pool, not the matching one.
    assert c.rate_limiter.matching.available < 5


async def test_credit_pool_paces_non_matching_requests(srv: FakeDeribit) -> None:
    limits = RateLimitConfig(
        credits_max=2_000, credits_refill_per_s=10_000, credits_cost=500, headroom=0
    )
    async with client(srv, rate_limits=limits) as c:
        await asyncio.sleep(0.3)  # let setup requests' credits refill
        t0 = time.monotonic()
        await asyncio.gather(*(c.get_time() for _ in range(44)))
        elapsed = time.monotonic() - t0
    # 4 from the pool, then 40 more at 20/s.
    assert elapsed >= 1.9
    times = sorted(r.at for r in srv.calls("public/get_time"))
    assert _max_in_window(times, 0.5) <= 4 + 10 + 1


async def test_max_rate_wait_fails_fast(srv: FakeDeribit) -> None:
    limits = RateLimitConfig(matching_rate_per_s=1.0, matching_burst=1, headroom=0)
    async with client(srv, rate_limits=limits, max_rate_wait=0.2) as c:
        await c.buy(instrument_name="BTC-PERPETUAL", amount=10)
        with pytest.raises(RateLimited) as info:
            await c.buy(instrument_name="BTC-PERPETUAL", amount=10)
        assert info.value.reason == "client_rate_limited" and info.value.retryable
    assert len(srv.calls("private/buy")) == 1


async def test_many_concurrent_requests(srv: FakeDeribit) -> None:
    limits = RateLimitConfig(credits_max=10**9, credits_refill_per_s=10**9)
    async with client(srv, rate_limits=limits) as c:
        results = await asyncio.gather(*(c.call("public/test") for _ in range(2000)))
    assert all(r == {"version": "fake"} for r in results)
    assert c.stats.replies >= 2000 and c.inflight == 0


async def test_clients_of_one_account_share_a_limiter(srv: FakeDeribit) -> None:
    from oms.exchange.deribit import RateLimiter

    shared = RateLimiter(RateLimitConfig(matching_rate_per_s=10.0, matching_burst=2))
    async with client(srv, rate_limiter=shared) as a, client(srv, rate_limiter=shared) as b:
        assert a.rate_limiter is b.rate_limiter
        t0 = time.monotonic()
        await asyncio.gather(
            *(x.buy(instrument_name="BTC-PERPETUAL", amount=10) for x in (a, b) * 6)
        )
        elapsed = time.monotonic() - t0
    times = sorted(r.at for r in srv.calls("private/buy"))
    # Headroom 10%: 1.8 burst, 9/s for both clients together, not 2 x 10/s.
    assert elapsed >= (12 - 1.8) / 9.0 - 0.05
    assert _max_in_window(times, 0.5) <= 2 + 10 * 0.5 + 1


async def test_cancel_on_disconnect_is_enabled_on_every_session(srv: FakeDeribit) -> None:
    srv.handlers["private/enable_cancel_on_disconnect"] = lambda conn, params: "ok"
    async with client(srv, cancel_on_disconnect=True) as c:
        await srv.drop_all()
        await srv.wait_for(lambda: c.is_connected and c.stats.reconnects == 1)
    calls = srv.calls("private/enable_cancel_on_disconnect")
    assert [r.conn for r in calls] == [0, 1]
    assert calls[0].params == {"scope": "connection"}


async def test_close_wakes_callers_waiting_for_a_reconnect(srv: FakeDeribit) -> None:
    c = client(srv)
    await c.connect()
    srv.errors["public/auth"] = (13028, "temporarily_unavailable")
    await srv.drop_all()
    await srv.wait_for(lambda: not c.is_connected)
    waiting = asyncio.ensure_future(c.call("public/get_time", timeout=30))
    await asyncio.sleep(0.05)
    t0 = time.monotonic()
    await c.close()
    with pytest.raises(ConnectionLost) as info:
        await waiting
    assert time.monotonic() - t0 < 1.0 and not info.value.outcome_unknown


async def test_flapping_connection_backs_off(srv: FakeDeribit) -> None:
    # Every session dies right after it comes up: delays must grow, not stay at the minimum.
    settings = FAST.model_copy(update={"reconnect_min_delay": 0.02, "reconnect_max_delay": 0.4})
    async with client(srv, settings=settings) as c:

        def drop_soon_after_setup(conn: Any, params: dict[str, Any]) -> Any:
            asyncio.get_running_loop().call_later(0.02, conn.ws.transport.abort)
            return "ok"

        srv.handlers["public/set_heartbeat"] = drop_soon_after_setup
        await srv.drop_all()
        await asyncio.sleep(1.5)
        assert c.stats.reconnects >= 3  # each of those sessions did come up
    starts = [r.at for r in srv.calls("public/auth")][1:]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # 0.02, 0.04, ... capped at 0.4 (jitter halves at most): at most ~8 attempts in 1.5 s.
    assert 3 <= len(starts) <= 9
    assert max(gaps) >= 0.15


async def test_reconnect_after_close_needs_new_subscriptions(srv: FakeDeribit) -> None:
    got: list[Any] = []

    async def handler(channel: str, data: Any) -> None:
        got.append(data)

    c = client(srv)
    await c.connect()
    await c.subscribe(["ticker.BTC-PERPETUAL.raw"], handler)
    await c.close()
    assert c.subscriptions == []
    await c.connect()
    await c.subscribe(["ticker.BTC-PERPETUAL.raw"], handler)
    await srv.push("ticker.BTC-PERPETUAL.raw", {"n": 1})
    await srv.wait_for(lambda: got == [{"n": 1}])
    await c.close()


SIGNING = FAST.model_copy(update={"auth_grant": "client_signature"})


async def test_client_signature_login_never_sends_the_secret(
    srv: FakeDeribit, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with client(srv, settings=SIGNING) as c:
        assert srv.connections[0].authenticated
        await srv.drop_all()
        await srv.wait_for(lambda: c.is_connected and c.stats.reconnects == 1)
        assert srv.live[-1].authenticated
    logins = srv.calls("public/auth")
    assert [r.params["grant_type"] for r in logins] == ["client_signature"] * 2
    first, second = (r.params for r in logins)
    assert first.keys() == {"grant_type", "client_id", "timestamp", "nonce", "data", "signature"}
    assert first["client_id"] == "client-a" and first["data"] == ""
    assert abs(first["timestamp"] - time.time() * 1000) < 10_000
    assert first["nonce"] != second["nonce"]  # single use: fresh on every login
    assert all(SECRET not in str(r.params) for r in srv.received)
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err + caplog.text


async def test_client_signature_refresh_failure_logs_in_with_a_signature() -> None:
    async with FakeDeribit({"client-a": SECRET}, token_ttl=1) as srv:
        async with client(srv, settings=SIGNING) as c:
            srv._refresh_tokens.discard("refresh-1")
            await srv.wait_for(lambda: len(srv.calls("public/auth")) >= 3, timeout=5)
            grants = [r.params["grant_type"] for r in srv.calls("public/auth")]
            assert grants[:3] == ["client_signature", "refresh_token", "client_signature"]
            assert c.is_connected


async def test_client_signature_with_a_wrong_secret_fails_without_leaking(
    srv: FakeDeribit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = Credentials("client-a", "wrong-" + SECRET)
    c = DeribitClient(srv.url, wrong, settings=SIGNING)
    with pytest.raises(Unauthorized) as info:
        await c.connect()
    assert info.value.code == 13009
    assert "wrong-" not in str(info.value) + repr(c) + caplog.text
    assert not c.is_connected
    await c.close()
