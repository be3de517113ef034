"""Restarts of a real ``python -m oms.cli.main paper-exchange`` process (started like every
service, :class:`oms_dev.harness.ServiceProcess`): graceful (SIGTERM) and crash (SIGKILL), with
``--reset``, and with a damaged store. After each, what clients saw is still there and no
order or trade id is handed out twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from oms.exchange.paper.testing import RpcClient
from oms_dev.devstack.net import free_port
from oms_dev.harness import ServiceProcess, wait_http_ok
from tests.exchange.paper_scenario import PERP, answers, mark_free, number, trade_a_little


class PaperProcess:
    """One state directory, served by successive paper-exchange processes (JSON logs)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.state_dir = base / "state"
        self.port = free_port()
        self.log_path = base / "paper.log"
        self.service: ServiceProcess | None = None
        self.accounts_file: Path | None = None

    async def start(self, *extra: str) -> None:
        args = [
            "paper-exchange", "--port", str(self.port), "--state-dir", str(self.state_dir),
            "--tick-interval", "0.05", "--no-rate-limits", *extra,
        ]
        if self.accounts_file is not None:
            args += ["--accounts-file", str(self.accounts_file)]
        env = {"OMS_DATA_DIR": str(self.base), "OMS_LOG_JSON": "true", "OMS_LOG_LEVEL": "info"}
        self.service = ServiceProcess("paper-exchange", args, env, self.log_path)
        self.service.start()
        try:
            await wait_http_ok(f"http://127.0.0.1:{self.port}/api/v2/public/get_time", 60)
        except TimeoutError:
            pytest.fail(f"paper exchange did not start:\n{self.service.tail()}")

    def kill(self) -> None:
        assert self.service is not None
        self.service.kill()

    def stop(self) -> None:
        assert self.service is not None
        self.service.stop()
        assert self.service.proc is not None and self.service.proc.returncode == 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/api/v2"

    def recovered(self) -> dict[str, Any]:
        """The last start's ``paper.recovered`` log record."""
        records = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                record = orjson.loads(line)
                if record.get("event") == "paper.recovered":
                    records.append(record)
        assert records, self.log_path.read_text()[-2000:]
        return records[-1]

    @asynccontextmanager
    async def client(self, who: str = "alice") -> AsyncIterator[RpcClient]:
        c = await RpcClient.connect(self.url)
        try:
            await c.auth(who, f"{who}-secret")
            yield c
        finally:
            await c.close()


@pytest.fixture
async def paper(tmp_path: Path) -> AsyncIterator[PaperProcess]:
    px = PaperProcess(tmp_path)
    yield px
    if px.service is not None:
        px.service.kill()


def truncate(path: Path, cut: int = 0, keep: int | None = None) -> None:
    """Drop the last ``cut`` bytes of a file (or keep only ``keep``): a torn tail."""
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep is not None else data[: len(data) - cut])


def scribble_last_page(path: Path, page: int = 4096) -> None:
    """Garbage over the last page of a database file, past its page header."""
    data = bytearray(path.read_bytes())
    data[-page + 100 :] = b"\xa5" * (page - 100)
    path.write_bytes(bytes(data))


def moved_aside(path: str) -> bool:
    return Path(path).exists()


async def burst(c: RpcClient, n: int) -> list[dict[str, Any]]:
    """``n`` order requests in flight at once (resting and filled ones); their results."""
    ticker = await c.result("public/ticker", instrument_name=PERP)
    far = ticker["best_bid_price"] - 1000
    futures = []
    for i in range(n):
        if i % 2:
            params = {"type": "market", "label": f"burst-{i}"}
        else:
            params = {"price": far, "label": f"burst-{i}"}
        method = "private/buy" if i % 4 in (0, 1) else "private/sell"
        if method == "private/sell" and "price" in params:
            params["price"] = ticker["best_ask_price"] + 1000
        futures.append(await c.send(method, instrument_name=PERP, amount=10, **params))
    replies = await asyncio.gather(*futures)
    for reply in replies:
        assert "result" in reply, reply
    return [reply["result"] for reply in replies]


@pytest.mark.parametrize("how", ["graceful", "sigkill"])
async def test_restart_answers_as_before(paper: PaperProcess, how: str) -> None:
    await paper.start()
    async with paper.client() as c:
        seen = await trade_a_little(c)
        before = await answers(c)
        if how == "sigkill":
            paper.kill()  # right after the last answer
    if how == "graceful":
        paper.stop()

    await paper.start()
    recovered = paper.recovered()
    assert recovered["open_orders"] == 3 and recovered["untriggered_orders"] == 1
    assert recovered["level"] == "info" and recovered["losses"] == []
    async with paper.client() as c:
        after = await answers(c)
        assert mark_free(after) == mark_free(before)
        placed = await c.result("private/buy", instrument_name=PERP, amount=10, type="market")
    assert number(placed["order"]["order_id"]) > max(map(number, seen["orders"]))
    assert number(placed["trades"][0]["trade_id"]) > max(map(number, seen["trades"]))


