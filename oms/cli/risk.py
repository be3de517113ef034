"""``oms risk ...``: trading states, limits and permissions of accounts, with an audit trail.

Changes go to the compacted ``oms.risk-controls`` topic (every worker reads it), each with an
audit record on ``oms.risk-audit`` naming who changed what; state changes are also
``risk_state_changed`` order events. Bad values are refused here, with a reason code.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from typing import Annotated, Any

import typer
from aiokafka import AIOKafkaProducer
from pydantic import ValidationError
from rich.console import Console

from oms.kafka.admin import ensure_topics
from oms.kafka.reading import read_topic
from oms.kafka.security import KafkaConnection
from oms.risk.book import RiskBook
from oms.risk.controls import current_controls, publish_change
from oms.schemas import ReasonCode, Topic, now_ms
from oms.schemas.risk import AccountControls, AccountLimits, AccountPermissions, TradingState
from oms.settings import Settings, get_settings

risk_app = typer.Typer(help="Account trading states, limits, permissions.", no_args_is_help=True)
console = Console()

AccountOpt = Annotated[str | None, typer.Option("--account", help="account (default: all known)")]
ActorOpt = Annotated[str | None, typer.Option(help="who makes the change (default: $USER)")]
ReasonOpt = Annotated[str, typer.Option(help="why, for the audit trail")]


class ControlsRefused(ValueError):
    """A change that would set nonsense; carries a reason code."""

    def __init__(self, reason_code: ReasonCode, message: str) -> None:
        super().__init__(message)
        self.reason_code = reason_code


def _parse_assignments(model: type[Any], current: Any, pairs: list[str]) -> Any:
    """Apply ``field=value`` pairs (JSON values, or comma lists / plain strings) to a model,
    validating the result; raises :class:`ControlsRefused` on nonsense."""
    data = current.model_dump(mode="json")
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in model.model_fields:
            raise ControlsRefused(
                ReasonCode.SCHEMA_INVALID,
                f"{pair!r}: expected FIELD=VALUE with FIELD one of {', '.join(model.model_fields)}",
            )
        if text.lower() in ("", "none", "null"):
            data[name] = None if not isinstance(data.get(name), list | dict) else type(data[name])()
            continue
        try:
            value: Any = json.loads(text)
        except ValueError:
            value = text.split(",") if isinstance(data.get(name), list) else text
        if isinstance(data.get(name), list) and not isinstance(value, list):
            value = [value]
        data[name] = value
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise ControlsRefused(ReasonCode.SCHEMA_INVALID, details) from exc


async def change_controls(
    settings: Settings,
    account: str,
    *,
    actor: str,
    action: str,
    limits: list[str] | None = None,
    permissions: list[str] | None = None,
    state: TradingState | None = None,
    cancel_open_orders: bool = False,
    reason: str = "",
) -> AccountControls:
    """Read the account's current controls, apply a change, publish it (with its audit
    record and, for a state change, its event). Raises :class:`ControlsRefused`."""
    await ensure_topics(settings)
    runtime = await current_controls(settings)
    before = runtime.get(account) or RiskBook(settings.risk, lambda _: None).controls_of(account)
    update: dict[str, Any] = {}
    if limits:
        update["limits"] = _parse_assignments(AccountLimits, before.limits, limits)
    if permissions:
        names = {p.partition("=")[0].strip().replace("-", "_") for p in permissions}
        if "exchange_account" in names:
            raise ControlsRefused(
                ReasonCode.PERMISSION_DENIED,
                "exchange_account is static (risk.accounts.<A>.permissions.exchange_account in "
                "settings): workers and the gateway open exchange sessions with it at start",
            )
        update["permissions"] = _parse_assignments(
            AccountPermissions, before.permissions, permissions
        )
    if state is not None:
        update["trading_state"] = state
        update["state_reason"] = reason or f"set by {actor}"
        update["cancel_open_orders"] = state is TradingState.HALTED and cancel_open_orders
        if state is TradingState.ACTIVE:
            update["resumed_at"] = now_ms()
    after = before.model_copy(update=update)
    producer = AIOKafkaProducer(**KafkaConnection.from_settings(settings).aiokafka(acks="all"))
    await producer.start()
    try:

        async def send(topic: str, key: bytes, value: bytes) -> None:
            await producer.send_and_wait(topic, value=value, key=key)

        audit = await publish_change(send, settings, before, after, actor=actor, action=action)
    finally:
        await producer.stop()
    return after.model_copy(update={"version": audit.version})


def _accounts(settings: Settings, account: str | None) -> list[str]:
    return [account] if account else list(settings.accounts)


def _run_change(account: str | None, **kwargs: Any) -> None:
    settings = get_settings()
    actor = kwargs.pop("actor") or getpass.getuser()
    try:
        for name in _accounts(settings, account):
            controls = asyncio.run(change_controls(settings, name, actor=actor, **kwargs))
            console.print(
                f"{name}: {controls.trading_state.value} (version {controls.version}, by {actor})"
            )
    except ControlsRefused as exc:
        console.print(f"[red]refused[/red] {exc.reason_code.value}: {exc}")
        raise typer.Exit(2) from exc


@risk_app.command("halt")
def halt(
    account: AccountOpt = None,
    cancel_open: Annotated[bool, typer.Option(help="also cancel open orders")] = False,
    reason: ReasonOpt = "",
    actor: ActorOpt = None,
) -> None:
    """Halt trading: every new order and amend is refused (cancels still pass)."""
    _run_change(
        account,
        actor=actor,
        action="halt",
        state=TradingState.HALTED,
        cancel_open_orders=cancel_open,
        reason=reason,
    )


@risk_app.command("reduce")
def reduce(account: AccountOpt = None, reason: ReasonOpt = "", actor: ActorOpt = None) -> None:
    """Reduce-only: only orders that reduce a position pass."""
    _run_change(account, actor=actor, action="reduce", state=TradingState.REDUCING, reason=reason)


@risk_app.command("resume")
def resume(account: AccountOpt = None, reason: ReasonOpt = "", actor: ActorOpt = None) -> None:
    """Back to active (automatic switches stay off for the rest of the UTC day)."""
    _run_change(account, actor=actor, action="resume", state=TradingState.ACTIVE, reason=reason)


@risk_app.command("limits")
def limits(
    account: Annotated[str, typer.Option("--account", help="account")],
    assignments: Annotated[
        list[str],
        typer.Argument(
            help="FIELD=VALUE, e.g. max_order_amount=1000 "
            "max_daily_loss='{\"BTC\": 0.5}' price_band_pct=none"
        ),
    ],
    actor: ActorOpt = None,
) -> None:
    """Change an account's limits at runtime (audited)."""
    _run_change(account, actor=actor, action="limits", limits=assignments)


