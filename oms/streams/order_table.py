"""The agents' view of the ``orders`` table: every write also reaches the indexes that follow it.

The worker's timers (lifecycle rules, algorithms, the unacknowledged sweep, the purge of ended
orders) never scan the table; each keeps an index of the orders it follows
(:class:`~oms.orders.indexes.OrderObserver`). Every agent writes orders through this one
wrapper, so an index learns of a change in the same call that makes it, and
:meth:`ObservedOrders.rebuild` fills them again from the table when partitions are assigned
(the table itself was restored from its changelog, which no agent wrote).
"""

from __future__ import annotations

from collections.abc import Callable, ItemsView, Iterator, MutableMapping, Sequence
from typing import Any

from oms.orders.indexes import OrderObserver
from oms.schemas import OrderRecord


class ObservedOrders(MutableMapping[str, OrderRecord]):
    """A dict-like order table (the Faust table in a worker) whose writes and deletions are
    told to ``observers``."""

    def __init__(self, table: MutableMapping[str, Any], observers: Sequence[OrderObserver]) -> None:
        self._table = table
        self._observers = tuple(observers)

    def __getitem__(self, order_id: str) -> OrderRecord:
        order: OrderRecord = self._table[order_id]
        return order

    def get(self, order_id: str, default: Any = None) -> Any:
        return self._table.get(order_id, default)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._table

    def __setitem__(self, order_id: str, order: OrderRecord) -> None:
        self._table[order_id] = order
        for observer in self._observers:
            observer.note(order_id, order)

    def __delitem__(self, order_id: str) -> None:
        del self._table[order_id]
        for observer in self._observers:
            observer.note(order_id, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def items(self) -> ItemsView[str, OrderRecord]:
        items: ItemsView[str, OrderRecord] = self._table.items()
        return items

    def rebuild(self, owns: Callable[[str], bool]) -> int:
        """Empty every index and fill it again with the owned orders of the table; returns
        how many orders that was."""
        for observer in self._observers:
            observer.clear()
        owned = 0
        for order_id, order in list(self._table.items()):
            if order is None or not owns(order_id):
                continue
            owned += 1
            for observer in self._observers:
                observer.note(order_id, order)
        return owned
