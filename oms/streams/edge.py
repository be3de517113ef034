"""Where a trader's request is authenticated and routed: the stateless edge.

Traders publish on ``order-requests`` with any key (or none) and any partitioner. Before
anything reads or writes order state, the edge, one record at a time:

1. parses the value (a tombstone, empty or unreadable value goes to the dead letters);
2. authenticates it: the signature headers over the exact value bytes, the key, freshness
   (:mod:`oms.auth.verify`); nothing is authenticated in ``trusted`` mode;
3. derives the order id of a submit that has none (and refuses one that is not derived);
4. forwards it as an :class:`~oms.schemas.commands.OrderCommand` to ``order-commands``,
   keyed by order id, so it reaches the worker that owns the order.

A request that already sits on its order's partition (every producer using Kafka's default
partitioner with the order id as key, the SDK among them) skips the second topic: when this
worker owns that partition of ``order-commands`` too, :class:`CommandRoute` hands the command
straight to intake, in the request's own stream event, so its table writes go to the same
changelog partition the command topic would have used. It saves a produce, a fetch and a
decode per order, and one Kafka round trip of latency.

Both ways keep the order of an order's commands: a command goes straight to intake only when
every command this worker routed through that partition of ``order-commands``, and every
record on it when the worker took it over, has been applied. Otherwise a cancel read just
after a rebalance could overtake its own submit, still on the topic, and be refused as
unknown (the order then rests with nobody cancelling it).

The edge holds no state, so any worker may read any partition of ``order-requests``.
Refusals are events on ``order-events`` (keyed by the order id they concern), never state.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from oms.auth.signing import Headers
from oms.auth.verify import Authenticator
from oms.orders.validation import ParseFailure, parse_request
from oms.schemas import (
    CommandType,
    OrderEvent,
    OrderEventType,
    OrderRequest,
    OrderStatus,
    now_ms,
)
from oms.schemas.commands import CommandOrigin, OrderCommand, OriginKind
from oms.schemas.rejection import Rejection
from oms.streams.context import Outputs


class Forward(Protocol):
    """Where an authenticated command goes, given the request record it came from."""

    async def __call__(self, command: OrderCommand, *, partition: int, replayed: bool) -> None:
        """Route ``command``, read from ``partition`` of ``order-requests``."""


class CommandRoute:
    """Forwards the edge's commands: straight into intake when the request was read from the
    partition its order id maps to, this worker owns that partition of ``order-commands``,
    intake is ready and has applied everything routed through that partition before; through
    ``order-commands`` otherwise.

    ``publish`` returns the delivery of the record (its offset). ``lock`` is the one intake
    also holds around each command, so commands still reach the order table one at a time
    whichever way they came. The worker tells the route which partitions of
    ``order-commands`` it took over and where they ended then (:meth:`assigned`), and every
    record intake applied from them (:meth:`applied`).
    """

    def __init__(
        self,
        *,
        publish: Callable[[OrderCommand], Awaitable[Awaitable[Any]]],
        apply: Callable[[OrderCommand, bool], Awaitable[None]],
        partition_of: Callable[[str], int],
        direct_partitions: Callable[[], frozenset[int]],
        ready: Callable[[], bool],
        lock: asyncio.Lock,
    ) -> None:
        self._publish = publish
        self._apply = apply
        self._partition_of = partition_of
        self._direct_partitions = direct_partitions
        self._ready = ready
        self._lock = lock
        # Per partition of order-commands: the offset intake must have applied up to before
        # a command may skip the topic, the next offset it has not applied, and this route's
        # records on their way there (offset not known yet).
        self._must_reach: dict[int, int] = {}
        self._applied: dict[int, int] = {}
        self._unconfirmed: Counter[int] = Counter()
        self.direct = 0
        self.published = 0
        self.behind = 0  # published because earlier commands were still on the topic

    def assigned(self, ends: Mapping[int, int]) -> None:
        """Partitions of ``order-commands`` taken over, with their end offsets then: what a
        previous owner left on them is applied (through the topic) before anything skips
        it."""
        for partition, end in ends.items():
            self._hold(partition, end)

    def applied(self, partition: int, offset: int) -> None:
        """Intake applied the record at ``offset`` of ``partition`` of ``order-commands``."""
        if offset >= self._applied.get(partition, 0):
            self._applied[partition] = offset + 1

    def _caught_up(self, partition: int) -> bool:
        return (
            self._unconfirmed[partition] == 0
            and self._applied.get(partition, 0) >= self._must_reach.get(partition, 0)
        )

    async def __call__(self, command: OrderCommand, *, partition: int, replayed: bool) -> None:
        target = self._partition_of(command.key)
        if target == partition and partition in self._direct_partitions() and self._ready():
            async with self._lock:
                if self._caught_up(partition):
                    self.direct += 1
                    await self._apply(command, replayed)
                    return
            self.behind += 1
        self.published += 1
        delivery = asyncio.ensure_future(await self._publish(command))
        self._unconfirmed[target] += 1
        delivery.add_done_callback(lambda done: self._delivered(target, done))

    def _delivered(self, partition: int, delivery: asyncio.Future[Any]) -> None:
        self._unconfirmed[partition] -= 1
        if delivery.cancelled() or delivery.exception() is not None:
            return  # never on the topic: nothing to wait for
        self._hold(partition, int(delivery.result().offset) + 1)

    def _hold(self, partition: int, until: int) -> None:
        """Nothing skips ``partition`` before intake has applied its records below ``until``."""
        self._must_reach[partition] = max(self._must_reach.get(partition, 0), until)


@dataclass(kw_only=True)
class EdgeContext(Outputs):
    """The edge's outputs: events and dead letters, and where commands go."""

    # None: trusted mode (the request topic is protected by Kafka ACLs instead).
    authenticator: Authenticator | None
    forward: Forward


