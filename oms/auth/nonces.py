"""Single-use nonces, remembered per order id in a changelog-backed table.

Why per order id: the edge routes every command to its order's partition of
``order-commands``, and the signature covers the body, order id included. A replay of a
captured request is byte-identical, so it reaches the same partition and is checked by
whichever worker owns it *with that partition's table*, restored from its changelog after a
crash or a rebalance. The check is therefore exact for replays, whatever the number of
workers, without any cross-partition coordination.

Each entry remembers where the nonce was first accepted (the request's position on
``order-requests``): the same request forwarded again by the edge (at-least-once after a
crash) is recognised as itself and not mistaken for a replay, which is a new record at a new
position.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class NonceCheck:
    """Outcome of looking a nonce up: ``replay`` is a new message reusing a seen nonce;
    ``redelivery`` is the very message that was accepted before (same position)."""

    replay: bool = False
    redelivery: bool = False


class NonceStore:
    """Nonces per order id over a dict-like table ``{order_id: [[nonce, position], ...]}``
    (a Faust table in the worker, so it is changelog-backed; a dict in unit tests)."""

    def __init__(self, table: MutableMapping[str, Any], kept_per_order: int = 64) -> None:
        self._table = table
        self._kept = kept_per_order

    def check(self, order_id: str, nonce: str, position: str | None) -> NonceCheck:
        """Has this nonce been seen for this order, and was it at this very position?"""
        for seen_nonce, seen_position in self._table.get(order_id) or ():
            if seen_nonce == nonce:
                if position is not None and seen_position == position:
                    return NonceCheck(redelivery=True)
                return NonceCheck(replay=True)
        return NonceCheck()

    def remember(self, order_id: str, nonce: str, position: str | None) -> None:
        """Record an accepted nonce (the oldest ones beyond the per-order cap are dropped;
        those requests are long stale by then)."""
        entries = list(self._table.get(order_id) or ())
        entries.append([nonce, position])
        self._table[order_id] = entries[-self._kept :]

    def forget(self, order_id: str) -> None:
        """Drop an order's nonces (it left the table: a request signed for it is older than
        the freshness window by now, and refused as stale anyway)."""
        if order_id in self._table:
            del self._table[order_id]
