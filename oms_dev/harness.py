"""Start the OMS services as real processes for tests and benchmarks.

Each service runs as ``python -m oms.cli.main <command>`` with its settings passed through
the environment (exactly how an operator configures it), in its own process group so it
can be stopped, or killed with SIGKILL, as a whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from oms.kafka.acls import COMPONENT_PRINCIPALS
from oms.kafka.admin import ensure_topics
from oms.secrets import Credentials, write_secrets_file, write_signing_keys
from oms.settings import Settings, VenueKind, VenueSettings
from oms_dev.devstack.kafka import KafkaBroker
from oms_dev.devstack.net import free_port

# Deribit's tier-1 matching-engine limit per sub-account (requests/s and burst): the tier
# paper accounts get in tests and benchmarks.
TIER1_RATE = 30.0
TIER1_BURST = 100


def isolated_settings(
    data_dir: Path, bootstrap: str, accounts: list[str], *, partitions: int = 8, label: str = "oms"
) -> Settings:
    """Settings for a private stack: its own data dir, topic prefix, Faust app id, free ports
    for the paper exchange, worker web server and sink endpoint, tier-1 paper accounts."""
    base = Settings()
    tag = uuid.uuid4().hex[:6]
    paper_port = free_port()
    return base.model_copy(
        update={
            "data_dir": data_dir,
            "accounts": accounts,
            "secrets_file": data_dir / "secrets.json",
            "kafka": base.kafka.model_copy(
                update={
                    "bootstrap": bootstrap,
                    "partitions": partitions,
                    "topic_prefix": f"{label}{tag}.",
                }
            ),
            "exchange": base.exchange.model_copy(
                update={
                    "url": f"ws://127.0.0.1:{paper_port}/ws/api/v2",
                    "matching_rate_per_s": TIER1_RATE,
                    "matching_burst": TIER1_BURST,
                }
            ),
            "paper": base.paper.model_copy(update={"port": paper_port, "default_tier": 1}),
            "worker": base.worker.model_copy(
                update={"web_port": free_port(), "app_id": f"{label}-{tag}"}
            ),
            "sink": base.sink.model_copy(update={"query_port": free_port()}),
            "notify": base.notify.model_copy(update={"web_port": free_port()}),
            "positions": base.positions.model_copy(update={"web_port": free_port()}),
        }
    )


def with_second_venue(
    settings: Settings, name: str, port: int, *, kind: VenueKind = "ccxt"
) -> Settings:
    """``settings`` with a second venue ``name``: another paper exchange on ``port``, reached
    natively (``kind="deribit"``, its WebSocket) or through ccxt (its REST base URL); the
    default venue stays the first paper exchange."""
    http = f"http://127.0.0.1:{port}"
    second = (
        VenueSettings(kind="ccxt", ccxt_id="deribit", url=http)
        if kind == "ccxt"
        else VenueSettings(kind="deribit", url=http.replace("http://", "ws://") + "/ws/api/v2")
    )
    venues = {"deribit": VenueSettings(), name: second}
    return settings.model_copy(
        update={"exchange": settings.exchange.model_copy(update={"venues": venues})}
    )


def write_account_secrets(path: Path, accounts: Iterable[str]) -> dict[str, dict[str, str]]:
    """Fresh paper-exchange credentials and one request-signing key per account in the
    secrets file, as a desk gets them when it is set up; returns ``{account: {key_id:
    key}}``. The SDK then signs every request of these accounts by itself."""
    names = list(accounts)
    write_secrets_file(path, {a: Credentials(f"cid-{a}", secrets.token_hex(16)) for a in names})
    keys = {a: {f"{a}-k1": secrets.token_hex(32)} for a in names}
    write_signing_keys(path, keys)
    return keys


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment variables that reproduce ``settings`` in a child process."""
    data = settings.model_dump(mode="json")
    # Derived from data_dir by default: pin it, since services get data dirs of their own.
    data["secrets_file"] = str(settings.resolved_secrets_file.resolve())
    env: dict[str, str] = {}
    for name, value in data.items():
        if value is None:
            continue
        if isinstance(value, dict | list):
            env[f"OMS_{name.upper()}"] = orjson.dumps(value).decode()
        else:
            env[f"OMS_{name.upper()}"] = str(value)
    return env


