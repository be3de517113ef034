"""A paper exchange, the position keeper (and optionally the sink) as real processes, and
helpers to trade on the exchange and publish what it answered as execution reports."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer

from oms.exchange.deribit.client import DeribitClient
from oms.exchange.deribit.translate import report_from_order, report_from_trades
from oms.kafka.admin import ensure_topics
from oms.kafka.reading import topic_partitions
from oms.schemas import ExecutionReport, ReportSource, Topic
from oms.secrets import Credentials, SecretStore, write_secrets_file
from oms.settings import Settings
from oms_dev.harness import OmsServices, isolated_settings, wait_http_ok

ACCOUNTS = ["pos-a", "pos-b"]


def position_settings(
    tmp: Path, bootstrap: str, *, monitoring_interval_s: float = 60.0, **positions: Any
) -> Settings:
    settings = isolated_settings(tmp, bootstrap, ACCOUNTS, partitions=2, label="pos")
    return settings.model_copy(
        update={
            "positions": settings.positions.model_copy(
                update={"monitoring_interval_s": monitoring_interval_s, **positions}
            ),
            "sink": settings.sink.model_copy(update={"flush_interval_s": 0.3}),
        }
    )


async def keeper_ready(settings: Settings, within: float = 120.0) -> None:
    await wait_http_ok(
        f"http://127.0.0.1:{settings.positions.web_port}/health",
        within,
        ready=lambda body: bool(body.get("ready")) and body.get("instruments", 0) > 0,
    )


@asynccontextmanager
async def position_stack(settings: Settings, *, sink: bool = False) -> AsyncIterator[OmsServices]:
    write_secrets_file(
        settings.resolved_secrets_file,
        {a: Credentials(f"cid-{a}", secrets.token_hex(16)) for a in ACCOUNTS},
    )
    await ensure_topics(settings)
    services = OmsServices(settings, settings.data_dir / "logs")
    services.add_paper_exchange("--accounts-file", str(settings.resolved_secrets_file))
    services.add_position_keeper()
    if sink:
        services.add_sink()
    services.start_all()
    try:
        await keeper_ready(settings)
        if sink:
            await wait_http_ok(f"http://127.0.0.1:{settings.sink.query_port}/health", 60)
        yield services
    except BaseException:
        print(services.diagnostics())
        raise
    finally:
        services.stop_all()


class Trader:
    """Trades on the paper exchange for one account and publishes the answers as reports,
    the way the executor (RPC replies) and the gateway (subscriptions) do."""

    def __init__(self, settings: Settings, account: str, producer: AIOKafkaProducer) -> None:
        self.settings = settings
        self.account = account
        self.producer = producer
        creds = SecretStore(settings.resolved_secrets_file).credentials(account)
        self.client = DeribitClient(settings.exchange.url, creds, settings=settings.exchange)
        self.topic = settings.topic(Topic.EXECUTION_REPORTS)
        self.reports: list[ExecutionReport] = []

    async def __aenter__(self) -> Trader:
        await self.client.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()

    async def trade(
        self,
        side: str,
        instrument: str,
        amount: float,
        *,
        price: float | None = None,
        time_in_force: str | None = None,
    ) -> ExecutionReport:
        """Place an order (market, or limit at ``price``); returns and publishes its report."""
        label = f"o-{uuid.uuid4().hex[:24]}"
        params: dict[str, Any] = {"instrument_name": instrument, "amount": amount, "label": label}
        params |= {"type": "limit", "price": price} if price else {"type": "market"}
        if time_in_force:
            params["time_in_force"] = time_in_force
        reply = await (self.client.buy if side == "buy" else self.client.sell)(**params)
        report = report_from_order(
            reply["order"], account_id=self.account, source=ReportSource.RPC, trades=reply["trades"]
        )
        await self.publish(report)
        return report

    async def publish(self, report: ExecutionReport) -> None:
        self.reports.append(report)
        await self.producer.send_and_wait(self.topic, report.to_bytes(), report.order_id.encode())

    async def publish_as_subscription(self, report: ExecutionReport) -> None:
        """The same trades again, as the gateway's fills-only user.trades report."""
        trades = [
            {
                "trade_id": f.trade_id, "amount": f.amount, "price": f.price, "fee": f.fee,
                "direction": f.direction.value if f.direction else None,
                "instrument_name": report.instrument_name, "label": report.order_id,
                "order_id": report.exchange_order_id, "timestamp": f.timestamp,
            }
            for f in report.fills
        ]  # fmt: skip
        await self.publish(
            report_from_trades(trades, account_id=self.account, source=ReportSource.SUBSCRIPTION)
        )

    async def exchange_positions(self) -> dict[str, dict[str, Any]]:
        items = await self.client.get_positions(currency="any")
        return {p["instrument_name"]: p for p in items}


async def keeper_positions(settings: Settings) -> dict[tuple[str, str], dict[str, Any]]:
    url = f"http://127.0.0.1:{settings.positions.web_port}/positions"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        rows = await resp.json()
    return {(r["account_id"], r["instrument_name"]): r for r in rows}


async def keeper_stats(settings: Settings) -> dict[str, Any]:
    url = f"http://127.0.0.1:{settings.positions.web_port}/stats"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        body: dict[str, Any] = await resp.json()
        return body


def differences(
    account: str,
    recorded: dict[tuple[str, str], dict[str, Any]],
    exchange: dict[str, dict[str, Any]],
) -> list[str]:
    """What differs between the keeper and the exchange for one account (empty: equal)."""
    out = []
    names = {i for a, i in recorded if a == account} | set(exchange)
    for name in sorted(names):
        ours = recorded.get((account, name), {})
        theirs = exchange.get(name, {})
        for field, their_field in (
            ("size", "size"),
            ("average_price", "average_price"),
            ("realized_pnl", "realized_profit_loss"),
        ):
            a = float(ours.get(field) or 0.0)
            b = float(theirs.get(their_field) or 0.0)
            if abs(a - b) > max(1e-9, 1e-9 * max(abs(a), abs(b))):
                out.append(f"{account} {name} {field}: keeper {a} exchange {b}")
    return out


async def wait_equal(settings: Settings, traders: list[Trader], within: float = 60.0) -> list[str]:
    """Poll until the keeper equals the exchange for every trader; returns the last diff."""
    deadline = time.monotonic() + within
    diff: list[str] = []
    while time.monotonic() < deadline:
        recorded = await keeper_positions(settings)
        diff = []
        for t in traders:
            diff += differences(t.account, recorded, await t.exchange_positions())
        if not diff:
            return diff
        await asyncio.sleep(0.3)
    return diff


class TopicTail:
    """Reads a topic from its current end (messages published after ``start``)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from aiokafka import AIOKafkaConsumer

        self.topic = topic
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self.seen: list[bytes] = []

    async def start(self) -> TopicTail:
        await self.consumer.start()
        tps = await topic_partitions(self.consumer, self.topic)
        self.consumer.assign(tps)
        await self.consumer.seek_to_end(*tps)
        for tp in tps:
            await self.consumer.position(tp)
        return self

    async def wait_for(self, predicate: Any, within: float) -> bytes:
        """The first message (value bytes) satisfying ``predicate`` within ``within`` s."""
        for value in self.seen:
            if predicate(value):
                return value
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            batch = await self.consumer.getmany(timeout_ms=int(min(left, 0.5) * 1000))
            for records in batch.values():
                for record in records:
                    self.seen.append(record.value)
                    if predicate(record.value):
                        return bytes(record.value)
        raise TimeoutError(f"no matching message on {self.topic} within {within}s")

    async def stop(self) -> None:
        await self.consumer.stop()
