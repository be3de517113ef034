"""Where a trader's request is authenticated and routed: the stateless edge.

Traders publish on ``order-requests`` with any key (or none) and any partitioner. Before
anything reads or writes order state, the edge, one record at a time:

1. parses the value (a tombstone, empty or unreadable value goes to the dead letters);
2. authenticates it: the signature headers over the exact value bytes, the key, freshness
   (:mod:`oms.auth.verify`); nothing is authenticated in ``trusted`` mode;
3. derives the order id of a submit that has none (and refuses one that is not derived);
4. forwards it as an :class:`~oms.schemas.commands.OrderCommand` to ``order-commands``,
   keyed by order id, so it reaches the worker that owns the order.

The edge holds no state, so any worker may read any partition of ``order-requests``.
Refusals are events on ``order-events`` (keyed by the order id they concern), never state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

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


@dataclass(kw_only=True)
class EdgeContext(Outputs):
    """The edge's outputs: events and dead letters, and the command topic."""

    # None: trusted mode (the request topic is protected by Kafka ACLs instead).
    authenticator: Authenticator | None
    forward: Callable[[OrderCommand], Awaitable[None]]


async def handle_external(
    ctx: EdgeContext,
    raw: bytes | None,
    *,
    headers: Headers | None,
    key: bytes | None,
    partition: int,
    offset: int,
    received_ms: int,
) -> None:
    """Process one record of ``order-requests``.

    ``received_ms`` is when the record reached the broker (its log-append time) and is what
    freshness is judged against.
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
    await ctx.forward(OrderCommand(origin=origin, request=parsed))


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
