"""Per-account topics, for real: orders of two accounts go through the worker, the position
keeper and the notifier, and the fan-out process copies each account's events, positions and
notifications to that account's own topics, and only there, across a SIGKILL of the fan-out
(nothing lost; a repeat only of what was copied but not yet committed, at least once)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest

from oms.client import OrderClient
from oms.kafka.admin import delete_topics, list_topics
from oms.schemas import OrderEvent, OrderEventType, Topic
from oms.settings import Settings
from oms_dev.devstack.testing import TopicRecord, read_records, wait_for_records
from oms_dev.harness import OmsServices, isolated_settings, start_paper_stack, wait_http_ok

pytestmark = pytest.mark.kafka

ACCOUNTS = ["acct-a", "acct-b"]
KINDS = {
    "events": Topic.ORDER_EVENTS,
    "positions": Topic.POSITIONS,
    "notifications": Topic.NOTIFICATIONS,
}
# The field that identifies a record of each kind (what a reader drops repeats by).
IDS = {"events": "event_id", "positions": "record_id", "notifications": "notification_id"}


@pytest.fixture
async def stack(
    kafka_bootstrap: str, tmp_path: Path
) -> AsyncIterator[tuple[Settings, OmsServices]]:
    settings = isolated_settings(tmp_path, kafka_bootstrap, ACCOUNTS, partitions=3, label="acct")
    services, _ = await start_paper_stack(settings, tmp_path / "logs", lambda _: None)
    services.add_position_keeper()
    services.add_notifier()
    services.add_fanout()
    services.start_all()
    try:
        for port in (settings.positions.web_port, settings.notify.web_port):
            await wait_http_ok(f"http://127.0.0.1:{port}/health", within=120)
        yield settings, services
    except BaseException:
        print(services.diagnostics())
        raise
    finally:
        services.stop_all()
        prefix = settings.kafka.topic_prefix
        await delete_topics(kafka_bootstrap, await list_topics(kafka_bootstrap, prefix))


async def fill_orders(settings: Settings, account: str, count: int) -> list[str]:
    """``count`` market orders of ``account``, each waited for until filled."""
    async with OrderClient(account, settings=settings) as client:
        ids = [
            await client.submit_advanced_order(
                instrument_name="BTC-PERPETUAL", amount=10, direction="buy", order_type="market"
            )
            for _ in range(count)
        ]
        for order_id in ids:
            event = await client.wait_for_event(
                order_id, lambda e: e.event_type is OrderEventType.FILLED, timeout=60
            )
            assert event.account_id == account
    return ids


def ids_by_account(records: list[TopicRecord], id_field: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for record in records:
        body = orjson.loads(record.value or b"")
        out.setdefault(body["account_id"], []).append(body[id_field])
    return out


def holds_all(want: set[str], id_field: str, account: str) -> Callable[[list[TopicRecord]], bool]:
    """Whether records hold every id of ``want`` among ``account``'s."""

    def done(records: list[TopicRecord]) -> bool:
        return want <= set(ids_by_account(records, id_field).get(account, []))

    return done


async def assert_copied(settings: Settings, orders: dict[str, list[str]]) -> None:
    """Every account's topics hold every record of that account on the shared topics (and
    no other account's), events of every order included."""
    bootstrap = settings.kafka.bootstrap
    for kind, shared_topic in KINDS.items():
        shared = ids_by_account(
            await read_records(bootstrap, settings.topic(shared_topic)), IDS[kind]
        )
        for account in ACCOUNTS:
            want = set(shared.get(account, []))
            if kind != "notifications":  # the notifier's output is asserted non-empty below
                assert want, (kind, account)
            topic = settings.account_topic(account, kind)
            copies = await wait_for_records(
                bootstrap,
                topic,
                holds_all(want, IDS[kind], account),
                within_s=90,
            )
            got = ids_by_account(copies, IDS[kind])
            assert set(got) == {account}, f"{topic} holds records of {sorted(got)}"
            assert set(got[account]) == want
    events = ids_by_account(
        await read_records(bootstrap, settings.account_topic(ACCOUNTS[0], "events")), "order_id"
    )
    assert set(orders[ACCOUNTS[0]]) <= set(events[ACCOUNTS[0]])


async def test_each_account_sees_its_own_records_across_a_fanout_crash(
    stack: tuple[Settings, OmsServices],
) -> None:
    settings, services = stack
    bootstrap = settings.kafka.bootstrap
    orders = {a: await fill_orders(settings, a, 3) for a in ACCOUNTS}
    await assert_copied(settings, orders)

    # A crash: no chance to commit what it copied last. Orders go on meanwhile.
    services["fanout"].kill()
    for account in ACCOUNTS:
        orders[account] += await fill_orders(settings, account, 3)
    services["fanout"].start()
    await assert_copied(settings, orders)

    # Notifications of fills (console channel by default) reached both accounts' topics.
    for account in ACCOUNTS:
        notes = await read_records(bootstrap, settings.account_topic(account, "notifications"))
        assert notes, account
    # Per order, the events in the order they have on the shared topic, for a reader that
    # drops repeats by event id; repeats only as at-least-once allows (a run copied again).
    shared = [
        OrderEvent.from_bytes(r.value or b"")
        for r in await read_records(bootstrap, settings.topic(Topic.ORDER_EVENTS))
    ]
    for account in ACCOUNTS:
        copies = [
            OrderEvent.from_bytes(r.value or b"")
            for r in await read_records(bootstrap, settings.account_topic(account, "events"))
        ]
        for order_id in orders[account]:
            want = [e.event_id for e in shared if e.order_id == order_id]
            got = [e.event_id for e in copies if e.order_id == order_id]
            assert list(dict.fromkeys(got)) == want, order_id
