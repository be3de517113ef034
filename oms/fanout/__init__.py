"""Per-account topics: the fan-out service that copies the shared output topics
(order events, positions, notifications) to each account's own topics, which Kafka ACLs can
grant to the account's desk alone. :mod:`oms.fanout.routing` decides (pure),
:mod:`oms.fanout.service` moves the records."""
