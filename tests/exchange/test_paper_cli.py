"""The ``oms paper-exchange`` command function, run for real in a subprocess."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

from oms.cli.paper import paper_exchange
from oms.exchange.paper.testing import RpcClient

REPO = Path(__file__).resolve().parents[2]
LAUNCH = (
    "import typer; from oms.cli.paper import paper_exchange; "
    "app = typer.Typer(); app.command('paper-exchange')(paper_exchange); app()"
)


def test_command_exposes_the_knobs() -> None:
    app = typer.Typer()
    app.command("paper-exchange")(paper_exchange)
    command = typer.main.get_command(app)
    flags = {opt for param in command.params for opt in param.opts}
    for flag in (
        "--host",
        "--port",
        "--seed",
        "--accounts-file",
        "--tick-interval",
        "--drop-every",
        "--latency-ms",
        "--reject-fraction",
        "--rate-limit-fraction",
        "--no-rate-limits",
    ):
        assert flag in flags
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0


async def test_cli_serves_deribit_api(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        LAUNCH,
        "--port",
        "0",
        "--seed",
        "3",
        "--no-rate-limits",
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        url = None
        async with asyncio.timeout(20):
            while url is None:
                line = (await proc.stderr.readline()).decode()
                assert line, "exited before listening"
                match = re.search(r"url=(ws://\S+)", line)
                url = match.group(1) if match else None
        client = await RpcClient.connect(url)
        try:
            assert isinstance(await client.result("public/get_time"), int)
            await client.auth("cli", "cli-secret")
            stats = await client.result("admin/get_stats")
            assert "cli" in stats["accounts"]
        finally:
            await client.close()
    finally:
        proc.terminate()
        await proc.wait()
