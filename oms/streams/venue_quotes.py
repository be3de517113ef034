"""Where the worker's execution strategies get venues' order books (smart order routing):
each venue's book through its exchange, with the terms a decision needs (the venue's taker
fee from the settings, the instrument's lot and tick at that venue from its own catalog, how
long its rate budget holds the account's next order back)."""

from __future__ import annotations

from collections.abc import Mapping

from oms.algos.strategy import VenueQuote
from oms.exchange.errors import NotSupported
from oms.exchange.interface import BookSource, Exchange
from oms.exchange.router import UNKNOWN_VENUE_CODE, UnknownVenue, VenueRouter
from oms.schemas import OrderRecord
from oms.settings import VenueSettings


class VenueQuotes:
    """``quote(venue, order, depth)``: one venue's book and terms for ``order``'s instrument
    (the scheduler's :data:`~oms.algos.scheduler.QuoteSource`)."""

    def __init__(
        self, exchange: Exchange, venues: Mapping[str, VenueSettings], *, primary: str
    ) -> None:
        """``exchange``: the worker's (a :class:`VenueRouter` with several venues, else the
        one venue ``primary``); ``venues``: the configured venues (their taker fees)."""
        self._exchange = exchange
        self._venues = dict(venues)
        self._primary = primary

    def _venue(self, venue: str) -> Exchange:
        if isinstance(self._exchange, VenueRouter):
            return self._exchange.exchange(venue)
        if venue != self._primary:
            raise UnknownVenue(UNKNOWN_VENUE_CODE, f"no venue {venue!r}")
        return self._exchange

    async def quote(self, venue: str, order: OrderRecord, depth: int) -> VenueQuote:
        """The venue's book of the order's instrument (raises when it cannot be had)."""
        config = self._venues.get(venue)
        if config is None:
            raise UnknownVenue(UNKNOWN_VENUE_CODE, f"venue {venue!r} is not configured")
        exchange = self._venue(venue)
        if not isinstance(exchange, BookSource):
            raise NotSupported(UNKNOWN_VENUE_CODE, f"venue {venue!r} shows no order book")
        spec = exchange.instruments.get(order.instrument_name)
        if spec is None:
            raise NotSupported(
                UNKNOWN_VENUE_CODE, f"{order.instrument_name} is not listed at venue {venue!r}"
            )
        book = await exchange.order_book(order.account_id, order.instrument_name, depth)
        delay = await exchange.order_entry_delay(order.account_id)
        return VenueQuote(
            venue,
            book,
            taker_fee=config.taker_fee,
            lot=spec.min_trade_amount,
            tick=spec.tick_size,
            entry_delay_s=delay,
        )
