"""Export the JSON Schema of every wire record to ``schemas/*.json`` for other languages."""

from __future__ import annotations

import json
from pathlib import Path

from oms.schemas.base import Record
from oms.schemas.commands import OrderCommand
from oms.schemas.dead_letters import DeadLetter
from oms.schemas.execution import ExecutionReport
from oms.schemas.market import MarketTick
from oms.schemas.metrics import MetricsSample
from oms.schemas.notifications import NotificationRecord
from oms.schemas.notify_settings import NotificationAck, NotificationSettings
from oms.schemas.orders import OrderEvent, OrderRecord, OrderRequest
from oms.schemas.positions import PositionRecord
from oms.schemas.risk import AccountControls, RiskAuditRecord

EXPORTED: tuple[type[Record], ...] = (
    OrderRequest,
    OrderCommand,
    OrderRecord,
    OrderEvent,
    ExecutionReport,
    MarketTick,
    PositionRecord,
    NotificationRecord,
    DeadLetter,
    MetricsSample,
    AccountControls,
    RiskAuditRecord,
    NotificationSettings,
    NotificationAck,
)


def render(model: type[Record]) -> str:
    """The JSON Schema of one record, as committed (stable key order, trailing newline)."""
    return json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"


def export(directory: Path) -> list[Path]:
    """Write every schema to ``directory``; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for model in EXPORTED:
        path = directory / f"{model.__name__}.json"
        path.write_text(render(model))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in export(Path("schemas")):
        print(path)
