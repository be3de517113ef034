"""Which venue the OMS works with: the :class:`~oms.exchange.interface.Venue` the settings
name (``exchange.venue``), and what each process builds from it.

The only module outside a venue's own package that knows the venues exist; a new exchange
registers here (and nowhere in the services).
"""

from __future__ import annotations

from collections.abc import Callable

from oms.exchange.instruments import InstrumentCatalog
from oms.exchange.interface import Exchange, Venue, VenueAccounts, VenueFeed
from oms.secrets import SecretStore
from oms.settings import Settings


def _deribit() -> Venue:
    from oms.exchange.deribit.venue import DERIBIT

    return DERIBIT


def _paper() -> Venue:
    from oms.exchange.paper.venue import PAPER

    return PAPER


# Venue name -> its Venue (imported when first asked for).
VENUES: dict[str, Callable[[], Venue]] = {"deribit": _deribit, "paper": _paper}


def venue_of(settings: Settings) -> Venue:
    """The venue ``settings.exchange.venue`` names (ValueError if none has that name)."""
    name = settings.exchange.venue
    try:
        load = VENUES[name]
    except KeyError:
        raise ValueError(f"unknown exchange {name!r}; known: {', '.join(sorted(VENUES))}") from None
    return load()


def create_exchange(settings: Settings, secrets: SecretStore) -> Exchange:
    """The venue's order entry (a worker's), trading with the credentials in ``secrets``."""
    return venue_of(settings).exchange(settings, secrets)


def create_accounts(settings: Settings, secrets: SecretStore) -> VenueAccounts:
    """Read-only sessions to the venue's accounts (positions, margins)."""
    return venue_of(settings).accounts(settings, secrets)


def create_feed(settings: Settings, secrets: SecretStore) -> VenueFeed:
    """The venue's live market and account streams (the gateway's sources)."""
    return venue_of(settings).feed(settings, secrets)


def create_instrument_catalog(settings: Settings) -> InstrumentCatalog:
    """The venue's instrument catalog (not started)."""
    return venue_of(settings).instruments(settings)
