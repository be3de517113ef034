"""The paper exchange as a :class:`~oms.exchange.interface.Venue`.

It speaks Deribit API v2, so the Deribit implementation serves it unchanged; only the
exchange's name differs (metrics, logs). A venue with its own protocol would implement the
interfaces itself.
"""

from __future__ import annotations

import dataclasses

from oms.exchange.deribit.venue import DERIBIT, DeribitVenue


class PaperVenue(DeribitVenue):
    """Deribit's API, served by :mod:`oms.exchange.paper`."""

    name = "paper"


PAPER = dataclasses.replace(DERIBIT, exchange=PaperVenue)
