"""Execution algorithms: TWAP slicing and post-only chase, as plugins of one interface.

A strategy (:mod:`oms.algos.strategy`) is pure: its hooks return the requests to publish.
The registry (:mod:`oms.algos.registry`) loads strategies from the ``oms.strategies`` entry
points (TWAP and chase are two of them) and reloads them when their code or settings
change; the scheduler (:mod:`oms.algos.scheduler`) calls their hooks. They act only through
ordinary requests on ``order-requests`` (child submits, amends, cancels), so their orders
pass the same intake, validation, rate limit and audit as any other. TWAP's and chase's
parameters are typed in :mod:`oms.orders.params`.
"""
