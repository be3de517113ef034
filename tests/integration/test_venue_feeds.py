"""Every venue is followed live and reconciled, not only the primary one. Two paper exchange
processes, the second ("second") reached through ccxt:

* an order of ours resting at the second venue and filled later by someone else's order is
  reported by the gateway's feed of that venue (ccxt.pro): a report of source
  ``subscription`` tagged with the venue, which only the gateway publishes (the worker's own
  looks at the order, which may also see the fill, publish none of that source);
* a position changed at the second venue behind the OMS's back (a trade placed there directly
  with the OMS account's credentials) is found by the keeper's reconciliation of that venue,
  corrected and alerted as at the primary venue.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from oms.client import OrderClient
from oms.exchange.deribit.client import DeribitClient
from oms.kafka.admin import ensure_topics
from oms.schemas import (
    ExchangeOrderState,
    ExecutionReport,
    OrderEvent,
    OrderEventType,
    ReasonCode,
    ReportSource,
    Topic,
)
from oms.secrets import Credentials, SecretStore
from oms.settings import Settings
from oms_dev.devstack.net import free_port
from oms_dev.harness import (
    OmsServices,
    isolated_settings,
    two_venues_ready,
    with_second_venue,
    write_account_secrets,
)
from tests.positions.helpers import TopicTail

pytestmark = pytest.mark.kafka

ACCOUNTS = ["feeds-a", "feeds-b"]
SECOND = "second"
INSTRUMENT = "BTC-PERPETUAL"
# Positions are compared this often (s): the test waits one interval and the confirmation.
RECONCILE_INTERVAL_S = 3.0


Stack = tuple[Settings, OmsServices, str]


@pytest.fixture(scope="module")
async def stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp("venue-feeds")
    second_port = free_port()
    base = with_second_venue(
        isolated_settings(tmp, kafka_bootstrap, ACCOUNTS, partitions=2, label="vfd"),
        SECOND,
        second_port,
    )
    settings = base.model_copy(
        update={
            "positions": base.positions.model_copy(
                update={"monitoring_interval_s": RECONCILE_INTERVAL_S}
            ),
        }
    )
    write_account_secrets(settings.resolved_secrets_file, ACCOUNTS)
    await ensure_topics(settings)
    services = OmsServices(settings, settings.data_dir / "logs")
    services.add_paper_exchange("--accounts-file", str(settings.resolved_secrets_file))
    # The second exchange's market stands still after its first quotes: an order inside its
    # spread stays the best price until the counter-order takes it.
    services.add_second_paper_exchange(second_port, "--tick-interval", "3600")
    services.add_gateway()
    services.add_worker(0, settings.worker.web_port)
    services.add_position_keeper()
    services.start_all()
    second_ws = f"ws://127.0.0.1:{second_port}/ws/api/v2"
    try:
        await two_venues_ready(settings, second_port, keeper=True)
    except BaseException:
        print(services.diagnostics())
        services.stop_all()
        raise
    yield settings, services, second_ws
    services.stop_all()


async def _client(settings: Settings, url: str, credentials: Credentials | None) -> DeribitClient:
    client = DeribitClient(url, credentials, settings=settings.exchange)
    await client.connect()
    return client


def _credentials(settings: Settings, account: str) -> Credentials:
    found = SecretStore(settings.resolved_secrets_file).credentials(account)
    assert found is not None
    return found


async def _keeper(settings: Settings, path: str) -> Any:
    url = f"http://127.0.0.1:{settings.positions.web_port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return await resp.json()


async def test_a_fill_at_the_second_venue_comes_through_its_feed(stack: Stack) -> None:
    settings, services, second_ws = stack
    account = ACCOUNTS[0]
    reports = await TopicTail(
        settings.kafka.bootstrap, settings.topic(Topic.EXECUTION_REPORTS)
    ).start()
    client = OrderClient(account, settings=settings)
    await client.start()
    # Someone else at the second exchange: an account the OMS does not know.
    taker = await _client(settings, second_ws, Credentials("outside-taker", "taker-secret"))
    try:
        ticker = await taker.call("public/ticker", {"instrument_name": INSTRUMENT})
        price = float(ticker["best_ask_price"]) - 1.0  # inside the spread: the best ask
        assert price > float(ticker["best_bid_price"])
        order_id = await client.submit_advanced_order(
            INSTRUMENT, 10, "sell", price=price, venue=SECOND
        )
        opened = await client.wait_for_event(order_id, timeout=60)
        assert opened.event_type is OrderEventType.OPEN, opened

        # Filled minutes later in real life; here at once, by the other account's order.
        await taker.call(
            "private/buy", {"instrument_name": INSTRUMENT, "amount": 10, "type": "market"}
        )
        filled = await client.wait_for_event(
            order_id, lambda e: e.event_type is OrderEventType.FILLED, timeout=30
        )

        def from_feed(raw: bytes) -> bool:
            report = ExecutionReport.from_bytes(raw)
            return (
                report.order_id == order_id
                and report.source is ReportSource.SUBSCRIPTION
                and (bool(report.fills) or report.order_state is ExchangeOrderState.FILLED)
            )

        heard = ExecutionReport.from_bytes(await reports.wait_for(from_feed, 10))
    except BaseException:
        print(services.diagnostics())
        raise
    finally:
        await taker.close()
        await client.close()
        await reports.stop()

    assert filled.order is not None and filled.order.venue == SECOND
    assert filled.order.filled_amount == 10
    assert heard.venue == SECOND and heard.account_id == account
    # The position at the second venue is the exchange's, from the fill the feed brought.
    want = [-10.0]
    deadline = time.monotonic() + 30
    while True:
        rows = await _keeper(settings, "/positions")
        got = [
            r["size"]
            for r in rows
            if (r["account_id"], r["venue"], r["instrument_name"]) == (account, SECOND, INSTRUMENT)
        ]
        if got == want:
            break
        assert time.monotonic() < deadline, rows
        await asyncio.sleep(0.3)


async def test_a_position_changed_behind_the_oms_at_the_second_venue_is_corrected(
    stack: Stack,
) -> None:
    settings, services, second_ws = stack
    account = ACCOUNTS[1]
    key = f"{account}|{INSTRUMENT}@{SECOND}"
    events = await TopicTail(settings.kafka.bootstrap, settings.topic(Topic.ORDER_EVENTS)).start()
    # The OMS account's own credentials, straight at the second exchange: a trade the OMS
    # never sent, without a label of ours.
    direct = await _client(settings, second_ws, _credentials(settings, account))
    try:
        await direct.call(
            "private/buy", {"instrument_name": INSTRUMENT, "amount": 30, "type": "market"}
        )

        def mismatch(raw: bytes) -> bool:
            event = OrderEvent.from_bytes(raw)
            return (
                event.event_type is OrderEventType.POSITION_MISMATCH
                and event.order_id == f"position:{key}"
            )

        # One interval, the confirmation look, and room for a loaded machine.
        event = OrderEvent.from_bytes(await events.wait_for(mismatch, RECONCILE_INTERVAL_S + 20))
    except BaseException:
        print(services.diagnostics())
        raise
    finally:
        await direct.close()
        await events.stop()

    assert event.reason_code is ReasonCode.POSITION_MISMATCH
    assert event.details["severity"] == "emergency"
    assert event.details["recorded_size"] == 0
    assert event.details["exchange_size"] == 30
    stats = (await _keeper(settings, "/stats"))["reconcile"]
    assert stats["venues"][SECOND]["mismatches"] >= 1
    assert stats["venues"][SECOND]["errors"] == 0
    assert account in stats["venues"][SECOND]["accounts"]
    # Corrected: the keeper now holds the exchange's figures, flagged for review.
    rows = await _keeper(settings, "/positions")
    [row] = [
        r
        for r in rows
        if (r["account_id"], r["venue"], r["instrument_name"]) == (account, SECOND, INSTRUMENT)
    ]
    assert row["size"] == 30 and row["needs_review"] is True
