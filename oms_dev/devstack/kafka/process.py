"""The broker process: :class:`KafkaBroker` writes its configuration, formats the storage
once, starts the JVM in its own process group, waits until it answers and stops it."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from oms.kafka.security import KafkaConnection
from oms.settings import KafkaSettings
from oms_dev.devstack.kafka.config import (
    cluster_id,
    jvm_command,
    log4j2_properties,
    render_properties,
    server_properties,
)
from oms_dev.devstack.kafka.fetch import (
    DevstackError,
    default_version,
    fetch,
    kafka_home,
    local_dir,
    require_java,
)
from oms_dev.devstack.kafka.secure import BrokerSecurity
from oms_dev.devstack.net import free_port, port_open


def _set_pdeathsig() -> None:
    # Runs in the child between fork and exec: the kernel sends SIGTERM to the broker when
    # the process (thread) that started it dies, so a killed test run leaves no orphan JVM.
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class KafkaBroker:
    """One single-node KRaft broker: its ports, data dir and process.

    ``data_dir`` holds ``server.properties``, the log4j2 config, ``broker.log``, the pid file
    and the Kafka log dir (``logs/``); it survives restarts (the storage is formatted once).
    With ``security`` the client listener is SASL_SSL, its users are created when the storage
    is formatted and ACLs are enforced (:mod:`oms_dev.devstack.kafka.secure`).
    """

    data_dir: Path
    port: int = 9092
    controller_port: int = 9093
    host: str = "127.0.0.1"
    version: str = field(default_factory=default_version)
    heap: str = "512m"
    partitions: int = 8
    log_level: str = "INFO"
    root: Path | None = None
    extra_config: dict[str, str] = field(default_factory=dict)
    security: BrokerSecurity | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    # -- construction helpers

    @classmethod
    def from_settings(
        cls, kafka: KafkaSettings | None = None, data_dir: Path | None = None, **kw: object
    ) -> KafkaBroker:
        """The developer broker described by settings (bootstrap host:port, version)."""
        kafka = kafka or KafkaSettings()
        host, _, port = kafka.bootstrap.split(",")[0].rpartition(":")
        return cls(
            data_dir=data_dir or local_dir() / "kafka-data",
            host=host or "127.0.0.1",
            port=int(port),
            controller_port=int(port) + 1,
            version=kafka.version,
            partitions=kafka.partitions,
            **kw,  # type: ignore[arg-type]
        )

    @classmethod
    def isolated(cls, data_dir: Path, **kw: object) -> KafkaBroker:
        """A broker on two free ports with its own data dir (tests, benchmarks)."""
        port = free_port()
        controller = free_port()
        while controller == port:
            controller = free_port()
        return cls(data_dir=data_dir, port=port, controller_port=controller, **kw)  # type: ignore[arg-type]

    # -- paths

    @property
    def bootstrap(self) -> str:
        """``host:port`` for clients."""
        return f"{self.host}:{self.port}"

    @property
    def libs(self) -> Path:
        return kafka_home(self.version, self.root) / "libs"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def stdout_file(self) -> Path:
        return self.data_dir / "broker.out"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    # -- configuration

    def server_properties(self) -> dict[str, str]:
        """The broker configuration, as written to ``server.properties``."""
        extra = dict(self.extra_config)
        if self.security is not None:
            extra = {
                **self.security.server_properties(self.host, self.port, self.controller_port),
                **extra,
            }
        return server_properties(
            host=self.host,
            port=self.port,
            controller_port=self.controller_port,
            log_dir=self.log_dir,
            partitions=self.partitions,
            extra=extra,
        )

    def admin_connection(self) -> KafkaConnection:
        """How tooling connects: plaintext, or SASL_SSL as the admin super user."""
        if self.security is None:
            return KafkaConnection(self.bootstrap)
        return self.security.connection(self.bootstrap)

    def write_config(self) -> None:
        """Write ``server.properties`` and the log4j2 config into the data dir."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(render_properties(self.server_properties()))
        (self.data_dir / "log4j2.properties").write_text(
            log4j2_properties(self.log_file, self.log_level)
        )

    def _java_cmd(self, main: str, *args: str) -> list[str]:
        return jvm_command(
            require_java(),
            heap=self.heap,
            data_dir=self.data_dir,
            libs=self.libs,
            main=main,
            args=args,
        )

    def is_formatted(self) -> bool:
        return (self.log_dir / "meta.properties").exists()

    def format(self) -> None:
        """Format the KRaft storage once (a formatted log dir is left alone)."""
        if self.is_formatted():
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        cmd = self._java_cmd(
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id(),
            "-c",
            str(self.config_file),
            "--ignore-formatted",
            *(self.security.scram_arguments() if self.security is not None else ()),
        )
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=180)
        if proc.returncode != 0:
            text = proc.stdout + proc.stderr
            if self.security is not None:
                text = self.security.redact(text)
            out = text.strip().splitlines()[-10:]
            raise DevstackError("Kafka storage format failed:\n" + "\n".join(out))

    # -- process control

    def pid(self) -> int | None:
        """Pid of the running broker of this data dir (own child or from the pid file)."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) and _is_kafka(pid) else None

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self, *, die_with_parent: bool = False) -> int:
        """Fetch if needed, format once and start the broker in its own process group.

        Returns the pid. ``die_with_parent`` ties the JVM's life to the calling thread (use it
        from tests; never when starting from a worker thread, whose exit would kill it).
        Does not wait for readiness: see :meth:`wait_ready`.
        """
        existing = self.pid()
        if existing is not None:
            return existing
        if port_open(self.host, self.port):
            raise DevstackError(
                f"port {self.bootstrap} is taken by another process: stop it or choose --port"
            )
        fetch(self.version, self.root)
        self.write_config()
        self.format()
        out = self.stdout_file.open("ab")
        try:
            self._proc = subprocess.Popen(
                self._java_cmd("kafka.Kafka", str(self.config_file)),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Own process group: Ctrl-C in the terminal reaches only the supervisor, which
                # then stops the broker in order.
                start_new_session=True,
                preexec_fn=_set_pdeathsig if die_with_parent else None,
                cwd=self.data_dir,
            )
        finally:
            out.close()
        self.pid_file.write_text(f"{self._proc.pid}\n")
        return self._proc.pid

    async def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Wait until the port accepts and the broker answers a metadata request."""
        from aiokafka.admin import AIOKafkaAdminClient

        deadline = time.monotonic() + timeout_s
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise DevstackError(
                    f"Kafka exited with code {self._proc.returncode} during start-up; "
                    f"see {self.log_file} and {self.stdout_file}"
                )
            if port_open(self.host, self.port):
                admin = AIOKafkaAdminClient(
                    **self.admin_connection().aiokafka(request_timeout_ms=10_000)
                )
                try:
                    await admin.start()
                    brokers = (await admin.describe_cluster()).get("brokers") or []
                    if brokers:
                        return
                except Exception as exc:  # not ready yet: retry until the deadline
                    last = exc
                finally:
                    with contextlib.suppress(Exception):
                        await admin.close()
            await asyncio.sleep(0.3)
        raise DevstackError(
            f"Kafka on {self.bootstrap} not ready after {timeout_s:.0f}s ({last!r}); "
            f"see {self.log_file}"
        )

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM the broker's process group, SIGKILL after ``timeout``; True if one ran."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._alive_or_reap(pid):
            time.sleep(0.1)
        if self._alive_or_reap(pid):
            _signal_group(pid, signal.SIGKILL)
            end = time.monotonic() + 10
            while time.monotonic() < end and self._alive_or_reap(pid):
                time.sleep(0.1)
        self._proc = None
        self.pid_file.unlink(missing_ok=True)
        return True

    def _alive_or_reap(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None
        return _alive(pid)

    async def astart(self, timeout_s: float = 180.0, *, die_with_parent: bool = False) -> None:
        """Start (see :meth:`start`) and wait until ready; stops the broker if that fails."""
        self.start(die_with_parent=die_with_parent)
        try:
            await self.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    async def astop(self, timeout_s: float = 30.0) -> bool:
        """:meth:`stop` without blocking the event loop."""
        return await asyncio.to_thread(self.stop, timeout_s)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _is_kafka(pid: int) -> bool:
    # Guards against a stale pid file whose pid was reused by an unrelated process.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"kafka.Kafka" in cmdline


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
