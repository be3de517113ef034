"""The order domain: what an order is allowed to do, decided without any I/O.

Validation, the execution-strategy decision (:mod:`~oms.orders.scheduling`), the typed
parameters of execution algorithms and lifecycle policies (:mod:`~oms.orders.params`), the
state machine, linked-order planning, the priority queues and the exchange-code mapping.
Everything here is a function of records and settings: it imports only :mod:`oms.schemas`,
:mod:`oms.settings`, the standard library and pydantic, never Kafka, Faust, ClickHouse or a
network client. The stream agents in :mod:`oms.streams` apply its decisions.
"""
