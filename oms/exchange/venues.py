"""Which venues the OMS works with: the :class:`~oms.exchange.interface.Venue` of each venue
configured in ``exchange.venues``, and what each process builds from them.

The only module outside a venue's own package that knows the venues exist; a new kind of
exchange registers here (and nowhere in the services).

A venue of kind ``deribit`` is served by the native implementation named by
``exchange.venue`` (``deribit``, or ``paper``: the same API, named apart); one of kind
``ccxt`` by :mod:`oms.exchange.ccxt`. The worker trades at every configured venue through a
:class:`~oms.exchange.router.VenueRouter`; the gateway follows the account streams of every
venue and the position keeper reconciles every venue's positions; what sees one venue (the
gateway's market data, the instrument catalog, the notifier's margins) sees the primary one
(``exchange.primary_venue``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from oms.exchange.instruments import InstrumentCatalog
from oms.exchange.interface import Exchange, Venue, VenueAccounts, VenueFeed
from oms.exchange.router import VenueRouter
from oms.schemas import DEFAULT_VENUE
from oms.secrets import SecretStore
from oms.settings import Settings, VenueSettings


def _deribit() -> Venue:
    from oms.exchange.deribit.venue import DERIBIT

    return DERIBIT


def _paper() -> Venue:
    from oms.exchange.paper.venue import PAPER

    return PAPER


def _ccxt() -> Venue:
    # Imported only when configured: ccxt takes a while to import.
    from oms.exchange.ccxt.venue import CCXT

    return CCXT


# Native implementation name -> its Venue (imported when first asked for).
VENUES: dict[str, Callable[[], Venue]] = {"deribit": _deribit, "paper": _paper}


def _native(settings: Settings) -> Venue:
    name = settings.exchange.venue
    try:
        load = VENUES[name]
    except KeyError:
        raise ValueError(f"unknown exchange {name!r}; known: {', '.join(sorted(VENUES))}") from None
    return load()


def venue_of(settings: Settings, name: str | None = None) -> Venue:
    """The implementation of the configured venue ``name`` (the primary one if None);
    ValueError if ``exchange.venue`` names no native implementation."""
    config = settings.exchange.venues[name or settings.exchange.primary_venue]
    return _ccxt() if config.kind == "ccxt" else _native(settings)


def venue_settings(settings: Settings, name: str) -> Settings:
    """The settings a venue's implementation is built with: ``exchange.url`` is the venue's
    own URL (if it has one) and ``exchange.venues`` holds that venue alone (its name and
    configuration, e.g. the ccxt exchange id)."""
    config: VenueSettings = settings.exchange.venues[name]
    update: dict[str, object] = {"venues": {name: config}}
    if config.url is not None:
        update["url"] = config.url
    return settings.model_copy(update={"exchange": settings.exchange.model_copy(update=update)})


def _secrets(settings: Settings, config: VenueSettings, secrets: SecretStore) -> SecretStore:
    if config.secrets_file is None:
        return secrets
    return SecretStore(config.secrets_file, settings.risk.exchange_accounts())


def is_default_setup(settings: Settings) -> bool:
    """Exactly the one default venue: what every deployment was before venues existed."""
    return list(settings.exchange.venues) == [DEFAULT_VENUE]


def create_exchange(settings: Settings, secrets: SecretStore) -> Exchange:
    """The worker's order entry, trading with the credentials in ``secrets`` (or a venue's
    own secrets file): the venue itself in the default setup, else a
    :class:`~oms.exchange.router.VenueRouter` over every configured venue."""
    if is_default_setup(settings):
        return venue_of(settings).exchange(settings, secrets)
    exchanges: dict[str, Exchange] = {}
    for name, config in settings.exchange.venues.items():
        build = venue_of(settings, name).exchange
        exchanges[name] = build(venue_settings(settings, name), _secrets(settings, config, secrets))
    return VenueRouter(
        exchanges,
        primary=settings.exchange.primary_venue,
        accounts={name: config.accounts for name, config in settings.exchange.venues.items()},
    )


def create_accounts(
    settings: Settings, secrets: SecretStore, venue: str | None = None
) -> VenueAccounts:
    """Read-only sessions to the accounts of ``venue`` (the primary one if None): positions,
    margins."""
    name = venue or settings.exchange.primary_venue
    config = settings.exchange.venues[name]
    return venue_of(settings, name).accounts(
        venue_settings(settings, name), _secrets(settings, config, secrets)
    )


def create_feed(settings: Settings, secrets: SecretStore, venue: str | None = None) -> VenueFeed:
    """The live streams of ``venue`` (the primary one if None): the gateway's sources."""
    name = venue or settings.exchange.primary_venue
    config = settings.exchange.venues[name]
    return venue_of(settings, name).feed(
        venue_settings(settings, name), _secrets(settings, config, secrets)
    )


def venue_accounts(settings: Settings, accounts: Iterable[str]) -> dict[str, list[str]]:
    """Per configured venue, which of ``accounts`` trade there (``VenueSettings.accounts``),
    the primary venue first."""
    primary = settings.exchange.primary_venue
    names = [primary, *(n for n in settings.exchange.venues if n != primary)]
    listed = list(accounts)
    return {
        name: [a for a in listed if settings.exchange.venues[name].trades(a)] for name in names
    }


def create_instrument_catalog(settings: Settings) -> InstrumentCatalog:
    """The primary venue's instrument catalog (not started)."""
    primary = settings.exchange.primary_venue
    return venue_of(settings).instruments(venue_settings(settings, primary))
