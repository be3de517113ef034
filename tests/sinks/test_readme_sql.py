"""Every analyst query in the README runs against the sink's real schema."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest

from oms.settings import SinkSettings
from oms.sinks.clickhouse.migrations import apply_migrations

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_queries() -> list[str]:
    blocks = re.findall(r"```sql\n(.*?)```", README.read_text(), flags=re.S)
    text = "\n".join(blocks)
    lines = [line for line in text.splitlines() if not line.strip().startswith("--")]
    return [q.strip() for q in "\n".join(lines).split(";") if q.strip()]


def test_readme_has_queries() -> None:
    assert len(readme_queries()) >= 4


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Any:
    client = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path_factory.mktemp('ch')}")
    apply_migrations(client, SinkSettings())
    return client


@pytest.mark.parametrize("query", readme_queries())
def test_readme_query_runs(query: str, client: Any) -> None:
    client.query(query)
