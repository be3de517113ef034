"""Any exchange ccxt knows, as an :class:`~oms.exchange.interface.Exchange`
(:class:`~oms.exchange.ccxt.exchange.CcxtExchange`), through ``ccxt.async_support``.

ccxt is an optional dependency (``pip install 'oms[ccxt]'``): nothing here is imported
unless a venue of kind ``ccxt`` is configured.
"""