@dataclass
class ServiceProcess:
    """One OMS service process."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    # Run through this wrapper, e.g. ``setpriv`` to drop capabilities (chaos scenarios).
    command_prefix: list[str] = field(default_factory=list)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*self.command_prefix, sys.executable, "-m", "oms.cli.main", *self.args],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group: a crash, with no chance to clean up."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class OmsServices:
    """The paper exchange, gateway, worker(s), sink, notifier, position keeper and fan-out for
    one settings object."""

    settings: Settings
    log_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, ServiceProcess] = field(default_factory=dict)

    def _env(self, **overrides: str) -> dict[str, str]:
        return {**settings_env(self.settings), **self.extra_env, **overrides}

    def _principal(self, component: str) -> dict[str, str]:
        # On a SASL broker each component logs in as its own principal (the settings' user,
        # the admin, is for the test or benchmark itself).
        if self.settings.kafka.security_protocol != "SASL_SSL":
            return {}
        return {"OMS_KAFKA__USERNAME": COMPONENT_PRINCIPALS[component]}

    def add(
        self, name: str, args: list[str], *, command_prefix: Sequence[str] = (), **env: str
    ) -> ServiceProcess:
        """A service running ``oms <args>`` (through ``command_prefix``, if any) with the
        stack's environment plus ``env``; started by :meth:`start_all` or by hand."""
        service = ServiceProcess(
            name,
            args,
            self._env(**env),
            self.log_dir / f"{name}.log",
            command_prefix=list(command_prefix),
        )
        self.processes[name] = service
        return service

    def add_paper_exchange(self, *extra_args: str) -> ServiceProcess:
        paper = self.settings.paper
        return self.add(
            "paper-exchange",
            ["paper-exchange", "--host", paper.host, "--port", str(paper.port), *extra_args],
        )

    def add_second_paper_exchange(
        self, port: int, *extra_args: str, seed: int = 99, name: str = "paper-exchange-2"
    ) -> ServiceProcess:
        """Another paper exchange (its own process, port, seeded market and state) with the
        same accounts, as a second venue (:func:`with_second_venue`); ``extra_args`` go to
        its command line."""
        return self.add(
            name,
            [
                "paper-exchange", "--host", "127.0.0.1", "--port", str(port),
                "--seed", str(seed),
                "--accounts-file", str(self.settings.resolved_secrets_file),
                "--state-dir", str(self.settings.data_dir / name),
                *extra_args,
            ],
        )  # fmt: skip

    def add_worker(self, index: int = 0, web_port: int | None = None) -> ServiceProcess:
        port = web_port or self.settings.worker.web_port + index
        data_dir = self.settings.data_dir / f"worker-{index}"
        return self.add(
            f"worker-{index}",
            ["worker", "--web-port", str(port), "--loglevel", "warn"],
            OMS_DATA_DIR=str(data_dir),
            **self._principal("worker"),
        )

    def add_gateway(self) -> ServiceProcess:
        return self.add("gateway", ["gateway", "--loglevel", "warn"], **self._principal("gateway"))

    def add_sink(self) -> ServiceProcess:
        return self.add("sink", ["sink"], **self._principal("sink"))

    def add_notifier(self, web_port: int | None = None) -> ServiceProcess:
        port = web_port or self.settings.notify.web_port
        args = ["notify", "run", "--web-port", str(port), "--loglevel", "warn"]
        return self.add("notifier", args, **self._principal("notifier"))

    def add_position_keeper(self, web_port: int | None = None) -> ServiceProcess:
        port = web_port or self.settings.positions.web_port
        return self.add(
            "positions",
            ["positions", "run", "--web-port", str(port), "--loglevel", "warn"],
            OMS_DATA_DIR=str(self.settings.data_dir / "positions"),
            **self._principal("positions"),
        )

    def add_fanout(self) -> ServiceProcess:
        """The fan-out to the per-account topics (``oms fanout``)."""
        return self.add("fanout", ["fanout", "--loglevel", "warn"], **self._principal("fanout"))

    def start_all(self) -> None:
        for service in self.processes.values():
            if not service.alive:
                service.start()

    def stop_all(self) -> None:
        for service in reversed(list(self.processes.values())):
            service.stop()

    def __getitem__(self, name: str) -> ServiceProcess:
        return self.processes[name]

    def diagnostics(self) -> str:
        return "\n".join(
            f"--- {name} (alive={s.alive}) ---\n{s.tail()}" for name, s in self.processes.items()
        )


