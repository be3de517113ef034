"""ccxt as a :class:`~oms.exchange.interface.Venue`: order entry, the live account feed
(ccxt.pro) and read-only account views (positions).

Market data and the instrument catalog the other processes load come from the primary venue
(``exchange.primary_venue``), which must be a native one.
"""

from __future__ import annotations

from typing import NoReturn

from oms.exchange.ccxt.accounts import CcxtAccounts
from oms.exchange.ccxt.exchange import CcxtExchange
from oms.exchange.ccxt.feed import CcxtFeed
from oms.exchange.interface import Venue
from oms.settings import Settings


def _instruments(settings: Settings) -> NoReturn:
    raise ValueError(
        "a ccxt venue has no stand-alone instrument catalog yet: make a native (kind "
        "'deribit') venue the primary one (exchange.venues: the 'deribit' venue, or the first)"
    )


CCXT = Venue(exchange=CcxtExchange, accounts=CcxtAccounts, feed=CcxtFeed, instruments=_instruments)
