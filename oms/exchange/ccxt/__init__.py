"""Any exchange ccxt knows, as an :class:`~oms.exchange.interface.Exchange`
(:class:`~oms.exchange.ccxt.exchange.CcxtExchange`), through ``ccxt.async_support``.

Imported only when a venue of kind ``ccxt`` is configured (ccxt is large to import).
"""
