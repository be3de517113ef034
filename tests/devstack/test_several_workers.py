"""`make run WORKERS=3` (`oms up --workers 3`): the plan gives every worker its own web port
and data dir, none colliding with another service, all in one consumer group."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from oms.settings import Settings
from oms_dev.devstack.stack import Supervisor


def test_three_workers_get_distinct_ports_and_data_dirs(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    plan = Supervisor(settings, workers=3, root=tmp_path).plan("127.0.0.1:9092", tmp_path / "s")
    workers = [c for c in plan if c.name.startswith("worker-")]
    assert [w.name for w in workers] == ["worker-0", "worker-1", "worker-2"]
    ports = [urlparse(c.health_url).port for c in plan if c.health_url]
    assert len(ports) == len(set(ports)), ports
    assert settings.paper.port not in ports
    for worker in workers:
        port = worker.args[worker.args.index("--web-port") + 1]
        assert worker.health_url == f"http://127.0.0.1:{port}/health"
    assert len({w.env["OMS_DATA_DIR"] for w in workers}) == 3
    # One consumer group: the Faust app id is not made per worker.
    assert len({w.env.get("OMS_WORKER__APP_ID") for w in workers}) == 1