@risk_app.command("permissions")
def permissions(
    account: Annotated[str, typer.Option("--account", help="account")],
    assignments: Annotated[
        list[str], typer.Argument(help="FIELD=VALUE, e.g. allowed_kinds=option read_only=true")
    ],
    actor: ActorOpt = None,
) -> None:
    """Change an account's permissions at runtime (audited)."""
    _run_change(account, actor=actor, action="permissions", permissions=assignments)


@risk_app.command("show")
def show(account: AccountOpt = None) -> None:
    """The controls in force per account (runtime, else settings)."""
    settings = get_settings()
    runtime = asyncio.run(current_controls(settings))
    book = RiskBook(settings.risk, lambda _: None)
    for name in sorted(set(_accounts(settings, account)) | (set() if account else set(runtime))):
        controls = runtime.get(name) or book.controls_of(name)
        console.print_json(controls.model_dump_json())


@risk_app.command("audit")
def audit(account: AccountOpt = None) -> None:
    """Who changed what, oldest first."""
    settings = get_settings()
    topic = settings.topic(Topic.RISK_AUDIT)
    for _key, value in asyncio.run(
        read_topic(KafkaConnection.from_settings(settings), topic, timeout_s=60)
    ):
        try:
            record = json.loads(value or b"")
        except ValueError:  # a tombstone, an empty value, not JSON: nothing to show
            continue
        if not isinstance(record, dict):
            continue
        if account is None or record.get("account_id") == account:
            console.print_json(json.dumps(record))
