"""An order looked up at the exchange by its label: how the executor tells, before any
resend, whether a command reached the exchange, and how the reconciliation tells what
happened to an order while nobody was watching."""

from __future__ import annotations

import asyncio

import structlog

from oms.backoff import Backoff
from oms.exchange.errors import ExchangeError
from oms.exchange.interface import Exchange
from oms.schemas import ExecutionReport, OrderRecord
from oms.settings import LifecycleSettings

log = structlog.get_logger(__name__)

# Filled amounts are floats on the wire (options): compare with a tolerance.
_EPSILON = 1e-9
# Label lookups wait out a disconnect: their waits grow to this, whatever retry_max_delay says.
_LOOKUP_MAX_DELAY_S = 10.0


class LabelLookup:
    """An order looked up at the exchange by its label (our order id), with the trades of
    any fill we have not recorded: how the executor and the reconciliation tell whether an
    order reached the exchange and what happened to it there."""

    def __init__(self, exchange: Exchange, settings: LifecycleSettings) -> None:
        self._exchange = exchange
        # Equal jitter: the waits keep growing while the exchange is unreachable.
        self._backoff = Backoff(settings.retry_delay, _LOOKUP_MAX_DELAY_S, jitter="equal")
        self.stats: dict[str, int] = {"fills_recovered": 0}

    async def find(self, order: OrderRecord) -> ExecutionReport | None:
        """The exchange's order with our label (a reconcile report, with any fills we
        missed), waiting out disconnects; None if it has none."""
        delays = self._backoff.delays()
        for _attempt in range(20):
            try:
                found = await self._exchange.find(order)
                if found is not None:
                    found = await self.with_missed_fills(order, found)
                return found
            except ExchangeError as exc:
                if not exc.retryable:
                    raise
                await asyncio.sleep(next(delays))
        raise TimeoutError(f"label lookup of {order.order_id} kept failing")

    async def with_missed_fills(
        self, order: OrderRecord, report: ExecutionReport
    ) -> ExecutionReport:
        """``report`` with the trades of its exchange order attached when the exchange has
        more filled than we recorded: every trade keeps its exchange trade id, so the
        order-state agent and the position keeper each count exactly the ones they missed."""
        exchange_id = report.exchange_order_id
        if exchange_id is None or report.filled_amount <= order.filled_amount + _EPSILON:
            return report
        fills = await self._exchange.fills(order, exchange_id)
        new = [f for f in fills if f.trade_id not in order.trade_ids]
        self.stats["fills_recovered"] += len(new)
        log.info(
            "executor.fills_recovered",
            order_id=order.order_id,
            exchange_order_id=exchange_id,
            recorded_filled=order.filled_amount,
            exchange_filled=report.filled_amount,
            trades=len(fills),
            new_trades=len(new),
        )
        known = {f.trade_id for f in report.fills}
        merged = [*report.fills, *(f for f in fills if f.trade_id not in known)]
        return report.model_copy(
            update={"fills": merged, "report_id": f"{report.report_id}:trades:{len(merged)}"}
        )
