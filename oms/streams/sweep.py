"""The worker's sweeps: commands that may have died with a worker are taken up again.

Three kinds of order are followed, each by an :class:`OrderSweep`:

* **Unacknowledged orders** (pending or submitted, no exchange answer): looked up by label,
  and sent only if the exchange never had them (:func:`is_unacknowledged`).
* **Unanswered cancels**: intake accepted a cancel (it is recorded on the order as
  ``cancel_request_id``) and the exchange has not answered it. A worker killed between the
  two leaves the order live at the exchange with the client's cancel already counted as
  seen, so a replay of the request would be dropped as a duplicate; the sweep sends the
  cancel again, by label (:func:`has_unanswered_cancel`, :func:`cancel_again`).
* **Unanswered edits**: the same for an accepted amend (``amend_pending``, with its absolute
  amount and price), once the order is live (:func:`has_unanswered_amend`,
  :func:`amend_again`).

What bounds them: each due order is handed to one command whose every outcome is a report
that ends what the sweep follows (the order acknowledged, cancelled, rejected, or the command
answered, which clears what intake recorded). An order is swept again only when a pass got no
answer at all (the exchange unreachable or refusing us), so it then costs one command per
``recovery_check_interval_s`` and never a second order at the exchange: submits look the
label up first, cancels act by label, edits carry absolute values. Acknowledged orders the
exchange lost are not the sweeps': :mod:`oms.lifecycle.reconcile` resolves them.

They never scan the table: every write of an order is noted (:meth:`OrderSweep.note`), and an
order still in the followed condition ``submit_timeout_s`` after its last change is due.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from oms.orders.indexes import DeadlineIndex
from oms.schemas import (
    LIVE_STATUSES,
    CommandType,
    OrderRecord,
    OrderRequest,
    OrderStatus,
    now_ms,
)

log = structlog.get_logger(__name__)

UNACKNOWLEDGED = frozenset({OrderStatus.PENDING, OrderStatus.SUBMITTED})
# Statuses in which the exchange may or may not have the order yet: a cancel of such an
# order looks it up by label first (and reports it cancelled if it never got there), so the
# sweep never sends an order the client cancelled.
_MAYBE_SENT = frozenset({OrderStatus.PENDING, OrderStatus.SUBMITTED, OrderStatus.QUEUED})


class OrderSweep:
    """The orders of the owned partitions that ``follows`` holds for, by when ``act`` is due
    on them: ``timeout_s`` after their last change, then every ``interval_s`` until a write
    ends the condition."""

    def __init__(
        self,
        name: str,
        *,
        follows: Callable[[OrderRecord], bool],
        act: Callable[[OrderRecord], Awaitable[object]],
        timeout_s: float,
        interval_s: float,
        order_of: Callable[[str], OrderRecord | None],
        owns: Callable[[str], bool],
        is_inflight: Callable[[str], bool],
    ) -> None:
        self.name = name
        self._follows = follows
        self._act = act
        self._timeout_ms = int(timeout_s * 1000)
        self._interval_ms = int(interval_s * 1000)
        self._order_of = order_of
        self._owns = owns
        self._is_inflight = is_inflight
        self._due: DeadlineIndex[str] = DeadlineIndex()
        self.acted = 0  # orders acted on since start (in /stats)

    def __len__(self) -> int:
        return len(self._due)

    def note(self, order_id: str, order: OrderRecord | None) -> None:
        """An order was written (None: it left the table)."""
        if order is not None and self._follows(order):
            self._due.schedule(order_id, order.updated_at + self._timeout_ms)
        else:
            self._due.discard(order_id)

    def clear(self) -> None:
        """Forget every order (the worker notes the owned ones again after a rebalance)."""
        self._due.clear()

    async def run_once(self, now: int | None = None) -> int:
        """Act on the orders that are due; returns how many."""
        now = now if now is not None else now_ms()
        swept = 0
        for order_id in self._due.pop_due(now):
            order = self._order_of(order_id)
            if order is None or not self._follows(order) or not self._owns(order_id):
                continue  # a write (or the rebuild) follows it again if need be
            if order.updated_at + self._timeout_ms > now:
                self.note(order_id, order)
                continue
            # Looked at again next round if no answer has changed it by then.
            self._due.schedule(order_id, now + self._interval_ms)
            if self._is_inflight(order_id):
                continue
            swept += 1
            self.acted += 1
            log.info(f"worker.{self.name}", order_id=order_id, status=order.status.value)
            await self._act(order)
        return swept


def is_unacknowledged(order: OrderRecord) -> bool:
    """Sent (or about to be) and not answered, with no cancel of its own pending."""
    return order.status in UNACKNOWLEDGED and order.cancel_request_id is None


def has_unanswered_cancel(order: OrderRecord) -> bool:
    """A cancel was accepted and the order has not ended."""
    return order.cancel_request_id is not None and not order.status.is_terminal


def has_unanswered_amend(order: OrderRecord) -> bool:
    """An edit was accepted, and the order is live at the exchange with no cancel pending
    (an order on its way there is acknowledged first, by the other sweep if need be)."""
    return (
        order.amend_pending is not None
        and order.cancel_request_id is None
        and order.status in LIVE_STATUSES
    )


def amend_again(
    amend: Callable[[OrderRecord, OrderRequest], Awaitable[object]],
) -> Callable[[OrderRecord], Awaitable[None]]:
    """What the sweep of unanswered edits does with a due order: send the edit again (its
    amount and price are absolute)."""

    async def act(order: OrderRecord) -> None:
        pending = order.amend_pending
        assert pending is not None
        await amend(
            order,
            OrderRequest(
                command=CommandType.AMEND,
                request_id=pending.request_id,
                account_id=order.account_id,
                order_id=order.order_id,
                amount=pending.amount,
                price=pending.price,
            ),
        )

    return act


def cancel_again(
    cancel: Callable[[OrderRecord, str], Awaitable[object]],
    cancel_held: Callable[[OrderRecord, str], Awaitable[object]],
) -> Callable[[OrderRecord], Awaitable[None]]:
    """What the sweep of unanswered cancels does with a due order: send its cancel again,
    by label; if the order may never have reached the exchange, look it up first
    (``cancel_held``: cancelled there if found, else reported cancelled here)."""

    async def act(order: OrderRecord) -> None:
        assert order.cancel_request_id is not None
        if order.status in _MAYBE_SENT:
            await cancel_held(order, order.cancel_request_id)
        else:
            await cancel(order, order.cancel_request_id)

    return act
