"""Commands to the keeper from outside it (``oms positions ack``): they go through the
keeper's internal topic, keyed by position, so the position's single writer applies them."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaProducer

from oms.kafka.security import KafkaConnection
from oms.positions.keeper import FILLS_TOPIC
from oms.positions.state import ReportBundle
from oms.schemas import DEFAULT_VENUE, position_key
from oms.settings import Settings


async def send_command(settings: Settings, command: dict[str, Any]) -> None:
    """Publish one command (``type``, ``account_id``, ``instrument_name``, ...)."""
    key = position_key(
        str(command["account_id"]),
        str(command["instrument_name"]),
        str(command.get("venue") or DEFAULT_VENUE),
    )
    producer = AIOKafkaProducer(**KafkaConnection.from_settings(settings).aiokafka(acks="all"))
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic(FILLS_TOPIC), ReportBundle(command=command).to_bytes(), key.encode()
        )
    finally:
        await producer.stop()


async def acknowledge(
    settings: Settings, account_id: str, instrument_name: str, actor: str = "operator"
) -> None:
    """Clear a position's review flag (after a mismatch or an inconsistent fill)."""
    await send_command(
        settings,
        {
            "type": "ack",
            "account_id": account_id,
            "instrument_name": instrument_name,
            "actor": actor,
        },
    )
