"""Two venues in one stack: two paper exchange processes (different seeds), one reached by the
native Deribit adapter ("deribit"), the other through ccxt ("second"). Orders of each venue
land on their own exchange only (asked by label with each exchange's own API), and the
keeper's positions per venue are each exchange's ``private/get_positions``.

A routed order (``"algo": "sor"``) over both venues: with each exchange's market held still and
its asks arranged by a maker account (one venue cheaper but shallower), the order fills at the
cheaper venue first and spills the rest to the other, one IOC child per venue; a second one
finds less than it wants, routes again and ends with its filled part, cancelled for
``no_liquidity``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from oms.algos.sor import child_order_id
from oms.client import OrderClient
from oms.exchange.deribit.client import DeribitClient
from oms.kafka.admin import ensure_topics
from oms.schemas import OrderEvent, OrderEventType, OrderStatus, ReasonCode
from oms.secrets import SecretStore
from oms.settings import Settings
from oms_dev.devstack.net import free_port
from oms_dev.harness import (
    OmsServices,
    isolated_settings,
    two_venues_ready,
    with_second_venue,
    write_account_secrets,
)

pytestmark = pytest.mark.kafka

ACCOUNTS = ["venue-a", "venue-b"]
# The routed orders' account, and the one whose resting sells make the books they route on.
ROUTER = "venue-sor"
MAKER = "venue-maker"
INSTRUMENT = "BTC-PERPETUAL"
SECOND = "second"
DONE = {OrderEventType.OPEN, OrderEventType.FILLED, OrderEventType.REJECTED}


def _second_url(settings: Settings) -> str:
    return str(settings.exchange.venues[SECOND].url)


def _ws_url(http_url: str) -> str:
    return http_url.replace("http://", "ws://") + "/ws/api/v2"


@pytest.fixture(scope="module")
async def stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Settings, OmsServices]]:
    tmp: Path = tmp_path_factory.mktemp("venues")
    base = isolated_settings(tmp, kafka_bootstrap, [*ACCOUNTS, ROUTER], partitions=2, label="ven")
    second_port = free_port()
    base = with_second_venue(base, SECOND, second_port)  # the second one through ccxt
    settings = base.model_copy(
        update={
            "worker": base.worker.model_copy(
                update={"recovery_check_interval_s": 1.0, "submit_timeout_s": 3.0}
            ),
        }
    )
    secrets_file = str(settings.resolved_secrets_file)
    write_account_secrets(settings.resolved_secrets_file, [*ACCOUNTS, ROUTER, MAKER])
    await ensure_topics(settings)
    services = OmsServices(settings, settings.data_dir / "logs")
    services.add_paper_exchange("--accounts-file", secrets_file)
    # The second exchange: its own process, port, market (seed) and state.
    services.add_second_paper_exchange(second_port)
    services.add_gateway()
    services.add_worker(0, settings.worker.web_port)
    services.add_position_keeper()
    services.start_all()
    try:
        await two_venues_ready(settings, second_port, keeper=True)
    except BaseException:
        print(services.diagnostics())
        services.stop_all()
        raise
    yield settings, services
    services.stop_all()


async def _final(client: OrderClient, order_id: str) -> OrderEvent:
    return await client.wait_for_event(order_id, lambda e: e.event_type in DONE, timeout=60)


async def _exchange(settings: Settings, url: str, account: str) -> DeribitClient:
    credentials = SecretStore(settings.resolved_secrets_file).credentials(account)
    client = DeribitClient(url, credentials, settings=settings.exchange)
    await client.connect()
    return client


async def _labels_at(settings: Settings, url: str, account: str, labels: list[str]) -> set[str]:
    """Which of ``labels`` the exchange at ``url`` holds an order for."""
    client = await _exchange(settings, url, account)
    try:
        held = set()
        for label in labels:
            found = await client.call(
                "private/get_order_state_by_label", {"currency": "BTC", "label": label}
            )
            if found:
                assert len(found) == 1, f"{label} twice at {url}"
                held.add(label)
        return held
    finally:
        await client.close()


async def _order_at(settings: Settings, url: str, account: str, label: str) -> dict[str, Any]:
    client = await _exchange(settings, url, account)
    try:
        [order] = await client.call(
            "private/get_order_state_by_label", {"currency": "BTC", "label": label}
        )
    finally:
        await client.close()
    found: dict[str, Any] = order
    return found


async def _positions_at(settings: Settings, url: str, account: str) -> float:
    client = await _exchange(settings, url, account)
    try:
        rows = await client.get_positions("BTC")
    finally:
        await client.close()
    return sum(float(p["size"]) for p in rows if p["instrument_name"] == INSTRUMENT)


async def _keeper_positions(settings: Settings) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{settings.positions.web_port}/positions"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        rows: list[dict[str, Any]] = await resp.json()
    return rows


async def test_orders_and_positions_per_venue(stack: tuple[Settings, OmsServices]) -> None:
    settings, services = stack
    urls = {"deribit": settings.exchange.url, SECOND: _ws_url(_second_url(settings))}
    clients = {a: OrderClient(a, settings=settings) for a in ACCOUNTS}
    for client in clients.values():
        await client.start()
    # Per account and venue: a resting buy far below the market and market orders whose
    # net differs per venue and account, so a fill counted at the wrong venue shows.
    plan = {
        ("venue-a", "deribit"): [("buy", 30.0), ("sell", 10.0)],
        ("venue-a", SECOND): [("sell", 40.0)],
        ("venue-b", "deribit"): [("sell", 20.0)],
        ("venue-b", SECOND): [("buy", 50.0), ("buy", 10.0)],
    }
    placed: dict[tuple[str, str], list[str]] = {key: [] for key in plan}
    try:
        for (account, venue), trades in plan.items():
            client = clients[account]
            resting = await client.submit_advanced_order(
                INSTRUMENT, 10, "buy", price=1_000.0, venue=venue
            )
            placed[(account, venue)].append(resting)
            for direction, amount in trades:
                order_id = await client.submit_advanced_order(
                    INSTRUMENT, amount, direction, order_type="market", venue=venue
                )
                placed[(account, venue)].append(order_id)
        events = {
            order_id: await _final(clients[account], order_id)
            for (account, _), ids in placed.items()
            for order_id in ids
        }
        # An order naming a venue that is not configured is refused at intake, by reason.
        nowhere = await clients["venue-a"].submit_advanced_order(
            INSTRUMENT, 10, "buy", price=1_000.0, venue="nowhere"
        )
        refused = await _final(clients["venue-a"], nowhere)
        # Amends and cancels go where their order is (here through ccxt, by label).
        amended_id = placed[("venue-a", SECOND)][0]
        await clients["venue-a"].amend_order(amended_id, amount=20.0, price=1_500.0)
        amended = await clients["venue-a"].wait_for_event(
            amended_id, lambda e: e.event_type is OrderEventType.AMENDED, timeout=60
        )
        cancelled_id = placed[("venue-b", SECOND)][0]
        await clients["venue-b"].cancel_order(cancelled_id)
        cancelled = await clients["venue-b"].wait_for_event(
            cancelled_id, lambda e: e.event_type is OrderEventType.CANCELLED, timeout=60
        )
    except BaseException:
        print(services.diagnostics())
        raise
    finally:
        for client in clients.values():
            await client.close()

    for (_, _), ids in placed.items():
        resting, *markets = ids
        assert events[resting].event_type is OrderEventType.OPEN, events[resting]
        assert all(events[o].event_type is OrderEventType.FILLED for o in markets)
    assert refused.event_type is OrderEventType.REJECTED
    assert refused.reason_code is ReasonCode.UNKNOWN_VENUE
    second_url = urls[SECOND]
    assert amended.order is not None and amended.order.venue == SECOND
    at_second = await _order_at(settings, second_url, "venue-a", amended_id)
    assert (at_second["amount"], at_second["price"]) == (20, 1_500)
    assert cancelled.order is not None and cancelled.order.venue == SECOND
    at_second = await _order_at(settings, second_url, "venue-b", cancelled_id)
    assert at_second["order_state"] == "cancelled"

    # Every order is at its own venue, once, and not at the other one.
    for account in ACCOUNTS:
        for venue, url in urls.items():
            mine = placed[(account, venue)]
            others = [
                o for (a, v), ids in placed.items() if a == account and v != venue for o in ids
            ]
            assert await _labels_at(settings, url, account, mine + others) == set(mine)

    # The keeper's position per venue is that exchange's, for every account.
    want = {
        (account, venue): await _positions_at(settings, url, account)
        for account in ACCOUNTS
        for venue, url in urls.items()
    }
    assert want == {
        ("venue-a", "deribit"): 20.0,
        ("venue-a", SECOND): -40.0,
        ("venue-b", "deribit"): -20.0,
        ("venue-b", SECOND): 60.0,
    }
    got: dict[tuple[str, str], float] = {}
    deadline = time.monotonic() + 30
    while got != want:
        rows = await _keeper_positions(settings)
        got = {
            (r["account_id"], r["venue"]): r["size"]
            for r in rows
            if r["instrument_name"] == INSTRUMENT and r["account_id"] in ACCOUNTS
        }
        if got == want:
            break
        assert time.monotonic() < deadline, (got, want)
        await asyncio.sleep(0.3)


async def _arrange_asks(
    settings: Settings, url: str, asks: list[tuple[float, float]]
) -> list[list[float]]:
    """Hold the exchange's market still, take every ask shown, then rest the maker's sells
    at ``asks`` (price, amount); returns the book's asks as they are then."""
    client = await _exchange(settings, url, MAKER)
    try:
        await client.call("admin/pause_market", {"paused": True})
        book = await client.call(
            "public/get_order_book", {"instrument_name": INSTRUMENT, "depth": 50}
        )
        shown = sum(float(amount) for _, amount in book["asks"])
        if shown:
            await client.call(
                "private/buy", {"instrument_name": INSTRUMENT, "amount": shown, "type": "market"}
            )
        for price, amount in asks:
            await client.call(
                "private/sell",
                {"instrument_name": INSTRUMENT, "amount": amount, "type": "limit", "price": price},
            )
        book = await client.call(
            "public/get_order_book", {"instrument_name": INSTRUMENT, "depth": 50}
        )
    finally:
        await client.close()
    arranged: list[list[float]] = book["asks"]
    return arranged


