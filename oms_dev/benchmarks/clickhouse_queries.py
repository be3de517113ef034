"""``oms bench queries``: the README's analyst queries over a large history in embedded
ClickHouse (chDB through clickhouse-connect), p50/p99 per query.

The tables are the sink's own (``oms.sinks.clickhouse.migrations``, materialized views
included). The history is generated *inside* ClickHouse with bulk ``INSERT ... SELECT FROM
numbers()`` in chunks, which is how a large backfill is loaded and keeps the generator from
being the thing measured:

* ``events`` order events, four per order (``submitted``, ``open``, ``partially_filled``,
  ``filled``; every tenth order ``submitted``, ``rejected`` with a reason code, then two
  ``duplicate`` re-sends), spread
  over the last 30 days, 100 accounts, 4 instruments; the matching ``orders`` snapshots (one
  per order) and one ``executions`` fill per filled order;
* ``position_changes`` position records over 100 accounts x 4 instruments (versions in
  order per position, cumulative counters consistent), feeding ``positions`` and
  ``position_daily_stats`` through the sink's materialized views;
* market ticks, one per instrument per 10 s sample over the same 30 days.

Each query runs once to warm up, then ``repeat`` times; p50/p99 are nearest-rank
percentiles of those wall-clock times (the query's result is fetched in full).
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oms_dev.benchmarks.e2e import percentile

README = Path(__file__).resolve().parents[2] / "README.md"
INSTRUMENTS = ("BTC-PERPETUAL", "ETH-PERPETUAL", "BTC-27DEC26", "ETH-27DEC26")
DAY_MS = 86_400_000
SPAN_MS = 30 * DAY_MS


@dataclass
class QueryBenchConfig:
    events: int = 10_000_000
    position_changes: int = 1_000_000
    repeat: int = 10
    chunk: int = 1_000_000
    path: Path | None = None  # embedded database directory (default: a fresh temp dir)


def extract_queries(markdown: str) -> list[str]:
    """Every statement of every ```sql block, comment lines dropped, split on ';'."""
    blocks = re.findall(r"```sql\n(.*?)```", markdown, flags=re.S)
    text = "\n".join(blocks)
    lines = [line for line in text.splitlines() if not line.strip().startswith("--")]
    return [q.strip() for q in "\n".join(lines).split(";") if q.strip()]


def extract_named_queries(markdown: str) -> list[tuple[str, str]]:
    """(name, query) pairs: the name is the ``-- comment`` right above the statement (the
    README's convention), else the statement's first line."""
    out = []
    for block in re.findall(r"```sql\n(.*?)```", markdown, flags=re.S):
        name: str | None = None
        body: list[str] = []
        for line in block.splitlines():
            stripped = line.strip()
            if stripped.startswith("--"):
                if not body:  # comment lines above a statement name it, joined
                    text = stripped.lstrip("-").strip()
                    name = f"{name} {text}" if name else text
                continue
            body.append(line)
            if stripped.endswith(";"):
                query = "\n".join(body).strip().rstrip(";").strip()
                if query:
                    out.append((name or query.splitlines()[0], query))
                name, body = None, []
        query = "\n".join(body).strip().rstrip(";").strip()
        if query:
            out.append((name or query.splitlines()[0], query))
    return out


def readme_queries() -> list[tuple[str, str]]:
    """The analyst queries of this checkout's README, named."""
    return extract_named_queries(README.read_text())


def _ts(ms_expr: str) -> str:
    """A DateTime64(3) ``ms_expr`` milliseconds before now (the data ends now)."""
    return f"fromUnixTimestamp64Milli(toInt64(toUnixTimestamp64Milli(now64(3)) - ({ms_expr})))"


def _order_events_sql(start: int, count: int, total: int) -> str:
    step = max(1, SPAN_MS // max(1, total))
    return f"""
    INSERT INTO order_events (event_id, event_type, order_id, account_id, request_id,
        instrument_name, status, previous_status, reason_code, message, direction, amount,
        price, filled_amount, average_price, exchange_order_id, version, timestamp,
        request_created_at, details, kafka_partition, kafka_offset)
    SELECT concat(oid, ':', toString(v), ':', et) AS event_id, et, oid,
           concat('acct-', toString(o % 100)), concat('r-', toString(o)),
           arrayElement({list(INSTRUMENTS)}, o % 4 + 1), if(et = 'duplicate', 'rejected', et),
           multiIf(v = 1, NULL, o % 10 = 0, if(v = 2, 'submitted', 'rejected'),
                   arrayElement(['submitted', 'open', 'partially_filled'], v - 1)),
           multiIf(et = 'rejected', arrayElement(['invalid_amount', 'price_off_tick',
              'not_enough_funds', 'risk_limit_exceeded'], o % 4 + 1),
              et = 'duplicate', 'duplicate_request', NULL),
           NULL, if(o % 2 = 0, 'buy', 'sell'), 10 * (1 + o % 50),
           if(o % 4 < 2, 60000.0, 3000.0) + (o % 100) * 0.5,
           multiIf(et = 'filled', 10 * (1 + o % 50), et = 'partially_filled', 10, 0),
           if(et IN ('filled', 'partially_filled'), 60000.0, NULL),
           if(v > 1 AND o % 10 != 0, concat('x-', toString(o)), NULL), v, ts,
           ts - toIntervalMillisecond(5 + (number % 200)), '{{}}', toInt32(o % 8), number
    FROM (
        SELECT number, intDiv(number, 4) AS o, number % 4 + 1 AS v,
               concat('o-', toString(intDiv(number, 4))) AS oid,
               if(o % 10 = 0,
                  arrayElement(['submitted', 'rejected', 'duplicate', 'duplicate'], v),
                  arrayElement(['submitted', 'open', 'partially_filled', 'filled'], v)) AS et,
               {_ts(f"({total} - number) * {step}")} AS ts
        FROM numbers({start}, {count})
    )"""


def _orders_sql(start: int, count: int, total_orders: int) -> str:
    step = max(1, SPAN_MS // max(1, total_orders))
    return f"""
    INSERT INTO orders (order_id, version, request_id, account_id, instrument_name, direction,
        order_type, amount, price, time_in_force, post_only, reduce_only, execute_immediately,
        priority, conditions, metadata, status, exchange_order_id, filled_amount,
        average_price, fee, reason_code, created_at, updated_at, exchange_updated_at,
        trade_ids, last_event_id)
    SELECT concat('o-', toString(number)), if(rej, 2, 4), concat('r-', toString(number)),
           concat('acct-', toString(number % 100)),
           arrayElement({list(INSTRUMENTS)}, number % 4 + 1),
           if(number % 2 = 0, 'buy', 'sell'), 'limit', 10 * (1 + number % 50),
           if(number % 4 < 2, 60000.0, 3000.0) + (number % 100) * 0.5, 'good_til_cancelled',
           false, false, true, 'normal', '[]', '{{}}', if(rej, 'rejected', 'filled'),
           if(rej, NULL, concat('x-', toString(number))),
           if(rej, 0, 10 * (1 + number % 50)), if(rej, NULL, 60000.0), 0.0001,
           if(rej, 'invalid_amount', NULL), ts, ts, ts,
           if(rej, [], [concat('t-', toString(number))]), ''
    FROM (SELECT number, number % 10 = 0 AS rej,
                 {_ts(f"({total_orders} - number) * {step}")} AS ts
          FROM numbers({start}, {count}))"""


def _executions_sql(start: int, count: int, total_orders: int) -> str:
    step = max(1, SPAN_MS // max(1, total_orders))
    return f"""
    INSERT INTO executions (order_id, trade_id, account_id, instrument_name, direction, amount,
        price, fee, fee_currency, liquidity, timestamp, exchange_order_id, report_id, source,
        received_at)
    SELECT concat('o-', toString(number)), concat('t-', toString(number)),
           concat('acct-', toString(number % 100)),
           arrayElement({list(INSTRUMENTS)}, number % 4 + 1),
           if(number % 2 = 0, 'buy', 'sell'), 10 * (1 + number % 50),
           if(number % 4 < 2, 60000.0, 3000.0) + (number % 100) * 0.5 + (number % 7) - 3,
           0.0001, 'BTC', if(number % 3 = 0, 'M', 'T'), ts + toIntervalMillisecond(20),
           concat('x-', toString(number)), concat('rep-', toString(number)), 'rpc',
           ts + toIntervalMillisecond(25)
    FROM (SELECT number, {_ts(f"({total_orders} - number) * {step}")} AS ts
          FROM numbers({start}, {count}) WHERE number % 10 != 0)"""


def _ticks_sql(start: int, count: int, total: int) -> str:
    # One tick per instrument per 10 s, ending now.
    return f"""
    INSERT INTO market_ticks (instrument_name, bucket, timestamp, last_price, mark_price,
        index_price, best_bid_price, best_ask_price, state, received_at)
    SELECT arrayElement({list(INSTRUMENTS)}, number % 4 + 1) AS name, ts, ts, p, p + 0.5,
           p - 0.5, p - 1, p + 1, 'open', ts
    FROM (SELECT number,
                 {_ts(f"intDiv({total} - number, 4) * 10000")} AS ts,
                 if(number % 4 < 2, 60000.0, 3000.0) * (1 + 0.01 * sin(number / 4000)) AS p
          FROM numbers({start}, {count}))"""


def _position_changes_sql(start: int, count: int, total: int) -> str:
    # 400 positions (account x instrument); record n of a position has version n + 1 and
    # cumulative counters consistent with n + 1 fills of 10 at the record's price.
    step = max(1, SPAN_MS // max(1, total))
    return f"""
    INSERT INTO position_changes (record_id, account_id, instrument_name, record_type, size,
        size_before, average_price, average_price_before, realized_pnl, fee, order_id,
        trade_id, direction, trade_amount, trade_price, actor, timestamp, kind,
        realized_pnl_change, fees_total, version, needs_review, fills_total, turnover_total,
        trade_notional)
    SELECT concat('pr-', toString(number)), acct, inst, 'execution', size, size - 10,
           price, price, 0.001 * v, 0.0001, concat('o-', toString(number)),
           concat('t-', toString(number)), 'buy', 10, price, 'keeper', ts,
           if(inst LIKE '%PERPETUAL', 'inverse', 'future'), 0.001, 0.0001 * v, v,
           pos = 0 AND v % 5000 = 0, v, 10.0 * v * price, 10.0 * price
    FROM (SELECT number, number % 400 AS pos, intDiv(number, 400) + 1 AS v,
                 if(pos % 100 = 0, 'demo', concat('acct-', toString(pos % 100))) AS acct,
                 arrayElement({list(INSTRUMENTS)}, intDiv(pos, 100) + 1) AS inst,
                 if(pos % 2 = 0, 10.0, -10.0) * (1 + (v + pos) % 40) AS size,
                 if(inst LIKE 'BTC%', 60000.0, 3000.0) + (number % 100) * 0.5 AS price,
                 {_ts(f"({total} - number) * {step}")} AS ts
          FROM numbers({start}, {count}))"""


def _chunks(total: int, chunk: int) -> list[tuple[int, int]]:
    return [(s, min(chunk, total - s)) for s in range(0, total, chunk)]


def load_history(
    client: Any, config: QueryBenchConfig, on_status: Callable[[str], None]
) -> dict[str, Any]:
    """Bulk-generate the history; returns row counts and rows/s of the load."""
    orders = max(1, config.events // 4)
    ticks = max(4, (SPAN_MS // 10_000) * 4 // 10)  # 3 days of 10 s samples, 4 instruments
    plan: list[tuple[str, Callable[[int, int, int], str], int]] = [
        ("order_events", _order_events_sql, config.events),
        ("orders", _orders_sql, orders),
        ("executions", _executions_sql, orders),
        ("market_ticks", _ticks_sql, ticks),
        ("position_changes", _position_changes_sql, config.position_changes),
    ]
    loaded: dict[str, Any] = {}
    t0 = time.perf_counter()
    for table, make_sql, total in plan:
        start = time.perf_counter()
        for offset, count in _chunks(total, config.chunk):
            on_status(f"loading {table}: {offset + count:,} / {total:,}")
            client.command(make_sql(offset, count, total))
        loaded[table] = {
            "rows": int(client.command(f"SELECT count() FROM {table}")),
            "seconds": round(time.perf_counter() - start, 2),
        }
    loaded["seconds"] = round(time.perf_counter() - t0, 2)
    return loaded


def time_queries(
    client: Any, queries: list[tuple[str, str]], repeat: int, on_status: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Each query once to warm up, then ``repeat`` timed runs: p50/p99/max in ms."""
    out = []
    for i, (name, sql) in enumerate(queries, 1):
        on_status(f"query {i}/{len(queries)}: {name}")
        rows = len(client.query(sql).result_rows)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            client.query(sql).result_rows  # noqa: B018 - fetched in full, as a reader would
            times.append((time.perf_counter() - start) * 1000)
        out.append(
            {
                "name": name,
                "rows": rows,
                "runs": repeat,
                "p50_ms": round(percentile(times, 50), 2),
                "p99_ms": round(percentile(times, 99), 2),
                "max_ms": round(max(times), 2),
            }
        )
    return out


def run_query_bench(
    config: QueryBenchConfig, on_status: Callable[[str], None] = print
) -> dict[str, Any]:
    """Load the history into a fresh embedded database, time every README query."""
    import clickhouse_connect

    from oms.settings import SinkSettings
    from oms.sinks.clickhouse.migrations import apply_migrations

    path = config.path or Path(tempfile.mkdtemp(prefix="oms-bench-queries-"))
    client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
    try:
        apply_migrations(client, SinkSettings())
        loaded = load_history(client, config, on_status)
        queries = readme_queries()
        timed = time_queries(client, queries, config.repeat, on_status)
    finally:
        client.close()
    p99s = [q["p99_ms"] for q in timed]
    return {
        "events": config.events,
        "position_changes": config.position_changes,
        "loaded": loaded,
        "load_rows_per_s": round(
            sum(v["rows"] for k, v in loaded.items() if isinstance(v, dict))
            / max(loaded["seconds"], 1e-9),
            1,
        ),
        "queries": timed,
        "query_count": len(timed),
        "slowest_p99_ms": max(p99s) if p99s else None,
        "median_p50_ms": round(percentile([q["p50_ms"] for q in timed], 50), 2),
    }


__all__ = [
    "QueryBenchConfig",
    "extract_named_queries",
    "extract_queries",
    "readme_queries",
    "run_query_bench",
]
