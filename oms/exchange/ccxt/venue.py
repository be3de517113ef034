"""ccxt as a :class:`~oms.exchange.interface.Venue`: order entry only, for now.

The gateway's live streams, the keeper's account views and the catalog the other processes
load come from the primary venue (``exchange.primary_venue``), which must be a native one: a
ccxt venue's fills reach the positions through the worker's own reports (the replies to its
orders and its order checks), not through a live feed.
"""

from __future__ import annotations

from typing import NoReturn

from oms.exchange.ccxt.exchange import CcxtExchange
from oms.exchange.interface import Venue
from oms.secrets import SecretStore
from oms.settings import Settings


def _primary_only(what: str) -> NoReturn:
    raise ValueError(
        f"a ccxt venue has no {what} yet: make a native (kind 'deribit') venue the primary "
        "one (exchange.venues: the 'deribit' venue, or the first)"
    )


def _accounts(settings: Settings, secrets: SecretStore) -> NoReturn:
    _primary_only("account views")


def _feed(settings: Settings, secrets: SecretStore) -> NoReturn:
    _primary_only("live feed")


def _instruments(settings: Settings) -> NoReturn:
    _primary_only("stand-alone instrument catalog")


CCXT = Venue(exchange=CcxtExchange, accounts=_accounts, feed=_feed, instruments=_instruments)