async def _best_bid(settings: Settings, url: str) -> float:
    client = await _exchange(settings, url, MAKER)
    try:
        book = await client.call("public/get_order_book", {"instrument_name": INSTRUMENT})
    finally:
        await client.close()
    return float(book["bids"][0][0])


async def _resume(settings: Settings, url: str) -> None:
    client = await _exchange(settings, url, MAKER)
    try:
        await client.call("admin/pause_market", {"paused": False})
    finally:
        await client.close()


async def test_a_routed_order_fills_at_the_better_venue_and_spills_to_the_other(
    stack: tuple[Settings, OmsServices],
) -> None:
    settings, services = stack
    urls = {"deribit": settings.exchange.url, SECOND: _ws_url(_second_url(settings))}
    # Above both exchanges' bids (so nothing crosses), on the 0.5 tick: deribit shows 30 at
    # the better price, second 300 just above it (same taker fee: deribit is cheaper net).
    cheap = float(int(max([await _best_bid(settings, url) for url in urls.values()])) + 100)
    dear = cheap + 10.0
    client = OrderClient(ROUTER, settings=settings)
    await client.start()
    try:
        assert await _arrange_asks(settings, urls["deribit"], [(cheap, 30)]) == [[cheap, 30]]
        assert await _arrange_asks(settings, urls[SECOND], [(dear, 300)]) == [[dear, 300]]
        routed_id = await client.submit_advanced_order(
            INSTRUMENT,
            100,
            "buy",
            price=dear,
            metadata={"algo": "sor", "sor_venues": f"deribit,{SECOND}"},
        )
        routed = await client.wait_for_event(
            routed_id, lambda e: e.event_type is OrderEventType.ROUTED, timeout=60
        )
        filled = await client.wait_for_event(
            routed_id, lambda e: e.event_type is OrderEventType.FILLED, timeout=60
        )
        # Wants 270, finds 230 (what is left at second): routes again, finds nothing, ends.
        short_id = await client.submit_advanced_order(
            INSTRUMENT,
            270,
            "buy",
            price=dear,
            metadata={"algo": "sor", "sor_venues": f"deribit,{SECOND}"},
        )
        ended = await client.wait_for_event(
            short_id, lambda e: e.event_type is OrderEventType.CANCELLED, timeout=60
        )
        second_try = await client.wait_for_event(
            short_id,
            lambda e: e.event_type is OrderEventType.ROUTED and e.event_id.endswith(":1"),
            timeout=10,
        )
    except BaseException:
        print(services.diagnostics())
        raise
    finally:
        await client.close()
        for url in urls.values():
            await _resume(settings, url)

    # The decision saw both books and split as they showed: 30 at deribit, 70 at second.
    decision = routed.details["routing"]
    assert decision["books"]["deribit"]["levels"] == [[cheap, 30.0]]
    assert decision["books"][SECOND]["levels"] == [[dear, 300.0]]
    assert [(a["venue"], a["amount"], a["price"]) for a in decision["allocations"]] == [
        ("deribit", 30.0, cheap),
        (SECOND, 70.0, dear),
    ]
    assert decision["unallocated"] == 0
    # One IOC child per venue, each at its own exchange only, filled as planned.
    parent = filled.order
    assert parent is not None and parent.status is OrderStatus.FILLED
    children = {venue: child_order_id(parent, 0, venue) for venue in urls}
    assert set(parent.children) == set(children.values())
    for venue, url in urls.items():
        assert await _labels_at(settings, url, ROUTER, list(children.values())) == {children[venue]}
    at = {
        venue: await _order_at(settings, url, ROUTER, children[venue])
        for venue, url in urls.items()
    }
    assert (at["deribit"]["amount"], at["deribit"]["filled_amount"]) == (30, 30)
    assert (at[SECOND]["amount"], at[SECOND]["filled_amount"]) == (70, 70)
    assert parent.filled_amount == 100.0
    assert parent.filled_amount == sum(entry[0] for entry in parent.children.values())
    assert parent.average_price == pytest.approx((30 * cheap + 70 * dear) / 100)

    # The remainder: placed what was there, routed again, ended with its filled part.
    assert ended.reason_code is ReasonCode.NO_LIQUIDITY
    short = ended.order
    assert short is not None and short.filled_amount == 230.0
    assert second_try.details["routing"]["allocations"] == []
    assert second_try.details["routing"]["unallocated"] == 40.0

    # The keeper's positions per venue are each exchange's.
    want = {venue: await _positions_at(settings, url, ROUTER) for venue, url in urls.items()}
    assert want == {"deribit": 30.0, SECOND: 300.0}
    got: dict[str, float] = {}
    deadline = time.monotonic() + 30
    while got != want:
        rows = await _keeper_positions(settings)
        got = {
            r["venue"]: r["size"]
            for r in rows
            if r["instrument_name"] == INSTRUMENT and r["account_id"] == ROUTER
        }
        if got == want:
            break
        assert time.monotonic() < deadline, (got, want)
        await asyncio.sleep(0.3)
