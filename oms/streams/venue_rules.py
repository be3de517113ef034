"""Which venue an order may name, and whose instruments it is checked against: the rules
intake and release take from the worker's venues (:class:`~oms.exchange.router.VenueRouter`
satisfies :class:`VenueRules`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from oms.schemas import DEFAULT_VENUE, InstrumentSpec, OrderRequest, ReasonCode
from oms.schemas.rejection import Rejection


class VenueRules(Protocol):
    """What intake checks an order's venue against (the worker's venue router)."""

    def knows(self, venue: str) -> bool:
        """Whether ``venue`` is configured."""
        ...

    def trades_at(self, venue: str, account_id: str) -> bool:
        """Whether ``account_id`` may trade at ``venue``."""
        ...

    def instrument(self, venue: str, instrument_name: str | None) -> InstrumentSpec | None:
        """The instrument's specification at ``venue`` (its own tick size and minimum)."""
        ...


def spec_at(
    venues: VenueRules | None,
    instrument: Callable[[str | None], Any],
    venue: str,
    instrument_name: str | None,
) -> Any:
    """The instrument's specification at the order's venue: that venue's own catalog when
    several venues are configured, else ``instrument`` (the one venue's)."""
    if venues is None:
        return instrument(instrument_name)
    return venues.instrument(venue, instrument_name)


def routed_venues_refusal(
    venues: VenueRules | None,
    instrument: Callable[[str | None], Any],
    request: OrderRequest,
    names: tuple[str, ...],
) -> Rejection | None:
    """Why a routed order's venues (``names``) are refused: one is not configured, not the
    account's, or does not list the instrument; None if every one can take its children."""
    for name in names:
        probe = request.model_copy(update={"venue": name})
        rejection = venue_refusal(venues, probe)
        if rejection is not None:
            return Rejection(rejection.reason_code, f"sor_venues: {rejection.message}")
        if spec_at(venues, instrument, name, request.instrument_name) is None:
            return Rejection(
                ReasonCode.UNKNOWN_INSTRUMENT,
                f"sor_venues: {request.instrument_name!r} is not listed at venue {name!r}",
            )
    return None


def venue_refusal(venues: VenueRules | None, request: OrderRequest) -> Rejection | None:
    """Why the submit's venue is refused (not configured, or not the account's), or None."""
    if venues is None:
        if request.venue == DEFAULT_VENUE:
            return None
        return Rejection(
            ReasonCode.UNKNOWN_VENUE,
            f"venue {request.venue!r} is not configured (only {DEFAULT_VENUE!r})",
        )
    if not venues.knows(request.venue):
        return Rejection(ReasonCode.UNKNOWN_VENUE, f"venue {request.venue!r} is not configured")
    if not venues.trades_at(request.venue, request.account_id):
        return Rejection(
            ReasonCode.VENUE_NOT_ALLOWED,
            f"account {request.account_id!r} does not trade at venue {request.venue!r}",
        )
    return None
