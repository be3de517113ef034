"""The local stack: broker, topics, secrets and the OMS processes, supervised.

Two entry points:

- :class:`Stack`: an async context manager giving a broker (own or isolated on free ports)
  with the pipeline topics created, for tests and benchmarks that start OMS processes
  themselves::

      async with Stack.isolated(tmp_path / "stack", partitions=4) as stack:
          stack.bootstrap, stack.settings   # settings point at the broker

- :class:`Supervisor` / :func:`run_up`: what ``oms up`` runs. Ensures Kafka is fetched,
  formatted and running, creates topics and a demo secrets file, starts the paper exchange,
  gateway, N workers, the position keeper, the sink, the notifier and the fan-out to the
  per-account topics (unless ``OMS_ACCESS__PER_ACCOUNT_TOPICS=false``) as child processes
  (logs in ``.local/logs``), restarts crashed ones with backoff, shows a live status table,
  and on Ctrl-C/SIGTERM stops everything in reverse order. Data stays under ``.local/``.

Both have a secure mode (``secure=True``; ``oms up --secure``, ``make run SECURE=1``): the
broker listens on SASL_SSL only, with certificates and SCRAM users made locally, every
component logs in as its own principal (``oms.kafka.acls.COMPONENT_PRINCIPALS``) and may do
only what the ACL table grants it; the stack's own ``settings`` log in as the admin.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.table import Table

from oms.backoff import Backoff
from oms.kafka.acls import COMPONENT_PRINCIPALS, acl_rules, apply_acls
from oms.kafka.admin import TopicSpec, ensure_topics
from oms.secrets import (
    Credentials,
    QueryTokens,
    load_kafka_users,
    load_secrets_file,
    load_signing_keys,
    write_kafka_users,
    write_query_tokens,
    write_secrets_file,
    write_signing_keys,
)
from oms.settings import Settings, get_settings
from oms_dev.devstack.kafka import DevstackError, KafkaBroker
from oms_dev.devstack.kafka.secure import ADMIN_USER, BrokerSecurity, ensure_scram_users
from oms_dev.devstack.net import port_open

# The first restart of a crashed child comes within this long; later ones back off to
# Supervisor.max_backoff_s.
_RESTART_BASE_S = 1.0

# --------------------------------------------------------------------------- Stack (library)


class Stack:
    """A running broker plus the pipeline topics, for tests, benchmarks and ``oms up``.

    ``settings`` is a copy of the given settings whose ``kafka.bootstrap`` points at the
    broker. A broker this object started is stopped on exit; one that was already running
    (the developer's, from ``python -m oms_dev.devstack.kafka start``) is left alone.
    """

    def __init__(
        self,
        settings: Settings,
        broker: KafkaBroker,
        *,
        create_topics: bool = True,
        extra_topics: dict[str, int | TopicSpec] | None = None,
        start_timeout_s: float = 180.0,
        die_with_parent: bool = True,
    ) -> None:
        self.broker = broker
        self.settings = connect_settings(settings, broker)
        self.create_topics = create_topics
        self.extra_topics = extra_topics
        self.start_timeout_s = start_timeout_s
        self.die_with_parent = die_with_parent
        self.started_broker = False
        self.topics: list[str] = []

    @classmethod
    def isolated(
        cls,
        data_dir: Path,
        settings: Settings | None = None,
        *,
        partitions: int | None = None,
        secure: bool = False,
        **kw: object,
    ) -> Stack:
        """A stack on a new broker on free ports, its data under ``data_dir``; ``secure``:
        SASL_SSL with ACLs (the principals' passwords go to the settings' secrets file)."""
        settings = settings or Settings(data_dir=data_dir)
        if partitions is not None:
            settings = settings.model_copy(
                update={"kafka": settings.kafka.model_copy(update={"partitions": partitions})}
            )
        broker = KafkaBroker.isolated(
            data_dir / "kafka",
            version=settings.kafka.version,
            partitions=settings.kafka.partitions,
            security=BrokerSecurity.for_settings(settings, data_dir / "kafka" / "tls")
            if secure
            else None,
        )
        return cls(settings, broker, **kw)  # type: ignore[arg-type]

    @classmethod
    def developer(
        cls, settings: Settings | None = None, *, secure: bool = False, **kw: object
    ) -> Stack:
        """The developer's broker (``OMS_KAFKA__BOOTSTRAP``, data in ``.local/kafka-data``;
        ``secure``: a SASL_SSL one with its data in ``.local/kafka-data-secure``)."""
        settings = settings or get_settings()
        data_dir = settings.data_dir.resolve() / ("kafka-data-secure" if secure else "kafka-data")
        broker = KafkaBroker.from_settings(
            settings.kafka,
            data_dir=data_dir,
            security=BrokerSecurity.for_settings(settings, data_dir / "tls") if secure else None,
        )
        return cls(settings, broker, **kw)  # type: ignore[arg-type]

    @property
    def bootstrap(self) -> str:
        """``host:port`` of the broker."""
        return self.broker.bootstrap

    async def start(self) -> Stack:
        """Start the broker unless it already runs, wait for it, create the topics."""
        if self.broker.is_running():
            await self.broker.wait_ready(self.start_timeout_s)
        else:
            await self.broker.astart(self.start_timeout_s, die_with_parent=self.die_with_parent)
            self.started_broker = True
        if self.create_topics:
            self.topics = await ensure_topics(self.settings, self.extra_topics)
        await self.grant()
        return self

    async def grant(self) -> None:
        """On a secure broker, create the users the broker lacks (a desk added since its
        storage was formatted) and the ACLs of the table for the stack's settings (its
        principals, its desks); nothing on a plaintext one."""
        security = self.broker.security
        if security is not None:
            admin = self.broker.admin_connection()
            await asyncio.to_thread(ensure_scram_users, admin, security.passwords)
            await apply_acls(admin, acl_rules(self.settings))

    async def stop(self) -> None:
        """Stop the broker if this stack started it (its data is kept)."""
        if self.started_broker:
            await self.broker.astop()
            self.started_broker = False

    async def __aenter__(self) -> Stack:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def connect_settings(settings: Settings, broker: KafkaBroker) -> Settings:
    """``settings`` pointed at ``broker``: its address and, on a secure one, TLS and the
    admin's login, with every principal's password in the settings' secrets file (the
    services started with them log in as their own principals)."""
    update: dict[str, object] = {"bootstrap": broker.bootstrap}
    if broker.security is not None:
        path = settings.resolved_secrets_file
        write_kafka_users(path, {**load_kafka_users(path), **broker.security.passwords})
        update.update(
            security_protocol="SASL_SSL", username=ADMIN_USER, ca_file=broker.security.ca_file
        )
    return settings.model_copy(update={"kafka": settings.kafka.model_copy(update=update)})


def ensure_demo_secrets(settings: Settings) -> Path:
    """Create the secrets file with random credentials for every configured account if missing.

    Existing files are never overwritten (the paper exchange and workers share them).
    """
    path = settings.resolved_secrets_file
    ensure_demo_credentials(path, settings.accounts)
    if settings.desks:
        ensure_demo_query_tokens(path, list(settings.desks))
    return path


def ensure_demo_query_tokens(path: Path, desks: list[str]) -> None:
    """Give every desk without one, and the operator (the local CLI's ``oms sql``), a random
    token for the sink's query endpoint, which refuses requests without one once desks
    are configured."""
    tokens = QueryTokens(desks, path)
    have = {desk: token for desk in desks if (token := tokens.for_desk(desk))}
    if len(have) == len(desks) and tokens.operator:
        return
    new = {desk: have.get(desk) or secrets.token_urlsafe(32) for desk in desks}
    write_query_tokens(path, new, tokens.operator or secrets.token_urlsafe(32))


def ensure_demo_credentials(path: Path, accounts: list[str]) -> None:
    """Give every account of ``accounts`` without them random exchange credentials and a
    request-signing key in the secrets file at ``path`` (others are left as they are)."""
    existing = load_secrets_file(path)
    missing = [a for a in accounts if a not in existing]
    if missing:
        creds = dict(existing)
        for account in missing:
            creds[account] = Credentials(
                client_id=f"{account}-{secrets.token_hex(4)}",
                client_secret=secrets.token_urlsafe(32),
            )
        write_secrets_file(path, creds)
    ensure_demo_signing_keys(path, accounts)


def ensure_demo_signing_keys(path: Path, accounts: list[str]) -> None:
    """Give every account without one a random request-signing key, so the CLI
    and SDK sign transparently against a stack that verifies signatures."""
    keys = {
        a: {k.key_id: k.secret.decode() for k in ks.values()}
        for a, ks in load_signing_keys(path).items()
    }
    missing = [a for a in accounts if not keys.get(a)]
    if missing:
        for account in missing:
            keys[account] = {f"{account}-k1": secrets.token_urlsafe(32)}
        write_signing_keys(path, keys)


# --------------------------------------------------------------------------- supervisor


def _pdeathsig_term() -> None:
    # Child side, before exec: if the supervisor is SIGKILLed its children get SIGTERM
    # instead of living on as orphans.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


@dataclass
class Child:
    """One supervised OMS process."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    health_url: str | None = None
    # host, port that must accept before the next children start (their dependency).
    wait_for_port: tuple[str, int] | None = None
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    state: str = "pending"
    exit_code: int | None = None
    next_start: float = 0.0
    healthy: bool = False
    # Full argv instead of ``python -m oms.cli.main <args>`` (tests supervise stand-ins).
    command: list[str] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start in its own process group, output appended to its log file."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n=== {time.strftime('%F %T')} starting {' '.join(self.args)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command or [sys.executable, "-m", "oms.cli.main", *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Own group: the terminal's Ctrl-C reaches only the supervisor, which stops
                # children in order; killpg also reaches anything the child spawned.
                start_new_session=True,
                preexec_fn=_pdeathsig_term,
            )
        self.started_at = time.monotonic()
        self.state = "starting" if self.health_url else "running"
        self.healthy = False
        self.exit_code = None

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    async def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the group, SIGKILL after ``timeout_s``."""
        if self.proc is None:
            self.state = "stopped"
            return
        if self.proc.poll() is None:
            self.state = "stopping"
            self.signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.to_thread(self.proc.wait), timeout_s)
            except TimeoutError:
                self.signal(signal.SIGKILL)
                await asyncio.to_thread(self.proc.wait)
        # The group may hold grandchildren that outlived the leader.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.exit_code = self.proc.returncode
        self.state = "stopped"


def worker_ports(settings: Settings, count: int) -> list[int]:
    """Web ports of ``count`` workers: ``worker.web_port`` upwards, skipping the ports of the
    other services (the position keeper's 6067 and the notifier's 6068 follow the first
    worker's 6066 by default)."""
    taken = {
        settings.positions.web_port,
        settings.notify.web_port,
        settings.sink.query_port,
        settings.paper.port,
    }
    ports: list[int] = []
    candidate = settings.worker.web_port
    while len(ports) < count:
        if candidate not in taken:
            ports.append(candidate)
        candidate += 1
    return ports


@dataclass
class Supervisor:
    """Runs the OMS processes against a broker and keeps them running."""

    settings: Settings
    workers: int = 1
    sink: bool = True
    gateway: bool = True
    paper: bool = True
    notifier: bool = True
    positions: bool = True
    # The fan-out to the per-account topics; runs only when access.per_account_topics is on.
    fanout: bool = True
    # SASL_SSL broker, one principal per component, ACLs (see Stack).
    secure: bool = False
    root: Path = field(default_factory=lambda: Path(".local"))
    children: list[Child] = field(default_factory=list)
    stack: Stack | None = None
    max_backoff_s: float = 30.0
    on_event: Callable[[str], None] = print
    # The live table and the event lines must go through one Console, or they garble.
    console: Console | None = None

    def __post_init__(self) -> None:
        self.root = self.root.resolve()

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    def _base_env(self, bootstrap: str, secrets_file: Path) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "OMS_DATA_DIR": str(self.root),
                "OMS_KAFKA__BOOTSTRAP": bootstrap,
                # Pinned: workers get their own data dirs, from which it would derive otherwise.
                "OMS_SECRETS_FILE": str(secrets_file),
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def plan(self, bootstrap: str, secrets_file: Path) -> list[Child]:
        """The children in start order: paper exchange, gateway, workers, position keeper,
        sink, notifier, fan-out."""
        env = self._base_env(bootstrap, secrets_file)
        children: list[Child] = []

        def add(
            name: str,
            args: list[str],
            health: str | None = None,
            port: tuple[str, int] | None = None,
            component: str | None = None,
            **extra: str,
        ) -> None:
            kafka = self._kafka_env(component)
            children.append(
                Child(
                    name,
                    args,
                    {**env, **kafka, **extra},
                    self.log_dir / f"{name}.log",
                    health,
                    port,
                )
            )

        s = self.settings
        # A wildcard bind is reached on loopback.
        paper_host = "127.0.0.1" if s.paper.host in ("0.0.0.0", "") else s.paper.host
        if self.paper:
            add(
                "paper-exchange",
                [
                    "paper-exchange",
                    "--host",
                    s.paper.host,
                    "--port",
                    str(s.paper.port),
                    "--accounts-file",
                    str(secrets_file),
                ],
                port=(paper_host, s.paper.port),
            )
        if self.gateway:
            add("gateway", ["gateway"], component="gateway")
        for i, port in enumerate(worker_ports(s, self.workers)):
            add(
                f"worker-{i}",
                ["worker", "--web-port", str(port)],
                f"http://127.0.0.1:{port}/health",
                component="worker",
                OMS_DATA_DIR=str(self.root / f"worker-{i}"),
            )
        if self.positions:
            port = s.positions.web_port
            add(
                "positions",
                ["positions", "run", "--web-port", str(port)],
                f"http://127.0.0.1:{port}/health",
                component="positions",
                OMS_DATA_DIR=str(self.root / "positions"),
            )
        if self.sink:
            add(
                "sink",
                ["sink"],
                f"http://{s.sink.query_host}:{s.sink.query_port}/health",
                component="sink",
            )
        if self.notifier:
            port = s.notify.web_port
            add("notifier", ["notify", "run", "--web-port", str(port)],
                f"http://127.0.0.1:{port}/health", component="notifier")  # fmt: skip
        if self.fanout and s.access.per_account_topics:
            add("fanout", ["fanout"], component="fanout")
        return children

    def _kafka_env(self, component: str | None) -> dict[str, str]:
        # A secure stack's Kafka clients: TLS to the broker and the component's principal.
        if not self.secure or component is None:
            return {}
        assert self.stack is not None and self.stack.broker.security is not None
        return {
            "OMS_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "OMS_KAFKA__CA_FILE": str(self.stack.broker.security.ca_file),
            "OMS_KAFKA__USERNAME": COMPONENT_PRINCIPALS[component],
        }

    async def prepare(self) -> Stack:
        """Broker running, topics created, secrets present."""
        stack = Stack.developer(self.settings, secure=self.secure, die_with_parent=True)
        broker = stack.broker
        if not broker.is_running() and port_open(broker.host, broker.port):
            # Something else serves the port (another checkout's broker, a container):
            # use it if it speaks Kafka rather than failing.
            self.on_event(f"using the Kafka broker already listening on {broker.bootstrap}")
            await broker.wait_ready(30)
        else:
            if broker.is_running():
                self.on_event(f"using the running Kafka on {broker.bootstrap} (left running)")
            else:
                self.on_event(f"starting Kafka {broker.version} on {broker.bootstrap}")
            await stack.start()
        if not stack.topics:
            stack.topics = await ensure_topics(stack.settings)
            await stack.grant()
        self.stack = stack
        return stack

    async def run(self, stop: asyncio.Event, *, live: bool = False) -> None:
        """Prepare, start the children, supervise until ``stop`` is set, then stop all."""
        stack = await self.prepare()
        try:
            secrets_file = ensure_demo_secrets(self.settings).resolve()
            self.children = self.plan(stack.bootstrap, secrets_file)
            if stop.is_set():  # Ctrl-C while the broker was starting
                return
            for child in self.children:
                child.start()
                self.on_event(f"started {child.name} (pid {child.pid}) log {child.log_path}")
                if child.wait_for_port is not None:
                    await self._wait_port(child, stop)
            if live:
                await self._supervise_live(stop)
            else:
                await self._supervise(stop)
        finally:
            await self.shutdown()

    async def _wait_port(self, child: Child, stop: asyncio.Event, timeout_s: float = 60.0) -> None:
        # The gateway and workers connect to the paper exchange at start: starting them
        # before it listens would only produce a round of crash-restarts.
        assert child.wait_for_port is not None
        host, port = child.wait_for_port
        deadline = time.monotonic() + timeout_s
        while not stop.is_set() and child.alive() and time.monotonic() < deadline:
            if await asyncio.to_thread(port_open, host, port):
                return
            await asyncio.sleep(0.2)
        if not stop.is_set():
            self.on_event(f"{child.name} not listening on {host}:{port}; starting the rest anyway")

    async def shutdown(self) -> None:
        """Stop children in reverse start order, then the broker if this run started it."""
        for child in reversed(self.children):
            if child.proc is not None and child.state != "stopped":
                await child.stop()
                self.on_event(f"stopped {child.name} (exit {child.exit_code})")
        if self.stack is not None:
            if self.stack.started_broker:
                self.on_event("stopping Kafka")
            await self.stack.stop()

    async def _tick(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.state in ("stopping", "stopped"):
                continue
            if child.state == "backoff":
                if now >= child.next_start:
                    child.restarts += 1
                    child.start()
                    self.on_event(f"restarted {child.name} (pid {child.pid}, #{child.restarts})")
                continue
            if not child.alive():
                assert child.proc is not None
                child.exit_code = child.proc.returncode
                # Backoff grows with restarts so a crash loop does not eat the machine (equal
                # jitter: every wait at least half its step). Not a retry loop for tenacity:
                # the restart is scheduled here and done by a later tick.
                backoff = Backoff(_RESTART_BASE_S, self.max_backoff_s, jitter="equal")
                delay = backoff.delay(child.restarts + 1)
                child.state = "backoff"
                child.next_start = now + delay
                self.on_event(
                    f"{child.name} exited with {child.exit_code}; restart in {delay:.0f}s "
                    f"(see {child.log_path})"
                )
        await self._check_health()

    async def _check_health(self) -> None:
        import aiohttp

        targets = [c for c in self.children if c.health_url and c.alive()]
        if not targets:
            return
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.5)) as session:
            for child in targets:
                assert child.health_url is not None
                try:
                    async with session.get(child.health_url) as resp:
                        ok = resp.status == 200
                except (aiohttp.ClientError, TimeoutError, OSError):
                    ok = False
                was_healthy = child.healthy or child.state == "unhealthy"
                if ok and not child.healthy:
                    self.on_event(f"{child.name} healthy")
                child.healthy = ok
                child.state = "ready" if ok else "unhealthy" if was_healthy else "starting"

    async def _supervise(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    async def _supervise_live(self, stop: asyncio.Event) -> None:
        from rich.live import Live

        with Live(
            self.table(), console=self.console, refresh_per_second=2, transient=False
        ) as live:
            while not stop.is_set():
                await self._tick()
                live.update(self.table())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

    def table(self) -> Table:
        """The rich status table: process, pid, state, restarts, uptime, log."""
        broker_up = self.stack is not None and port_open(
            self.stack.broker.host, self.stack.broker.port
        )
        title = (
            f"oms up - Kafka {self.stack.broker.bootstrap if self.stack else '?'}: "
            + ("[green]up[/]" if broker_up else "[red]down[/]")
            + "  (Ctrl-C stops everything)"
        )
        table = Table(title=title, title_justify="left")
        for column in ("process", "pid", "state", "restarts", "uptime", "log"):
            table.add_column(column)
        now = time.monotonic()
        colors = {"ready": "green", "running": "green", "starting": "yellow", "backoff": "red"}
        for c in self.children:
            up = _fmt_duration(now - c.started_at) if c.alive() else "-"
            color = colors.get(c.state, "white")
            state = c.state + (f" (exit {c.exit_code})" if c.state == "backoff" else "")
            table.add_row(
                c.name,
                str(c.pid or "-"),
                f"[{color}]{state}[/]",
                str(c.restarts),
                up,
                str(c.log_path.relative_to(self.root.parent))
                if c.log_path.is_relative_to(self.root.parent)
                else str(c.log_path),
            )
        return table


def _fmt_duration(seconds: float) -> str:
    s = int(seconds)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def run_up(
    settings: Settings | None = None,
    *,
    workers: int = 1,
    sink: bool = True,
    live: bool | None = None,
    secure: bool = False,
) -> int:
    """Blocking entry point of ``oms up``: returns the exit code. ``secure``: SASL_SSL with
    a principal per component and the ACL table (``oms.kafka.acls``)."""
    settings = settings or get_settings()
    live = sys.stdout.isatty() if live is None else live
    console = Console()

    def event(message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        # Printed above the live table when there is one; plain lines otherwise (logs, CI).
        console.print(f"[dim]{stamp}[/] {message}", highlight=False, soft_wrap=True)

    supervisor = Supervisor(
        settings,
        workers=workers,
        sink=sink,
        secure=secure,
        root=settings.data_dir,
        on_event=event,
        console=console,
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await supervisor.run(stop, live=live)

    try:
        asyncio.run(main())
    except DevstackError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    return 0
