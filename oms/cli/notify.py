"""``oms notify ...``: run the notifier, manage settings, read the log, acknowledge alerts."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from oms.settings import get_settings

notify_app = typer.Typer(help="Notifications: settings, log, alerts, the notifier.")
console = Console()
err = Console(stderr=True)


@notify_app.command("run")
def run(
    web_port: Annotated[int | None, typer.Option(help="/health and /stats port")] = None,
    loglevel: Annotated[str, typer.Option(help="crit, error, warn, info, debug")] = "info",
) -> None:
    """Run the notifier: order events and positions -> rules -> channels."""
    from oms.cli.services import run_until_signalled
    from oms.logs import configure_logging
    from oms.notify.service import Notifier

    settings = get_settings()
    configure_logging(loglevel, settings.log_json)

    async def main() -> None:
        notifier = Notifier(settings, web_port=web_port)
        await run_until_signalled(notifier.start, notifier.stop)

    asyncio.run(main())


@notify_app.command("settings")
def settings_cmd(
    account: Annotated[str, typer.Argument(help="account id")],
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="JSON settings (fields of the model)")
    ] = None,
    channel: Annotated[
        list[str] | None, typer.Option(help="'console' (others need --file)")
    ] = None,
    types: Annotated[list[str] | None, typer.Option("--type", help="notification types")] = None,
    language: Annotated[str | None, typer.Option(help="en or zh")] = None,
    timezone: Annotated[str | None, typer.Option(help="IANA zone, e.g. Asia/Shanghai")] = None,
) -> None:
    """Show an account's settings, or store new ones (applied by the notifier at once)."""
    from oms.notify.settings_io import (
        NotificationSettingsError,
        build_settings,
        publish_settings,
        read_settings,
    )

    settings = get_settings()
    if file is None and not channel and not types and language is None and timezone is None:
        current = asyncio.run(read_settings(settings, account))
        if current is None:
            console.print(f"{account}: no settings stored (defaults: console channel)")
        else:
            console.print_json(current.model_dump_json())
        return
    options: dict[str, Any] = {}
    if file is not None:
        try:
            options = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            err.print(f"[red]error:[/] invalid_settings: cannot read {file}: {exc}")
            raise typer.Exit(2) from exc
        options.pop("account_id", None)
    if language:
        options["language"] = language
    if timezone:
        options["timezone"] = timezone
    try:
        built = build_settings(
            account,
            types or options.pop("notification_types", None),
            channel or options.pop("channels", None),
            options.pop("rules", None),
            **options,
        )
    except NotificationSettingsError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    asyncio.run(publish_settings(settings, built))
    console.print(f"stored settings of {account} ({len(built.channels)} channels, "
                  f"{len(built.rules)} rules)")  # fmt: skip


@notify_app.command("ack")
def ack(alert_id: Annotated[str, typer.Argument(help="from the alert message")]) -> None:
    """Acknowledge an emergency alert: it stops repeating."""
    from oms.notify.settings_io import publish_ack

    asyncio.run(publish_ack(get_settings(), alert_id, by="cli"))
    console.print(f"acknowledged {alert_id}")


@notify_app.command("log")
def log_cmd(
    account: Annotated[str | None, typer.Option(help="only this account")] = None,
    status: Annotated[str | None, typer.Option(help="sent or failed")] = None,
    limit: Annotated[int, typer.Option(help="latest N attempts")] = 20,
    json_out: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """Latest delivery attempts (from ``oms.notifications``)."""
    from oms.kafka.reading import read_topic
    from oms.kafka.security import KafkaConnection
    from oms.schemas import NotificationRecord, Topic
    from oms.schemas.decode import Undecodable, decode

    settings = get_settings()
    rows: list[NotificationRecord] = []
    topic = settings.topic(Topic.NOTIFICATIONS)
    for _, value in asyncio.run(read_topic(KafkaConnection.from_settings(settings), topic)):
        record = decode(NotificationRecord, value)
        if isinstance(record, Undecodable):
            continue  # the sink dead-letters it; a log shows what it can read
        if account and record.account_id != account:
            continue
        if status and record.status.value != status:
            continue
        rows.append(record)
    rows.sort(key=lambda r: r.sent_at or r.created_at)
    rows = rows[-limit:]
    if json_out:
        for r in rows:
            print(r.model_dump_json())
        return
    table = Table(title="notifications")
    for col in ("time", "account", "type", "channel", "try", "status", "title / error"):
        table.add_column(col)
    for r in rows:
        when = datetime.fromtimestamp((r.sent_at or r.created_at) / 1000, UTC).strftime("%H:%M:%S")
        style = "green" if r.status.value == "sent" else "red"
        detail = r.title if r.status.value == "sent" else f"{r.reason_code}: {r.error_message}"
        table.add_row(
            when, r.account_id, r.notification_type, r.channel, str(r.attempt),
            f"[{style}]{r.status.value}[/]", detail,
        )  # fmt: skip
    console.print(table)


@notify_app.command("test")
def test_cmd(
    account: Annotated[str, typer.Argument(help="account id")],
    message: Annotated[str, typer.Option(help="text to send")] = "oms test notification",
) -> None:
    """Send a test message through every channel of an account now (no Kafka record) and
    print each channel's outcome: checks configuration and secrets."""
    from oms.notify.settings_io import read_settings

    settings = get_settings()
    stored = asyncio.run(read_settings(settings, account))
    if stored is None:
        err.print(f"{account}: no settings stored; the default console channel always works")
        raise typer.Exit(1)
    results = asyncio.run(_send_test(settings, stored, message))
    failed = False
    for name, outcome in results:
        failed |= outcome != "sent"
        console.print(f"{name}: {'[green]' if outcome == 'sent' else '[red]'}{outcome}[/]")
    if failed:
        raise typer.Exit(1)


async def _send_test(settings: Any, stored: Any, text: str) -> list[tuple[str, str]]:
    import aiohttp

    from oms.notify.channels import ChannelFactory, DeliveryError
    from oms.notify.model import Notice, Pending
    from oms.notify.secrets import NotifySecrets
    from oms.notify.templates import render
    from oms.schemas import now_ms
    from oms.schemas.notify_settings import NotificationType, Severity

    secrets = NotifySecrets(settings.resolved_secrets_file)
    notice = Notice(
        notice_id="test", account_id=stored.account_id, type=NotificationType.TEST,
        timestamp=now_ms(), message=text,
    )  # fmt: skip
    pending = Pending(
        nid=f"test-{now_ms()}", account_id=stored.account_id, type=NotificationType.TEST,
        severity=Severity.INFO, emergency=False, rule="test", group_key="test", channels=[],
        first_at=now_ms(), due_at=now_ms(),
    )  # fmt: skip
    pending.add(notice, 1)
    message = render(pending, stored, pending.nid)
    out: list[tuple[str, str]] = []
    async with aiohttp.ClientSession() as session:
        factory = ChannelFactory(settings.notify, secrets, session)
        for cfg in stored.channels:
            try:
                await factory.build(cfg).send(message)
                out.append((cfg.name, "sent"))
            except DeliveryError as exc:
                out.append((cfg.name, secrets.redact(f"failed {exc.reason.value}: {exc.detail}")))
    return out
