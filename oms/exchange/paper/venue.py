"""The paper exchange as an :class:`~oms.exchange.interface.Exchange`.

It speaks Deribit API v2, so the Deribit implementation serves it unchanged; only the name
differs (metrics, logs). A venue with its own protocol would implement the interface itself.
"""

from __future__ import annotations

from oms.exchange.deribit.venue import DeribitVenue


class PaperVenue(DeribitVenue):
    """Deribit's API, served by :mod:`oms.exchange.paper`."""

    name = "paper"
