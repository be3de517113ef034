"""The edge without Kafka: what it forwards, refuses and dead-letters, in both auth modes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest

from oms.auth.signing import sign_headers
from oms.auth.verify import Authenticator
from oms.kafka.partitioning import partition_of
from oms.schemas import (
    DeadLetter,
    OrderEvent,
    OrderEventType,
    OrderRequest,
    OrderStatus,
    ReasonCode,
    derive_order_id,
    now_ms,
)
from oms.schemas.commands import CommandOrigin, OrderCommand, OriginKind
from oms.secrets import SigningKeys, write_signing_keys
from oms.settings import RiskSettings
from oms.streams.edge import CommandRoute, EdgeContext, handle_external

SUBMIT = orjson.dumps(
    {
        "request_id": "r-1",
        "account_id": "desk",
        "instrument_name": "BTC-PERPETUAL",
        "direction": "buy",
        "amount": 10,
        "price": 50000,
    }
)


class Edge:
    """An edge context that records what it forwards, emits and dead-letters."""

    def __init__(self, authenticator: Authenticator | None) -> None:
        self.forwarded: list[OrderCommand] = []
        self.events: list[OrderEvent] = []
        self.letters: list[DeadLetter] = []

        async def forward(command: OrderCommand, *, partition: int, replayed: bool) -> None:
            self.forwarded.append(command)

        async def emit(event: OrderEvent) -> None:
            self.events.append(event)

        async def dead_letter(letter: DeadLetter) -> None:
            self.letters.append(letter)

        self.ctx = EdgeContext(
            emit=emit,
            dead_letter=dead_letter,
            source_topic="oms.order-requests",
            authenticator=authenticator,
            forward=forward,
        )

    async def handle(
        self, raw: bytes | None, headers: list[tuple[str, bytes]] | None = None, offset: int = 7
    ) -> None:
        await handle_external(
            self.ctx,
            raw,
            headers=headers,
            key=None,
            partition=3,
            offset=offset,
            received_ms=now_ms(),
        )


@pytest.fixture
def keys(tmp_path: Path) -> SigningKeys:
    path = tmp_path / "secrets.json"
    write_signing_keys(path, {"desk": {"desk-k1": "desk-signing-key"}})
    return SigningKeys(path)


async def test_signed_mode_forwards_a_signed_request_with_its_origin(keys: SigningKeys) -> None:
    edge = Edge(Authenticator(RiskSettings(), keys))
    key = keys.for_signing("desk")
    assert key is not None
    await edge.handle(SUBMIT, sign_headers(SUBMIT, key, nonce="nonce-123"))
    [command] = edge.forwarded
    assert command.key == derive_order_id("desk", "r-1")
    assert command.origin.kind is OriginKind.EXTERNAL
    assert (command.origin.key_id, command.origin.nonce) == ("desk-k1", "nonce-123")
    assert command.origin.source == "3:7"
    assert edge.events == [] and edge.letters == []


async def test_signed_mode_refuses_an_unsigned_request_without_touching_the_order(
    keys: SigningKeys,
) -> None:
    edge = Edge(Authenticator(RiskSettings(), keys))
    await edge.handle(SUBMIT)
    assert edge.forwarded == []
    [event] = edge.events
    assert event.event_type is OrderEventType.COMMAND_REJECTED
    assert event.reason_code is ReasonCode.SIGNATURE_MISSING
    assert event.order is None and event.status is None
    assert event.details["stage"] == "authentication"


async def test_trusted_mode_forwards_unsigned_requests() -> None:
    edge = Edge(authenticator=None)
    await edge.handle(SUBMIT)
    [command] = edge.forwarded
    assert command.origin.nonce is None and command.origin.key_id is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, ReasonCode.TOMBSTONE),
        (b"", ReasonCode.EMPTY_PAYLOAD),
        (b"\xff\x00garbage", ReasonCode.MALFORMED_JSON),
        (b"[1, 2]", ReasonCode.SCHEMA_INVALID),
    ],
)
async def test_unreadable_records_are_dead_letters(raw: bytes | None, reason: ReasonCode) -> None:
    edge = Edge(authenticator=None)
    await edge.handle(raw)
    [letter] = edge.letters
    assert letter.reason_code is reason
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (
        "oms.order-requests",
        3,
        7,
    )
    assert edge.forwarded == [] and edge.events == []


async def test_an_unreadable_cancel_fails_as_a_command_and_leaves_the_order_alone() -> None:
    edge = Edge(authenticator=None)
    bad_cancel = orjson.dumps(
        {"command": "cancel", "request_id": "c-1", "account_id": "desk", "order_id": "o-x", "x": 1}
    )
    await edge.handle(bad_cancel)
    [event] = edge.events
    assert event.order_id == "o-x"
    assert event.event_type is OrderEventType.COMMAND_REJECTED and event.status is None
    assert event.reason_code is ReasonCode.SCHEMA_INVALID
    assert len(edge.letters) == 1


async def test_a_submit_naming_another_order_is_refused_on_its_derived_id() -> None:
    edge = Edge(authenticator=None)
    claims = orjson.dumps({**orjson.loads(SUBMIT), "order_id": "o-00000000000000000000abcd"})
    await edge.handle(claims)
    [event] = edge.events
    assert event.order_id == derive_order_id("desk", "r-1")
    assert event.event_type is OrderEventType.REJECTED and event.status is OrderStatus.REJECTED
    assert event.reason_code is ReasonCode.ORDER_ID_MISMATCH


class TestCommandRoute:
    """Commands whose request sits on their own partition go straight to intake."""

    def route(
        self,
        *,
        owned: frozenset[int],
        ready: Callable[[], bool] = lambda: True,
        confirm: bool = True,
    ) -> tuple[CommandRoute, list[tuple[str, OrderCommand, bool]]]:
        """A route whose publishes land at offsets 100, 101... of their partition (confirmed
        at once, or never with ``confirm=False``)."""
        seen: list[tuple[str, OrderCommand, bool]] = []
        offsets = iter(range(100, 200))

        async def publish(command: OrderCommand) -> asyncio.Future[SimpleNamespace]:
            seen.append(("published", command, False))
            delivery: asyncio.Future[SimpleNamespace] = asyncio.get_running_loop().create_future()
            if confirm:
                delivery.set_result(SimpleNamespace(offset=next(offsets)))
            return delivery

        async def apply(command: OrderCommand, replayed: bool) -> None:
            seen.append(("direct", command, replayed))

        route = CommandRoute(
            publish=publish,
            apply=apply,
            partition_of=lambda key: partition_of(key, 8),
            direct_partitions=lambda: owned,
            ready=ready,
            lock=asyncio.Lock(),
        )
        return route, seen

    def command(self) -> OrderCommand:
        request = OrderRequest.model_validate_json(SUBMIT)
        return OrderCommand(
            origin=CommandOrigin(kind=OriginKind.EXTERNAL, source="0:1", received_at=now_ms()),
            request=request,
        )

    async def test_on_its_own_owned_partition_it_skips_the_command_topic(self) -> None:
        command = self.command()
        home = partition_of(command.key, 8)
        route, seen = self.route(owned=frozenset({home}))
        await route(command, partition=home, replayed=True)
        assert seen == [("direct", command, True)]
        assert (route.direct, route.published) == (1, 0)

    async def test_anything_else_goes_through_the_command_topic(self) -> None:
        command = self.command()
        home = partition_of(command.key, 8)
        other = (home + 1) % 8
        cases = [
            (frozenset({home, other}), other, True),  # read from another partition
            (frozenset({other}), home, True),  # its partition of order-commands is not ours
            (frozenset({home}), home, False),  # intake not ready (book or market loading)
        ]
        for owned, partition, ready in cases:
            route, seen = self.route(owned=owned, ready=lambda ready=ready: ready)
            await route(command, partition=partition, replayed=False)
            assert seen == [("published", command, False)]

    async def test_a_command_never_overtakes_one_still_on_the_command_topic(self) -> None:
        """Published while intake was not ready (its submit, say), a command is on the topic;
        the next one for that partition follows it there until intake has applied it."""
        command = self.command()
        home = partition_of(command.key, 8)
        ready = [False]
        route, log = self.route(owned=frozenset({home}), ready=lambda: ready[0])
        await route(command, partition=home, replayed=False)
        ready[0] = True
        await route(command, partition=home, replayed=False)
        await asyncio.sleep(0)  # the deliveries' callbacks
        assert [how for how, _, _ in log] == ["published", "published"]
        assert (route.direct, route.published, route.behind) == (0, 2, 1)
        route.applied(home, 100)
        await route(command, partition=home, replayed=False)
        await asyncio.sleep(0)
        assert [how for how, _, _ in log][2] == "published"  # 101 is still ahead of intake
        route.applied(home, 101)
        route.applied(home + 1, 500)  # another partition's progress changes nothing here
        route.applied(home, 102)
        await route(command, partition=home, replayed=False)
        assert [how for how, _, _ in log][3] == "direct"

    async def test_what_a_previous_owner_left_on_the_topic_is_applied_first(self) -> None:
        command = self.command()
        home = partition_of(command.key, 8)
        route, log = self.route(owned=frozenset({home}))
        route.assigned({home: 7, home + 1: 0})  # offsets 0-6 were there at the takeover
        await route(command, partition=home, replayed=True)  # -> offset 100
        await asyncio.sleep(0)
        route.applied(home, 6)
        await route(command, partition=home, replayed=True)  # 100 is still ahead -> 101
        await asyncio.sleep(0)
        route.applied(home, 100)
        route.applied(home, 101)
        await route(command, partition=home, replayed=True)
        assert [how for how, _, _ in log] == ["published", "published", "direct"]

    async def test_an_unconfirmed_publish_holds_the_partition(self) -> None:
        command = self.command()
        home = partition_of(command.key, 8)
        route, log = self.route(owned=frozenset({home}), confirm=False)
        route.assigned({home: 0})
        other = (home + 1) % 8
        await route(command, partition=other, replayed=False)  # read from another partition
        await route(command, partition=home, replayed=False)
        assert [how for how, _, _ in log] == ["published", "published"]
