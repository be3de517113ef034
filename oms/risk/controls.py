"""Changing an account's controls: the new record, its audit record, its state event.

Used by operators (``oms risk ...``, through an aiokafka producer) and by the workers'
automatic switches (daily loss -> reducing, through the Faust producer): both go through
:func:`publish_change`, so every change is audited the same way and every trading-state
change is an ``OrderEvent`` of type ``risk_state_changed`` for the notification system.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from oms.kafka.reading import read_topic
from oms.kafka.security import KafkaConnection
from oms.schemas import OrderEvent, OrderEventType, ReasonCode, Topic, now_ms
from oms.schemas.decode import Undecodable, decode
from oms.schemas.risk import AccountControls, RiskAuditRecord, TradingState
from oms.settings import Settings

log = structlog.get_logger(__name__)

Send = Callable[[str, bytes, bytes], Awaitable[None]]  # topic, key, value

_STATE_REASON = {
    TradingState.HALTED: ReasonCode.TRADING_HALTED,
    TradingState.REDUCING: ReasonCode.TRADING_REDUCING,
}


def account_subject(account_id: str) -> str:
    """The ``order_id`` of account-level events (and their Kafka key)."""
    return f"account:{account_id}"


def diff(before: AccountControls, after: AccountControls) -> dict[str, dict[str, Any]]:
    """Changed fields (dotted for permissions/limits) as ``{field: {"from", "to"}}``."""
    skip = {"version", "updated_by", "updated_at"}
    old, new = before.model_dump(mode="json"), after.model_dump(mode="json")
    changes: dict[str, dict[str, Any]] = {}
    for name, value in new.items():
        if name in skip:
            continue
        if isinstance(value, dict) and name in ("permissions", "limits"):
            for sub, sub_value in value.items():
                if old[name].get(sub) != sub_value:
                    changes[f"{name}.{sub}"] = {"from": old[name].get(sub), "to": sub_value}
        elif old.get(name) != value:
            changes[name] = {"from": old.get(name), "to": value}
    return changes


def state_event(before: AccountControls, after: AccountControls, actor: str) -> OrderEvent:
    """The ``risk_state_changed`` event of a trading-state change."""
    account = after.account_id
    return OrderEvent(
        event_id=f"{account_subject(account)}:{after.version}:risk_state_changed",
        event_type=OrderEventType.RISK_STATE_CHANGED,
        order_id=account_subject(account),
        account_id=account,
        reason_code=_STATE_REASON.get(after.trading_state),
        message=(
            f"account {account}: {before.trading_state.value} -> {after.trading_state.value}"
            + (f" ({after.state_reason})" if after.state_reason else "")
        ),
        version=after.version,
        timestamp=after.updated_at,
        details={
            "from": before.trading_state.value,
            "to": after.trading_state.value,
            "actor": actor,
            "reason": after.state_reason,
            "cancel_open_orders": after.cancel_open_orders,
        },
    )


async def publish_change(
    send: Send,
    settings: Settings,
    before: AccountControls,
    after: AccountControls,
    *,
    actor: str,
    action: str,
) -> RiskAuditRecord:
    """Publish ``after`` (version bumped past ``before``) with its audit record and, if the
    trading state changed, its event. Returns the audit record."""
    after = after.model_copy(
        update={"version": before.version + 1, "updated_by": actor, "updated_at": now_ms()}
    )
    account = after.account_id
    audit = RiskAuditRecord(
        audit_id=f"{account}:{after.version}",
        account_id=account,
        actor=actor,
        action=action,
        changes=diff(before, after),
        version=after.version,
        reason=after.state_reason,
        timestamp=after.updated_at,
    )
    key = account.encode()
    await send(settings.topic(Topic.RISK_CONTROLS), key, after.to_bytes())
    await send(settings.topic(Topic.RISK_AUDIT), key, audit.to_bytes())
    if after.trading_state is not before.trading_state:
        event = state_event(before, after, actor)
        await send(settings.topic(Topic.ORDER_EVENTS), event.order_id.encode(), event.to_bytes())
    log.info(
        "risk.controls_changed",
        account_id=account,
        actor=actor,
        action=action,
        version=after.version,
        changes=sorted(audit.changes),
    )
    return audit


async def current_controls(settings: Settings) -> dict[str, AccountControls]:
    """The latest runtime controls per account on the risk-controls topic."""
    latest: dict[str, AccountControls] = {}
    topic = settings.topic(Topic.RISK_CONTROLS)
    for key, value in await read_topic(
        KafkaConnection.from_settings(settings), topic, timeout_s=60
    ):
        if value is None:
            # A tombstone deletes the account's controls, as the workers read it (see
            # oms.risk.feeds): the next change starts from its settings again.
            if key is not None:
                latest.pop(key.decode(errors="replace"), None)
            continue
        controls = decode(AccountControls, value)
        if isinstance(controls, Undecodable):
            continue  # workers dead-letter it; operators start from the last valid record
        latest[controls.account_id] = controls
    return latest
