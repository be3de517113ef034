"""Reports the OMS makes itself about what happened at a venue."""

from __future__ import annotations

from oms.exchange.errors import ExchangeError
from oms.schemas import CommandType, ExecutionReport, ReportSource


def report_from_error(
    error: ExchangeError,
    *,
    order_id: str,
    account_id: str,
    instrument_name: str,
    command: CommandType,
    request_id: str | None,
) -> ExecutionReport:
    """A refused command as a report (the state machine decides what it means)."""
    return ExecutionReport(
        report_id=f"rpc:error:{order_id}:{command.value}:{request_id}:{error.code}",
        order_id=order_id,
        account_id=account_id,
        source=ReportSource.RPC,
        command=command,
        request_id=request_id,
        instrument_name=instrument_name,
        order_state=None,
        error_code=error.code,
        error_message=f"{error.reason}: {error.message}"[:500],
    )
