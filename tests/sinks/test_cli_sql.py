"""Output of `oms sql` in its three formats."""

from __future__ import annotations

import orjson
import pytest
from rich.console import Console

from oms.cli.sql import OutputFormat, render
from oms.sinks.query import QueryResult

RESULT = QueryResult(
    columns=["order_id", "price", "meta"],
    types=["String", "Nullable(Float64)", "String"],
    rows=[["o-1", 50000.5, '{"a":1}'], ["o-2", None, "{}"]],
    elapsed_ms=1.5,
)


def test_table(capsys: pytest.CaptureFixture[str]) -> None:
    render(RESULT, OutputFormat.TABLE, Console(width=120, force_terminal=False))
    out = capsys.readouterr().out
    assert "order_id" in out and "50000.5" in out and "NULL" in out and "2 rows" in out


def test_json(capsys: pytest.CaptureFixture[str]) -> None:
    render(RESULT, OutputFormat.JSON)
    assert orjson.loads(capsys.readouterr().out)["rows"][1] == ["o-2", None, "{}"]


def test_csv(capsys: pytest.CaptureFixture[str]) -> None:
    render(RESULT, OutputFormat.CSV)
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["order_id,price,meta", 'o-1,50000.5,"{""a"":1}"', "o-2,,{}"]
