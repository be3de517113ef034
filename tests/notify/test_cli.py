"""``oms notify settings|ack|log`` as an operator runs them (subprocesses, real broker)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from oms.schemas import Topic
from oms.settings import Settings
from oms_dev.harness import settings_env
from oms_dev.notify_fakes import FakeProviders
from tests.notify.conftest import order_event, publish_events, records, running, wecom_channel


def oms(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "oms.cli.main", "notify", *args],
        env={**os.environ, **settings_env(settings), "COLUMNS": "200"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


async def test_settings_log_and_ack_from_the_command_line(
    nsettings: Settings, fakes: FakeProviders, tmp_path: Path
) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"language": "zh", "channels": [wecom_channel(fakes)]}))
    stored = oms(nsettings, "settings", "acct-cli", "-f", str(good))
    assert stored.returncode == 0, stored.stderr
    shown = oms(nsettings, "settings", "acct-cli")
    assert json.loads(shown.stdout)["language"] == "zh"
    # In a thread: the fake provider answers from this test's event loop.
    tested = await asyncio.to_thread(
        oms, nsettings, "test", "acct-cli", "--message", "hello from the desk"
    )
    assert tested.returncode == 0 and "wecom: sent" in tested.stdout, tested.stderr
    assert "hello from the desk" in fakes.sent("wecom")[-1]["body"]["markdown"]["content"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"channels": [{"kind": "pager"}]}))
    refused = oms(nsettings, "settings", "acct-cli", "-f", str(bad))
    assert refused.returncode == 2 and "unknown_channel" in refused.stderr
    async with running(nsettings):
        await publish_events(nsettings, [order_event("acct-cli", 1)])
        await fakes.wait_for("wecom", 2)
        await records(nsettings, 1)
    log = oms(nsettings, "log", "--account", "acct-cli", "--json")
    (line,) = log.stdout.strip().splitlines()
    assert json.loads(line)["status"] == "sent" and json.loads(line)["channel"] == "wecom"
    assert oms(nsettings, "ack", "system_error:x").returncode == 0
    from oms_dev.devstack.testing import consume_json

    acks = await consume_json(
        nsettings.kafka.bootstrap, nsettings.topic(Topic.NOTIFICATION_ACKS), 1
    )
    assert acks[0][0] == "system_error:x" and acks[0][1]["by"] == "cli"
