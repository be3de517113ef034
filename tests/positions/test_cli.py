"""The keeper in `oms up` and the `oms positions` / `oms stats` commands."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from oms.cli.main import app
from oms.settings import Settings
from oms_dev.devstack.stack import Supervisor


def test_oms_up_runs_the_keeper_with_a_health_check(tmp_path: Path) -> None:
    sup = Supervisor(Settings(data_dir=tmp_path), root=tmp_path)
    children = {c.name: c for c in sup.plan("127.0.0.1:9092", tmp_path / "secrets.json")}
    keeper = children["positions"]
    assert keeper.args[:2] == ["positions", "run"]
    assert keeper.health_url == "http://127.0.0.1:6067/health"
    assert list(children).index("positions") < list(children).index("sink")


def test_positions_and_stats_commands_are_registered() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["positions", "--help"])
    assert result.exit_code == 0
    for command in ("run", "list", "history", "ack"):
        assert command in result.output
    assert runner.invoke(app, ["stats", "--help"]).exit_code == 0
    assert runner.invoke(app, ["positions", "stats", "--help"]).exit_code == 0