async def test_sigkill_right_after_replies_loses_nothing(paper: PaperProcess) -> None:
    """Every order and fill a client was told about is there after a crash that follows the
    last reply immediately."""
    await paper.start()
    async with paper.client("a") as a, paper.client("b") as b:
        results = await asyncio.gather(burst(a, 100), burst(b, 100))
        paper.kill()
    await paper.start()
    async with paper.client("a") as a, paper.client("b") as b:
        for c, replied in zip((a, b), results, strict=True):
            for result in replied:
                order = result["order"]
                assert await c.result("private/get_order_state",
                                      order_id=order["order_id"]) == order
                if result["trades"]:
                    stored = await c.result("private/get_user_trades_by_order",
                                            order_id=order["order_id"])
                    assert stored == result["trades"]
        placed = await a.result("private/buy", instrument_name=PERP, amount=10, type="market")
    orders = [r["order"]["order_id"] for replied in results for r in replied]
    trades = [t["trade_id"] for replied in results for r in replied for t in r["trades"]]
    assert number(placed["order"]["order_id"]) > max(map(number, orders))
    assert number(placed["trades"][0]["trade_id"]) > max(map(number, trades))


async def test_reset_starts_fresh_without_reusing_ids(paper: PaperProcess) -> None:
    paper.accounts_file = paper.base / "accounts.json"
    paper.accounts_file.write_text(orjson.dumps(
        {"accounts": {"desk": {"client_id": "desk", "client_secret": "desk-secret",
                               "balances": {"BTC": 3}}}}
    ).decode())
    await paper.start()
    async with paper.client("desk") as c:
        seen = await trade_a_little(c)
    paper.stop()

    await paper.start("--reset")
    assert paper.recovered()["reset"] is True
    async with paper.client("desk") as c:
        assert await c.result("private/get_open_orders") == []
        assert await c.result("private/get_user_trades_by_currency", currency="BTC") == {
            "trades": [], "has_more": False,
        }
        summary = await c.result("private/get_account_summary", currency="BTC")
        assert summary["balance"] == 3  # the accounts file, loaded again
        placed = await c.result("private/buy", instrument_name=PERP, amount=10, type="market")
    assert number(placed["order"]["order_id"]) > max(map(number, seen["orders"]))
    assert number(placed["trades"][0]["trade_id"]) > max(map(number, seen["trades"]))


async def test_truncated_wal_tail_is_reported_and_ids_stay_unique(paper: PaperProcess) -> None:
    await paper.start()
    async with paper.client() as c:
        seen = await trade_a_little(c)
        paper.kill()
    truncate(paper.state_dir / "paper.db-wal", 3000)  # tears the last frame: a lost commit

    await paper.start()
    recovered = paper.recovered()
    assert recovered["level"] == "warning"
    assert recovered["wal_dropped_bytes"] > 0 and recovered["wal_dropped_commits"] >= 1
    assert any("write-ahead log tail torn" in loss for loss in recovered["losses"])
    async with paper.client() as c:
        await c.result("private/get_open_orders")
        placed = await c.result("private/buy", instrument_name=PERP, amount=10, type="market")
    assert number(placed["order"]["order_id"]) > max(map(number, seen["orders"]))
    assert number(placed["trades"][0]["trade_id"]) > max(map(number, seen["trades"]))


async def test_corrupt_database_is_salvaged(paper: PaperProcess) -> None:
    await paper.start()
    async with paper.client() as c:
        seen = await trade_a_little(c)
    paper.stop()  # checkpointed: everything is in paper.db now
    scribble_last_page(paper.state_dir / "paper.db")

    await paper.start()
    recovered = paper.recovered()
    assert recovered["level"] == "warning" and recovered["db_corrupt"] is True
    assert any("database corrupt" in loss for loss in recovered["losses"])
    assert moved_aside(recovered["corrupt_db_moved_to"])
    async with paper.client() as c:
        await c.result("private/get_open_orders")
        placed = await c.result("private/buy", instrument_name=PERP, amount=10, type="market")
    assert number(placed["order"]["order_id"]) > max(map(number, seen["orders"]))
    assert number(placed["trades"][0]["trade_id"]) > max(map(number, seen["trades"]))


async def test_without_id_reservation_ids_continue_above_the_clock(paper: PaperProcess) -> None:
    """The reservation file and the database tail both lost: numbers derived from the clock
    are still above everything handed out before."""
    await paper.start()
    async with paper.client() as c:
        seen = await trade_a_little(c)
        paper.kill()
    (paper.state_dir / "ids.json").unlink()
    truncate(paper.state_dir / "paper.db-wal", keep=100)

    await paper.start()
    recovered = paper.recovered()
    assert recovered["ids_reserved"] is None and recovered["level"] == "warning"
    async with paper.client() as c:
        placed = await c.result("private/buy", instrument_name=PERP, amount=10, type="market")
    assert number(placed["order"]["order_id"]) > max(map(number, seen["orders"]))
    assert number(placed["trades"][0]["trade_id"]) > max(map(number, seen["trades"]))
