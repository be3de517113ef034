"""Reconciliation at every venue (no Kafka): each venue's recorded positions are compared
with that venue's own accounts, one through the native Deribit sessions, one through ccxt,
both against paper exchanges; a venue that cannot be read is counted and skipped."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from oms.exchange.paper import PaperExchange
from oms.exchange.paper.testing import RpcClient
from oms.exchange.venues import create_accounts
from oms.positions.math import PositionKind
from oms.positions.reconcile import Reconciler
from oms.positions.state import PositionState
from oms.secrets import Credentials, SecretStore, write_secrets_file
from oms.settings import PaperExchangeSettings, Settings, VenueSettings
from oms_dev.devstack.net import free_port

ACCOUNT, SECRET = "rec-acct", "rec-s3cret"
INSTRUMENT = "BTC-PERPETUAL"


async def _paper() -> PaperExchange:
    exchange = PaperExchange(
        settings=PaperExchangeSettings(port=0, tick_interval_s=3600), rate_limits=False
    )
    await exchange.start()
    exchange.accounts.add(ACCOUNT, ACCOUNT, SECRET)
    return exchange


@pytest.fixture
async def exchanges() -> AsyncIterator[tuple[PaperExchange, PaperExchange]]:
    first, second = await _paper(), await _paper()
    try:
        yield first, second
    finally:
        await first.stop()
        await second.stop()


async def _set_position(px: PaperExchange, size: float, price: float) -> None:
    admin = await RpcClient.connect(px.ws_url)
    try:
        await admin.auth(ACCOUNT, SECRET)
        await admin.result(
            "admin/set_position", instrument_name=INSTRUMENT, size=size, average_price=price
        )
    finally:
        await admin.close()


def _state(venue: str, size: float, price: float) -> PositionState:
    return PositionState(
        account_id=ACCOUNT,
        instrument_name=INSTRUMENT,
        venue=venue,
        kind=PositionKind.INVERSE,
        size=size,
        average_price=price,
        version=3,
    )


def _reconciler(
    tmp_path: Path, venues: dict[str, VenueSettings], url: str, recorded: list[PositionState]
) -> tuple[Reconciler, list[tuple[str, dict[str, Any]]]]:
    write_secrets_file(tmp_path / "secrets.json", {ACCOUNT: Credentials(ACCOUNT, SECRET)})
    secrets = SecretStore(tmp_path / "secrets.json")
    settings = Settings(data_dir=tmp_path)
    settings = settings.model_copy(
        update={
            "exchange": settings.exchange.model_copy(
                update={"url": url, "venues": venues, "request_timeout": 2.0}
            )
        }
    )
    sent: list[tuple[str, dict[str, Any]]] = []

    async def send(key: str, command: dict[str, Any]) -> None:
        sent.append((key, command))

    async def ready() -> bool:
        return True

    reconciler = Reconciler(
        settings,
        {venue: create_accounts(settings, secrets, venue) for venue in venues},
        {venue: [ACCOUNT] for venue in venues},
        lambda: recorded,
        send,
        ready,
    )
    return reconciler, sent


async def test_each_venue_is_compared_with_its_own_accounts(
    tmp_path: Path, exchanges: tuple[PaperExchange, PaperExchange]
) -> None:
    first, second = exchanges
    venues = {
        "deribit": VenueSettings(),
        "second": VenueSettings(
            kind="ccxt", ccxt_id="deribit", url=f"http://127.0.0.1:{second.port}"
        ),
    }
    # Both venues hold 100 long at 50,000 on record; the second venue's exchange was
    # changed behind the OMS's back, the first's agrees.
    recorded = [_state("deribit", 100, 50_000.0), _state("second", 100, 50_000.0)]
    await _set_position(first, 100, 50_000.0)
    await _set_position(second, -300, 61_000.0)
    reconciler, sent = _reconciler(tmp_path, venues, first.ws_url, recorded)
    await reconciler.start()
    try:
        confirmed = await reconciler.check_all("test")
    finally:
        await reconciler.stop()
    assert [(m.venue, m.key) for m in confirmed] == [("second", f"{ACCOUNT}|{INSTRUMENT}@second")]
    [(key, command)] = sent
    assert key == f"{ACCOUNT}|{INSTRUMENT}@second"
    assert (command["venue"], command["size"], command["average_price"]) == (
        "second", -300, 61_000.0,
    )  # fmt: skip
    assert command["recorded_version"] == 3
    stats = reconciler.stats()
    assert stats["venues"]["second"]["mismatches"] == 1
    assert stats["venues"]["deribit"]["mismatches"] == 0
    assert stats["venues"]["deribit"]["checks"] == stats["venues"]["second"]["checks"] == 1
    assert stats["venues"]["second"]["accounts"] == [ACCOUNT]


async def test_a_venue_that_cannot_be_read_does_not_stop_the_others(
    tmp_path: Path, exchanges: tuple[PaperExchange, PaperExchange]
) -> None:
    first, _ = exchanges
    venues = {
        "deribit": VenueSettings(),
        # Nothing listens there.
        "gone": VenueSettings(kind="ccxt", ccxt_id="deribit", url=f"http://127.0.0.1:{free_port()}"),
    }
    await _set_position(first, 40, 50_000.0)
    reconciler, sent = _reconciler(tmp_path, venues, first.ws_url, [])
    await reconciler.start()
    try:
        confirmed = await reconciler.check_all("test")
    finally:
        await reconciler.stop()
    # The primary's difference (40 at the exchange, nothing on record) is found all the same.
    assert [(m.venue, m.exchange_size) for m in confirmed] == [("deribit", 40)]
    assert [command["venue"] for _, command in sent] == ["deribit"]
    stats = reconciler.stats()
    assert stats["venues"]["gone"]["errors"] == 1 and stats["venues"]["gone"]["last_error"]
    assert stats["venues"]["gone"]["checks"] == 0
    assert stats["venues"]["deribit"]["errors"] == 0 and stats["errors"] == 1
