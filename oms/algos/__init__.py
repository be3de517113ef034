"""Execution algorithms: TWAP slicing and post-only chase.

Both act only through ordinary requests on ``order-requests`` (child submits, amends), so
their orders pass the same intake, validation, rate limit and audit as any other. Their
parameters are typed in :mod:`oms.orders.params`.
"""
