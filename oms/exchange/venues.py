"""Which venue a worker trades on: ``create_exchange`` builds the one the settings name.

The only module outside a venue's own package that knows the venues exist; a new exchange
registers here (and nowhere in ``oms.streams``).
"""

from __future__ import annotations

from collections.abc import Callable

from oms.exchange.interface import Exchange
from oms.secrets import SecretStore
from oms.settings import Settings

VenueFactory = Callable[[Settings, SecretStore], Exchange]


def _deribit(settings: Settings, secrets: SecretStore) -> Exchange:
    from oms.exchange.deribit.venue import DeribitVenue

    return DeribitVenue(settings, secrets)


def _paper(settings: Settings, secrets: SecretStore) -> Exchange:
    from oms.exchange.paper.venue import PaperVenue

    return PaperVenue(settings, secrets)


# Venue name -> factory.
VENUES: dict[str, VenueFactory] = {"deribit": _deribit, "paper": _paper}


def create_exchange(settings: Settings, secrets: SecretStore) -> Exchange:
    """The venue ``settings.exchange.venue`` names, trading with the credentials in
    ``secrets``."""
    name = settings.exchange.venue
    try:
        factory = VENUES[name]
    except KeyError:
        raise ValueError(f"unknown exchange {name!r}; known: {', '.join(sorted(VENUES))}") from None
    return factory(settings, secrets)