async def wait_http_ok(
    url: str, within: float = 60.0, ready: Callable[[Any], bool] | None = None
) -> None:
    """Poll ``url`` until it answers 200 (and, with ``ready``, its JSON body satisfies it)."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200 and (ready is None or ready(await resp.json())):
                        return
            except (aiohttp.ClientError, TimeoutError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not ready within {within}s")
            await asyncio.sleep(0.2)


async def paper_ready(settings: Settings, within: float = 60.0) -> None:
    """Wait until the paper exchange answers on its HTTP transport."""
    deadline = time.monotonic() + within
    while True:
        try:
            await paper_admin(settings, "public/get_time")
            return
        except (aiohttp.ClientError, OSError, RuntimeError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def two_venues_ready(settings: Settings, second_port: int, *, keeper: bool) -> None:
    """Wait until the second paper exchange answers, the worker has its instruments and,
    with ``keeper``, the position keeper is ready (the stacks of the venue tests)."""
    second = settings.model_copy(
        update={"paper": settings.paper.model_copy(update={"port": second_port})}
    )
    await paper_ready(second, within=60)
    await worker_ready(settings.worker.web_port, within=120)
    if keeper:
        await wait_http_ok(
            f"http://127.0.0.1:{settings.positions.web_port}/health",
            120,
            ready=lambda body: bool(body.get("ready")) and body.get("instruments", 0) > 0,
        )


async def worker_ready(web_port: int, within: float = 90.0) -> None:
    """Wait until a worker's web server answers and it has loaded the instruments."""
    await wait_http_ok(
        f"http://127.0.0.1:{web_port}/health",
        within,
        ready=lambda body: body.get("instruments", 0) > 0,
    )


async def start_bench_broker(
    base: Path, partitions: int, bootstrap: str | None, on_status: Callable[[str], None]
) -> tuple[KafkaBroker | None, str]:
    """A benchmark's Kafka: the given bootstrap, or a fresh broker on free ports (returned so
    the caller stops it)."""
    if bootstrap is not None:
        return None, bootstrap
    broker = KafkaBroker.isolated(base / "kafka", partitions=partitions)
    on_status("starting Kafka")
    await broker.astart(die_with_parent=True)
    return broker, broker.bootstrap


async def start_paper_stack(
    settings: Settings, log_dir: Path, on_status: Callable[[str], None]
) -> tuple[OmsServices, ServiceProcess]:
    """Fresh paper credentials for the settings' accounts, the topics, and the paper exchange,
    gateway and one worker, started and ready. Stops what it started if that fails."""
    write_account_secrets(settings.resolved_secrets_file, settings.accounts)
    await ensure_topics(settings)
    services = OmsServices(settings, log_dir)
    services.add_paper_exchange("--accounts-file", str(settings.resolved_secrets_file))
    services.add_gateway()
    worker = services.add_worker(0, settings.worker.web_port)
    on_status("starting paper exchange, gateway, worker")
    services.start_all()
    try:
        await worker_ready(settings.worker.web_port)
    except BaseException:
        services.stop_all()
        raise
    return services, worker


async def paper_admin(settings: Settings, method: str, **params: Any) -> Any:
    """Call a paper-exchange method over HTTP JSON-RPC (``admin/*`` need no auth); raises
    on an error answer."""
    url = f"http://{settings.paper.host}:{settings.paper.port}/api/v2/{method}"
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
        data = await resp.json()
    if "error" in data:
        raise RuntimeError(f"paper exchange {method}: {data['error']}")
    return data["result"]
