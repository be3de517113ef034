"""The fan-out in the default stack (`make run` / `oms up`) and its switch."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from oms import healthcheck
from oms.cli.main import app
from oms.settings import AccessSettings, Settings, get_settings
from oms_dev.devstack.stack import Supervisor
from oms_dev.harness import OmsServices


def _plan(settings: Settings, tmp_path: Path) -> dict[str, list[str]]:
    sup = Supervisor(settings, root=tmp_path)
    return {c.name: c.args for c in sup.plan("127.0.0.1:9092", tmp_path / "secrets.json")}


def test_oms_up_runs_the_fanout_by_default(tmp_path: Path) -> None:
    plan = _plan(Settings(data_dir=tmp_path), tmp_path)
    assert plan["fanout"] == ["fanout"]
    # After the services that write what it copies.
    assert list(plan)[-1] == "fanout"


def test_per_account_topics_off_leaves_it_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMS_ACCESS__PER_ACCOUNT_TOPICS", "false")
    settings = Settings(data_dir=tmp_path)
    assert settings.access == AccessSettings(per_account_topics=False)
    assert "fanout" not in _plan(settings, tmp_path)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["fanout"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "OMS_ACCESS__PER_ACCOUNT_TOPICS" in result.output


def test_the_harness_and_the_container_check_know_it(tmp_path: Path) -> None:
    services = OmsServices(Settings(data_dir=tmp_path), tmp_path / "logs")
    assert services.add_fanout().args[0] == "fanout"
    assert healthcheck.check("fanout")
    assert CliRunner().invoke(app, ["fanout", "--help"]).exit_code == 0
