"""Topic names and their keys: the partitioning contract of the whole pipeline.

| topic              | key                          | why                                         |
|--------------------|------------------------------|---------------------------------------------|
| order-requests     | any (or none)                | external: any producer, any partitioner     |
| order-commands     | order_id                     | internal: the edge routes requests here     |
| execution-reports  | order_id (= Deribit label)   | co-partitioned with commands: same table    |
| order-triggers     | order_id                     | internal: trigger engine -> table owner     |
| order-events       | order_id                     | per-order ordering for consumers and sinks  |
| market-ticks       | instrument_name              | one instrument's ticks in order             |
| positions          | account_id|instrument_name    | one position's changes in order             |
| notifications      | account_id                   | per-account grouping and ordering           |
| dead-letters       | original key                 | evidence next to where it came from         |
| metrics            | worker                       | one worker's samples in order               |
| risk-controls      | account_id (compacted)       | latest limits/state per account, read fully |
| risk-audit         | account_id                   | who changed which control, append-only      |
| notification-settings | account_id (compacted)    | latest settings per account                 |
| notification-acks  | alert_id (compacted)         | acknowledged emergency alerts               |

order-commands, execution-reports, order-triggers and order-events must have the same
partition count (co-partitioned): the order table is written from the first three. Only the
OMS writes order-commands; traders write order-requests, whose partitioning does not matter
(the edge re-keys every request by its order id).
"""

from __future__ import annotations

from enum import StrEnum


class Topic(StrEnum):
    ORDER_REQUESTS = "order-requests"
    ORDER_COMMANDS = "order-commands"
    MARKET_TICKS = "market-ticks"
    EXECUTION_REPORTS = "execution-reports"
    ORDER_TRIGGERS = "order-triggers"
    ORDER_EVENTS = "order-events"
    POSITIONS = "positions"
    NOTIFICATIONS = "notifications"
    DEAD_LETTERS = "dead-letters"
    METRICS = "metrics"
    RISK_CONTROLS = "risk-controls"
    RISK_AUDIT = "risk-audit"
    NOTIFICATION_SETTINGS = "notification-settings"
    NOTIFICATION_ACKS = "notification-acks"


def topic_name(topic: Topic, prefix: str = "oms.") -> str:
    """Full name of a topic under a prefix."""
    return f"{prefix}{topic.value}"
