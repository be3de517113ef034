"""A local exchange that speaks Deribit API v2 (JSON-RPC over WebSocket and HTTP).

Entry points: :class:`PaperExchange` (in-process, ``async with``), :func:`serve_forever`
and the ``oms paper-exchange`` command (:mod:`oms.cli.paper`).
"""

from oms.exchange.paper.faults import Faults
from oms.exchange.paper.server import PaperExchange, serve_forever

__all__ = ["Faults", "PaperExchange", "serve_forever"]
