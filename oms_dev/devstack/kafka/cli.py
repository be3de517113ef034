"""``python -m oms_dev.devstack.kafka fetch|start|stop|status``: the developer's broker.

The broker is the one the settings describe (``OMS_KAFKA__BOOTSTRAP``, ``OMS_KAFKA__VERSION``),
the same one ``oms up`` uses, with its data in ``.local/kafka-data``; options override. Errors
are one line on stderr and exit code 2. ``--secure``: the SASL_SSL broker of ``oms up
--secure`` (data in ``.local/kafka-data-secure``, see :mod:`.secure`), with the ACL table of
the settings applied once it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from oms.kafka.acls import acl_rules, apply_acls
from oms.settings import get_settings
from oms_dev.devstack.kafka.fetch import DevstackError, fetch
from oms_dev.devstack.kafka.process import KafkaBroker
from oms_dev.devstack.kafka.secure import BrokerSecurity
from oms_dev.devstack.net import port_open

app = typer.Typer(
    help="A local Apache Kafka (KRaft, one node) from Maven Central.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

Version = Annotated[str | None, typer.Option("--version", help="Kafka version (default: settings)")]
Port = Annotated[
    int | None, typer.Option(help="client port (default: the port of OMS_KAFKA__BOOTSTRAP)")
]
ControllerPort = Annotated[int | None, typer.Option(help="default: port + 1")]
DataDir = Annotated[Path | None, typer.Option(help="default: .local/kafka-data")]
Heap = Annotated[str, typer.Option(help="JVM heap (-Xmx)")]
Secure = Annotated[
    bool, typer.Option(help="SASL_SSL with SCRAM users and ACLs (data: .local/kafka-data-secure)")
]


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """A missing prerequisite or a failed broker exits 2 with its message, no traceback."""
    try:
        yield
    except DevstackError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _broker(
    version: str | None,
    port: int | None,
    controller_port: int | None,
    data_dir: Path | None,
    heap: str,
    secure: bool = False,
) -> KafkaBroker:
    settings = get_settings()
    security = None
    if secure:
        data_dir = data_dir or settings.data_dir.resolve() / "kafka-data-secure"
        security = BrokerSecurity.for_settings(settings, data_dir / "tls")
    broker = KafkaBroker.from_settings(
        settings.kafka, data_dir=data_dir, heap=heap, security=security
    )
    if version:
        broker.version = version
    if port:
        broker.port = port
        broker.controller_port = port + 1
    if controller_port:
        broker.controller_port = controller_port
    return broker


@app.command("fetch")
def fetch_jars(version: Version = None) -> None:
    """Download the broker's jars (at once when they are already there)."""
    version = version or get_settings().kafka.version
    with _one_line_errors():
        libs = fetch(version)
    typer.echo(f"Kafka {version}: {libs}")


@app.command()
def start(
    version: Version = None,
    port: Port = None,
    controller_port: ControllerPort = None,
    data_dir: DataDir = None,
    heap: Heap = "512m",
    timeout: Annotated[float, typer.Option(help="seconds to wait until it answers")] = 180.0,
    secure: Secure = False,
) -> None:
    """Fetch if needed, format the storage once, start detached and wait until it answers."""
    broker = _broker(version, port, controller_port, data_dir, heap, secure)
    with _one_line_errors():
        running = broker.pid()
        if running is not None:
            typer.echo(
                f"Kafka {broker.version} already running on {broker.bootstrap} (pid {running})"
            )
            return
        pid = broker.start()
        try:
            asyncio.run(broker.wait_ready(timeout))
            if secure:
                asyncio.run(apply_acls(broker.admin_connection(), acl_rules(get_settings())))
        except BaseException:
            broker.stop()
            raise
    typer.echo(f"Kafka {broker.version} up on {broker.bootstrap} (pid {pid})")
    typer.echo(f"log: {broker.log_file}")


@app.command()
def stop(
    port: Port = None,
    controller_port: ControllerPort = None,
    data_dir: DataDir = None,
    secure: Secure = False,
) -> None:
    """Stop the broker of the data dir (SIGTERM, SIGKILL after 30 s)."""
    broker = _broker(None, port, controller_port, data_dir, "512m", secure)
    with _one_line_errors():
        stopped = broker.stop()
    typer.echo("Kafka stopped" if stopped else "Kafka was not running")


@app.command()
def status(
    version: Version = None,
    port: Port = None,
    controller_port: ControllerPort = None,
    data_dir: DataDir = None,
    secure: Secure = False,
) -> None:
    """Whether the broker of the data dir runs and its port accepts; exit 1 when not."""
    broker = _broker(version, port, controller_port, data_dir, "512m", secure)
    pid = broker.pid()
    up = port_open(broker.host, broker.port)
    typer.echo(
        f"Kafka {broker.version} on {broker.bootstrap}: "
        + (f"running (pid {pid})" if pid else "not running (this data dir)")
        + ("" if up else ", port closed")
    )
    if not (pid and up):
        raise typer.Exit(1)