async def handle_external(
    ctx: EdgeContext,
    raw: bytes | None,
    *,
    headers: Headers | None,
    key: bytes | None,
    partition: int,
    offset: int,
    received_ms: int,
    replayed: bool = False,
) -> None:
    """Process one record of ``order-requests``.

    ``received_ms`` is when the record reached the broker (its log-append time) and is what
    freshness is judged against. ``replayed``: the record was on the topic when this worker
    took the partition over (a command routed straight to intake is then executed only after
    a label lookup, as intake does for its own replays).
    """
    parsed = parse_request(raw)
    if isinstance(parsed, ParseFailure):
        await _refuse_unparsable(ctx, raw, parsed, key=key, partition=partition, offset=offset)
        return
    ctx.count(f"requests_{parsed.command.value}")
    origin = CommandOrigin(
        kind=OriginKind.EXTERNAL, source=f"{partition}:{offset}", received_at=received_ms
    )
    if ctx.authenticator is not None:
        assert raw is not None  # parse_request accepted it
        verdict = ctx.authenticator.authenticate(
            parsed.account_id, raw, headers, reference_ms=received_ms
        )
        if isinstance(verdict, Rejection):
            ctx.count("unauthenticated")
            await ctx.emit(unauthenticated(parsed, verdict, source=origin.source))
            return
        origin.key_id, origin.nonce, origin.signed_at = (
            verdict.key_id,
            verdict.nonce,
            verdict.signed_at,
        )
    ctx.count("forwarded")
    await ctx.forward(
        OrderCommand(origin=origin, request=parsed), partition=partition, replayed=replayed
    )


async def _refuse_unparsable(
    ctx: EdgeContext,
    raw: bytes | None,
    failure: ParseFailure,
    *,
    key: bytes | None,
    partition: int,
    offset: int,
) -> None:
    """Dead-letter the record; tell its sender, when it can be told who that is."""
    await ctx.reject_raw(
        raw, failure.reason_code, failure.message, key=key, partition=partition, offset=offset
    )
    ident = failure.identity
    if ident is None:
        return
    submit = ident["command"] == CommandType.SUBMIT.value
    await ctx.emit(
        OrderEvent(
            event_id=f"{ident['order_id']}:invalid:{ident['request_id']}:{partition}:{offset}",
            # A submit that cannot be read never became an order: it is rejected. A cancel or
            # amend that cannot be read leaves its order as it is: only the command fails.
            event_type=OrderEventType.REJECTED if submit else OrderEventType.COMMAND_REJECTED,
            order_id=ident["order_id"],
            account_id=ident["account_id"],
            request_id=ident["request_id"],
            status=OrderStatus.REJECTED if submit else None,
            reason_code=failure.reason_code,
            message=failure.message,
            details={"command": ident["command"], "stage": "parsing"},
        )
    )


def unauthenticated(
    request: OrderRequest, rejection: Rejection, *, source: str | None
) -> OrderEvent:
    """A request refused by authentication: nothing was read or written for its order, so
    the event carries no order state (a forged request must not touch a real order). Its id
    names the refused record (``source``), so each replay is an event of its own."""
    return OrderEvent(
        event_id=f"{request.key}:unauthenticated:{request.request_id}:{source}",
        event_type=OrderEventType.COMMAND_REJECTED,
        order_id=request.key,
        account_id=request.account_id,
        request_id=request.request_id,
        reason_code=rejection.reason_code,
        message=rejection.message,
        timestamp=now_ms(),
        details={"command": request.command.value, "stage": "authentication"},
    )
