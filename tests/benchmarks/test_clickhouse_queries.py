"""Extraction of the README's analyst queries, and the query benchmark on a tiny history."""

from __future__ import annotations

from pathlib import Path

from oms_dev.benchmarks.clickhouse_queries import (
    QueryBenchConfig,
    extract_named_queries,
    extract_queries,
    readme_queries,
    run_query_bench,
)

MARKDOWN = """
Some text.

```sql
-- orders per status
SELECT status, count() FROM orders FINAL GROUP BY status;
-- two lines,
-- one name
SELECT a,
       b
FROM t;
SELECT 1
```

```python
print("not sql;")
```

```sql
-- no semicolon at the end
SELECT 2
```
"""


def test_extract_queries_matches_the_readme_test_convention() -> None:
    assert extract_queries(MARKDOWN) == [
        "SELECT status, count() FROM orders FINAL GROUP BY status",
        "SELECT a,\n       b\nFROM t",
        "SELECT 1\n\nSELECT 2",  # the README test joins blocks before splitting on ';'
    ]


def test_named_queries_take_the_comment_above() -> None:
    assert extract_named_queries(MARKDOWN) == [
        ("orders per status", "SELECT status, count() FROM orders FINAL GROUP BY status"),
        ("two lines, one name", "SELECT a,\n       b\nFROM t"),
        ("SELECT 1", "SELECT 1"),
        ("no semicolon at the end", "SELECT 2"),
    ]


def test_every_readme_query_is_benchmarked() -> None:
    named = readme_queries()
    assert len(named) >= 4
    # Same statements as tests/sinks/test_readme_sql.py runs (the README ends each with ';').
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert [q for _, q in named] == extract_queries(readme)
    assert all(not name.startswith("SELECT") for name, _ in named)  # each has its comment


def test_query_bench_on_a_tiny_history(tmp_path: Path) -> None:
    config = QueryBenchConfig(events=4_000, position_changes=2_000, repeat=2, path=tmp_path)
    result = run_query_bench(config, on_status=lambda _: None)
    loaded = result["loaded"]
    assert loaded["order_events"]["rows"] == 4_000  # exactly the events asked for
    assert loaded["orders"]["rows"] == 1_000
    assert loaded["executions"]["rows"] == 900
    assert loaded["position_changes"]["rows"] == 2_000
    by_name = {q["name"]: q for q in result["queries"]}
    assert len(by_name) == len(readme_queries())
    assert by_name["orders per status"]["rows"] == 2  # filled and rejected
    # Rejected orders are multiples of 10, so even: two of the four reason codes.
    assert by_name["why requests were refused"]["rows"] == 2
    # The positions view (through the sink's materialized view) holds the 400 positions.
    assert by_name["every change of one position, with who made it"]["rows"] == 2_000 // 400
    for q in result["queries"]:
        assert q["runs"] == 2 and q["p50_ms"] <= q["p99_ms"] <= q["max_ms"]
