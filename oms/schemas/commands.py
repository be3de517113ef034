"""Commands on the internal ``order-commands`` topic: a request and where it came from.

Traders publish :class:`~oms.schemas.orders.OrderRequest` on ``order-requests`` with any key
and any partitioner. The edge authenticates each one and forwards it here, keyed by its order
id, so every command about an order reaches the one worker that owns the order's state. The
OMS's own commands (TWAP slices, chase re-quotes, lifecycle cancels...) are written here
directly: they never pass the external authentication, and only the OMS may write this topic
(Kafka ACL, see the README).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from oms.schemas.base import Record, now_ms
from oms.schemas.orders import OrderRequest


class OriginKind(StrEnum):
    EXTERNAL = "external"  # a trader's request, authenticated by the edge
    INTERNAL = "internal"  # the OMS's own command


class InternalComponent(StrEnum):
    """Which part of the OMS issued an internal command."""

    ALGO = "algo"  # execution algorithms: TWAP slices and their cancels, chase re-quotes
    LIFECYCLE = "lifecycle"  # auto-cancel, partial-fill cancels


class CommandOrigin(Record):
    """Who asked for a command, as established by the edge (external) or the OMS itself."""

    kind: OriginKind
    component: InternalComponent | None = None
    # External, signed: the signing key, its single-use nonce and the signer's clock (ms).
    key_id: str | None = None
    nonce: str | None = None
    signed_at: int | None = None
    # External: "<partition>:<offset>" of the request on order-requests. The same request
    # forwarded twice (the edge crashed after forwarding, before committing) carries the
    # same source, so intake tells such a redelivery from a replay of a captured request.
    source: str | None = None
    received_at: int = Field(default_factory=now_ms)

    @property
    def internal(self) -> bool:
        return self.kind is OriginKind.INTERNAL


class OrderCommand(Record):
    """One message of ``order-commands`` (key: the request's order id)."""

    origin: CommandOrigin
    request: OrderRequest

    @property
    def key(self) -> str:
        return self.request.key


def internal_command(request: OrderRequest, component: InternalComponent) -> OrderCommand:
    """The OMS's own command (never authenticated as a trader's request)."""
    return OrderCommand(
        origin=CommandOrigin(kind=OriginKind.INTERNAL, component=component), request=request
    )
