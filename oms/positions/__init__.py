"""Positions: Deribit position math, the keeper (its own Faust app), records,
reconciliation with the positions the exchange reports, and ClickHouse queries.

| module | job |
|---|---|
| ``math`` | pure position arithmetic in Deribit's conventions |
| ``ledger`` | applies fills once (dedupe by trade id), reorder window, records |
| ``state`` | table values and the internal bundle message |
| ``router`` | execution-reports -> bundles per position (plain aiokafka) |
| ``keeper`` | the Faust app: apply agent, tables, commands, web pages |
| ``recorder`` | real-time or batch publishing of PositionRecords |
| ``reconcile`` | comparison with the exchange's positions, corrections |
| ``commands`` | ``oms positions ack`` |
| ``queries`` | ClickHouse reads for the SDK and CLI |
"""
