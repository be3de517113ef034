"""Stack API, supervisor behaviour, secrets and the devstack command line."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from oms.kafka.admin import list_topics
from oms.schemas.topics import Topic
from oms.secrets import QueryTokens, load_secrets_file
from oms.settings import Settings
from oms_dev.devstack.kafka import INSTALL_HINT, KafkaBroker
from oms_dev.devstack.net import port_open
from oms_dev.devstack.stack import Child, Stack, Supervisor, ensure_demo_secrets


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


@pytest.mark.kafka
@pytest.mark.timeout(400)
async def test_isolated_stack_starts_creates_topics_and_restarts_on_same_data(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path)
    async with Stack.isolated(tmp_path / "stack", settings, partitions=2) as stack:
        assert stack.started_broker
        assert stack.settings.kafka.bootstrap == stack.bootstrap
        names = await list_topics(stack.bootstrap, "oms.")
        assert set(names) >= {f"oms.{t.value}" for t in Topic}
        pid = stack.broker.pid()
        assert pid is not None
        host, port = stack.bootstrap.rsplit(":", 1)
    assert not _alive(pid), "broker left running after the stack exited"
    assert not port_open(host, int(port))
    # Same data dir again: storage is not formatted twice and topics survived.
    broker = KafkaBroker(
        data_dir=tmp_path / "stack" / "kafka",
        port=int(port),
        controller_port=stack.broker.controller_port,
    )
    assert broker.is_formatted()
    try:
        await broker.astart(240, die_with_parent=True)
        assert set(await list_topics(broker.bootstrap, "oms.")) == set(names)
    finally:
        await broker.astop()


def test_demo_secrets_created_private_and_kept(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, accounts=["demo"])
    path = ensure_demo_secrets(settings)
    assert path == tmp_path / "secrets.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = load_secrets_file(path)["demo"]
    assert first.client_secret and len(first.client_secret) >= 32
    ensure_demo_secrets(settings)
    assert load_secrets_file(path)["demo"] == first, "existing secrets must not be replaced"


def test_desks_get_query_tokens_once(tmp_path: Path) -> None:
    """With desks, the sink's query endpoint wants a token: each desk and the operator get
    one, kept across starts, in the private secrets file."""
    settings = Settings(
        data_dir=tmp_path, accounts=["a1", "b1"], desks={"da": ["a1"], "db": ["b1"]}
    )
    path = ensure_demo_secrets(settings)
    tokens = QueryTokens(settings.desks, path)
    first = (tokens.for_desk("da"), tokens.for_desk("db"), tokens.operator)
    assert all(t and len(t) >= 32 for t in first) and len(set(first)) == 3
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ensure_demo_secrets(settings)
    again = QueryTokens(settings.desks, path)
    assert (again.for_desk("da"), again.for_desk("db"), again.operator) == first
    assert load_secrets_file(path)["a1"], "the exchange credentials are still there"


async def _until(predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


def _child(tmp_path: Path, name: str, code: str) -> Child:
    return Child(
        name,
        [],
        dict(os.environ),
        tmp_path / "logs" / f"{name}.log",
        command=[sys.executable, "-c", code],
    )


async def test_supervisor_restarts_crashed_child_and_stops_in_reverse_order(
    tmp_path: Path,
) -> None:
    pidfile = tmp_path / "grandchild.pid"
    # A child that spawns a grandchild in its group: stopping must take both.
    spawner = (
        "import subprocess, sys, time;"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']);"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid));"
        "time.sleep(600)"
    )
    events: list[str] = []
    sup = Supervisor(Settings(data_dir=tmp_path), root=tmp_path, on_event=events.append)
    sup.max_backoff_s = 0.5
    sup.children = [
        _child(tmp_path, "steady", "import time; time.sleep(600)"),
        _child(tmp_path, "crasher", "import sys; sys.exit(3)"),
        _child(tmp_path, "spawner", spawner),
    ]
    for child in sup.children:
        child.start()
    stop = asyncio.Event()
    task = asyncio.create_task(sup._supervise(stop))
    await _until(lambda: sup.children[1].restarts >= 2)
    await _until(pidfile.exists)
    grandchild = int(pidfile.read_text())
    pids = [c.pid for c in sup.children]
    stop.set()
    await task
    await sup.shutdown()
    stopped = [e.split()[1] for e in events if e.startswith("stopped ")]
    assert stopped == ["spawner", "crasher", "steady"]
    for pid in [*pids, grandchild]:
        assert pid is not None and not _alive(pid), f"orphan {pid}"
    assert "exited with 3" in " ".join(events)


def test_table_renders(tmp_path: Path) -> None:
    sup = Supervisor(Settings(data_dir=tmp_path), root=tmp_path)
    sup.children = [_child(tmp_path, "x", "pass")]
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(sup.table())
    text = console.export_text()
    for column in ("process", "pid", "state", "restarts", "uptime"):
        assert column in text


def test_missing_java_prints_one_line_and_fails(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path), "OMS_LOCAL_DIR": str(tmp_path / "local")}
    proc = subprocess.run(
        [sys.executable, "-m", "oms_dev.devstack.kafka", "fetch", "--version", "4.1.2"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and INSTALL_HINT in lines[0], proc.stderr


def test_status_of_stopped_broker(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "oms_dev.devstack.kafka",
            "status",
            "--data-dir",
            str(tmp_path),
            "--port",
            "1",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert "not running" in proc.stdout
