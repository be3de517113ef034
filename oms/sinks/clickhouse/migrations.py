"""Numbered, idempotent schema migrations, recorded in ``schema_migrations``.

How rows stay correct when the sink replays (read this before writing a query):

* Retried inserts of the same batch carry the same ``insert_deduplication_token``
  (table + Kafka topic/partition/offset ranges), and every table keeps
  ``non_replicated_deduplication_window`` recent tokens, so ClickHouse drops the retry.
* After a crash the sink re-reads from the last committed offset and may cut batches
  differently, so tokens differ and rows can land twice. Every table is therefore a
  ``ReplacingMergeTree`` whose sorting key is the row's natural identity (order_id,
  event_id, order_id+trade_id, instrument+sample bucket, ...): duplicates collapse on merges,
  and readers must collapse the rest with ``FINAL`` (or ``argMax``/``LIMIT 1 BY``).
  ``oms.sinks.queries`` does so; ad-hoc SQL should too, e.g.
  ``SELECT count() FROM executions FINAL``.
* No table is partitioned: ReplacingMergeTree only collapses rows within one partition,
  and a partition key derived from a timestamp that differs between two copies of a row
  (e.g. a fill seen in an RPC reply and in a subscription) would keep both.

Each migration is a list of ``IF NOT EXISTS`` statements, so a crash between the DDL and
the ``schema_migrations`` row just re-runs harmless statements next time.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from oms.schemas import DEFAULT_VENUE
from oms.settings import SinkSettings

# Tokens of this many recent inserts per table are remembered for retry deduplication.
DEDUP_WINDOW = 1_000
TABLE_SETTINGS = f"SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}"
TS = "DateTime64(3, 'UTC')"
LC = "LowCardinality(String)"
LCN = "LowCardinality(Nullable(String))"

# Tables with time-based retention and the column it counts from. orders (live state) and
# position_changes (the position audit trail) are kept: dropping them would lose state.
RETENTION_COLUMNS: dict[str, str] = {
    "order_events": "timestamp",
    "executions": "timestamp",
    "market_ticks": "timestamp",
    "dead_letters": "received_at",
    "notifications": "created_at",
    "metrics": "timestamp",
}


def _ttl(table: str, days: int) -> str:
    return f"TTL toDateTime({RETENTION_COLUMNS[table]}) + INTERVAL {days} DAY"


def _v1(sink: SinkSettings) -> list[str]:
    days = sink.retention_days
    # version, not updated_at: the order worker bumps version by exactly one on every applied
    # change, so it orders snapshots even when two changes share a millisecond or wall
    # clocks (worker restarts, exchange vs local time) step backwards. With updated_at a
    # stale snapshot replayed after a newer one could win the merge.
    orders = f"""
    CREATE TABLE IF NOT EXISTS orders (
        order_id String,
        version UInt64,
        request_id String,
        account_id {LC},
        instrument_name {LC},
        direction {LC},
        order_type {LC},
        amount Float64,
        price Nullable(Float64),
        trigger_price Nullable(Float64),
        time_in_force {LC},
        post_only Bool,
        reduce_only Bool,
        execute_immediately Bool,
        priority {LC},
        conditions String,
        metadata String,
        status {LC},
        exchange_order_id Nullable(String),
        filled_amount Float64,
        average_price Nullable(Float64),
        fee Float64,
        reason_code {LCN},
        reason_message Nullable(String),
        created_at {TS},
        submitted_at Nullable({TS}),
        updated_at {TS},
        exchange_updated_at {TS},
        trade_ids Array(String),
        last_event_id String,
        inserted_at {TS} DEFAULT now64(3)
    ) ENGINE = ReplacingMergeTree(version)
    ORDER BY order_id
    {TABLE_SETTINGS}"""
    order_events = f"""
    CREATE TABLE IF NOT EXISTS order_events (
        event_id String,
        event_type {LC},
        order_id String,
        account_id {LC},
        request_id Nullable(String),
        instrument_name {LCN},
        status {LCN},
        previous_status {LCN},
        reason_code {LCN},
        message Nullable(String),
        direction {LCN},
        amount Nullable(Float64),
        price Nullable(Float64),
        filled_amount Float64,
        average_price Nullable(Float64),
        exchange_order_id Nullable(String),
        version UInt64,
        timestamp {TS},
        request_created_at Nullable({TS}),
        details String,
        kafka_partition Int32,
        kafka_offset Int64,
        inserted_at {TS} DEFAULT now64(3)
    ) ENGINE = ReplacingMergeTree
    ORDER BY (order_id, event_id)
    {_ttl("order_events", days)}
    {TABLE_SETTINGS}"""
    # One row per fill: the same trade arrives in the RPC reply and the user.orders /
    # user.trades subscription, and again on reconciliation; (order_id, trade_id) is its identity.
    executions = f"""
    CREATE TABLE IF NOT EXISTS executions (
        order_id String,
        trade_id String,
        account_id {LC},
        instrument_name {LC},
        direction {LCN},
        amount Float64,
        price Float64,
        fee Float64,
        fee_currency {LCN},
        liquidity {LCN},
        timestamp {TS},
        exchange_order_id Nullable(String),
        report_id String,
        source {LC},
        received_at {TS},
        inserted_at {TS} DEFAULT now64(3)
    ) ENGINE = ReplacingMergeTree
    ORDER BY (order_id, trade_id)
    {_ttl("executions", days)}
    {TABLE_SETTINGS}"""
    # bucket = start of the tick_sample_ms period the tick fell in: one row per instrument
    # and period even if a replay samples a different tick of the same period.
    market_ticks = f"""
    CREATE TABLE IF NOT EXISTS market_ticks (
        instrument_name {LC},
        bucket {TS},
        timestamp {TS},
        last_price Nullable(Float64),
        mark_price Nullable(Float64),
        index_price Nullable(Float64),
        best_bid_price Nullable(Float64),
        best_bid_amount Nullable(Float64),
        best_ask_price Nullable(Float64),
        best_ask_amount Nullable(Float64),
        open_interest Nullable(Float64),
        state {LC},
        received_at {TS}
    ) ENGINE = ReplacingMergeTree
    ORDER BY (instrument_name, bucket)
    {_ttl("market_ticks", days)}
    {TABLE_SETTINGS}"""
    # A dead letter's own position on the dead-letters topic is its identity.
    dead_letters = f"""
    CREATE TABLE IF NOT EXISTS dead_letters (
        kafka_partition Int32,
        kafka_offset Int64,
        source_topic {LC},
        source_partition Nullable(Int32),
        source_offset Nullable(Int64),
        key Nullable(String),
        reason_code {LC},
        error String,
        payload String,
        payload_size UInt64,
        truncated Bool,
        received_at {TS},
        inserted_at {TS} DEFAULT now64(3)
    ) ENGINE = ReplacingMergeTree
    ORDER BY (kafka_partition, kafka_offset)
    {_ttl("dead_letters", days)}
    {TABLE_SETTINGS}"""
    return [orders, order_events, executions, market_ticks, dead_letters]


def _v2(sink: SinkSettings) -> list[str]:
    position_changes = f"""
    CREATE TABLE IF NOT EXISTS position_changes (
        record_id String,
        account_id {LC},
        instrument_name {LC},
        record_type {LC},
        size Float64,
        size_before Float64,
        average_price Nullable(Float64),
        average_price_before Nullable(Float64),
        realized_pnl Float64,
        unrealized_pnl Nullable(Float64),
        fee Float64,
        order_id Nullable(String),
        trade_id Nullable(String),
        direction {LCN},
        trade_amount Nullable(Float64),
        trade_price Nullable(Float64),
        actor {LC},
        timestamp {TS},
        inserted_at {TS} DEFAULT now64(3)
    ) ENGINE = ReplacingMergeTree
    ORDER BY (account_id, instrument_name, record_id)
    {TABLE_SETTINGS}"""
    # A delivery attempt's status moves pending -> sent/failed on the same key; the Kafka
    # offset (one partition per account) says which record is the latest.
    notifications = f"""
    CREATE TABLE IF NOT EXISTS notifications (
        notification_id String,
        channel {LC},
        attempt UInt32,
        account_id {LC},
        notification_type {LC},
        priority {LC},
        title String,
        content String,
        status {LC},
        error_message Nullable(String),
        order_id Nullable(String),
        created_at {TS},
        sent_at Nullable({TS}),
        kafka_offset Int64,
        inserted_at {TS} DEFAULT now64(3)
    ) ENGINE = ReplacingMergeTree(kafka_offset)
    ORDER BY (notification_id, channel, attempt)
    {_ttl("notifications", sink.retention_days)}
    {TABLE_SETTINGS}"""
    return [position_changes, notifications]


def _v3(sink: SinkSettings) -> list[str]:
    # Worker metric samples: one row per value; a replayed sample replaces itself.
    metrics = f"""
    CREATE TABLE IF NOT EXISTS metrics (
        worker {LC},
        name {LC},
        timestamp {TS},
        value Float64,
        inserted_at {TS} DEFAULT now64(3)
    ) ENGINE = ReplacingMergeTree
    ORDER BY (name, worker, timestamp)
    {_ttl("metrics", sink.retention_days)}
    {TABLE_SETTINGS}"""
    return [metrics]


def _v4(sink: SinkSettings) -> list[str]:
    # Notifier fields: severity, why an attempt failed, digest size, grouping and
    # the emergency alert an attempt belongs to.
    return [
        f"ALTER TABLE notifications ADD COLUMN IF NOT EXISTS severity {LCN}",
        f"ALTER TABLE notifications ADD COLUMN IF NOT EXISTS reason_code {LCN}",
        "ALTER TABLE notifications ADD COLUMN IF NOT EXISTS event_count UInt32 DEFAULT 1",
        "ALTER TABLE notifications ADD COLUMN IF NOT EXISTS group_key Nullable(String)",
        "ALTER TABLE notifications ADD COLUMN IF NOT EXISTS alert_id Nullable(String)",
    ]


def _v5(sink: SinkSettings) -> list[str]:
    # The position keeper's extra fields (oms/positions). position_changes stays the append-only
    # audit: one row per change (record_id), never updated; its TTL is set from
    # settings.positions by sync_position_retention.
    added = [
        f"kind {LCN}", "realized_pnl_change Float64", "fees_total Float64", "version UInt64",
        "mark_price Nullable(Float64)", f"reason_code {LCN}", "message Nullable(String)",
        "needs_review Bool", "exchange_size Nullable(Float64)",
        "exchange_average_price Nullable(Float64)", "fills_total UInt64",
        "turnover_total Float64", "trade_notional Float64",
    ]  # fmt: skip
    alter = "ALTER TABLE position_changes " + ", ".join(
        f"ADD COLUMN IF NOT EXISTS {column}" for column in added
    )
    # Current position per account+instrument: the highest version wins. No TTL, so a position
    # outlives the retention of the changes that built it.
    current = f"""
    CREATE TABLE IF NOT EXISTS positions_current (
        account_id {LC},
        instrument_name {LC},
        version UInt64,
        kind {LCN},
        size Float64,
        average_price Nullable(Float64),
        realized_pnl Float64,
        fees_total Float64,
        fills_total UInt64,
        turnover_total Float64,
        needs_review Bool,
        last_record_type {LC},
        last_record_id String,
        updated_at {TS}
    ) ENGINE = ReplacingMergeTree(version)
    ORDER BY (account_id, instrument_name)
    {TABLE_SETTINGS}"""
    current_mv = """
    CREATE MATERIALIZED VIEW IF NOT EXISTS positions_current_mv TO positions_current AS
    SELECT account_id, instrument_name, version, kind, size, average_price, realized_pnl,
           fees_total, fills_total, turnover_total, needs_review,
           record_type AS last_record_type, record_id AS last_record_id,
           timestamp AS updated_at
    FROM position_changes"""
    view = """
    CREATE VIEW IF NOT EXISTS positions AS
    SELECT * FROM positions_current FINAL"""
    # Per account, instrument and day. Every figure is a difference of the records'
    # cumulative counters (last of the day by version minus the value before the day's first
    # change), so a record the sink inserts twice cannot count twice.
    daily = f"""
    CREATE TABLE IF NOT EXISTS position_daily (
        account_id {LC},
        instrument_name {LC},
        day Date,
        kind AggregateFunction(any, Nullable(String)),
        first_version AggregateFunction(min, UInt64),
        last_version AggregateFunction(max, UInt64),
        fills_end AggregateFunction(argMax, UInt64, UInt64),
        fills_start AggregateFunction(argMin, UInt64, UInt64),
        turnover_end AggregateFunction(argMax, Float64, UInt64),
        turnover_start AggregateFunction(argMin, Float64, UInt64),
        realized_end AggregateFunction(argMax, Float64, UInt64),
        realized_start AggregateFunction(argMin, Float64, UInt64),
        fees_end AggregateFunction(argMax, Float64, UInt64),
        fees_start AggregateFunction(argMin, Float64, UInt64),
        size_end AggregateFunction(argMax, Float64, UInt64),
        corrections AggregateFunction(uniqExact, String)
    ) ENGINE = AggregatingMergeTree
    ORDER BY (account_id, instrument_name, day)"""
    daily_mv = """
    CREATE MATERIALIZED VIEW IF NOT EXISTS position_daily_mv TO position_daily AS
    SELECT account_id, instrument_name, toDate(timestamp) AS day,
           anyState(CAST(kind AS Nullable(String))) AS kind,
           minState(version) AS first_version,
           maxState(version) AS last_version,
           argMaxState(fills_total, version) AS fills_end,
           argMinState(toUInt64(fills_total - (record_type = 'execution')), version) AS fills_start,
           argMaxState(turnover_total, version) AS turnover_end,
           argMinState(turnover_total - trade_notional, version) AS turnover_start,
           argMaxState(realized_pnl, version) AS realized_end,
           argMinState(realized_pnl - realized_pnl_change, version) AS realized_start,
           argMaxState(fees_total, version) AS fees_end,
           argMinState(fees_total - fee, version) AS fees_start,
           argMaxState(size, version) AS size_end,
           uniqExactStateIf(record_id, record_type = 'correction') AS corrections
    FROM position_changes
    GROUP BY account_id, instrument_name, day"""
    daily_view = """
    CREATE VIEW IF NOT EXISTS position_daily_stats AS
    SELECT account_id, instrument_name, day, anyMerge(kind) AS kind,
           argMaxMerge(fills_end) - argMinMerge(fills_start) AS fills,
           argMaxMerge(turnover_end) - argMinMerge(turnover_start) AS turnover,
           argMaxMerge(realized_end) - argMinMerge(realized_start) AS realized_pnl,
           argMaxMerge(fees_end) - argMinMerge(fees_start) AS fees,
           argMaxMerge(size_end) AS size_end_of_day,
           uniqExactMerge(corrections) AS corrections
    FROM position_daily
    GROUP BY account_id, instrument_name, day"""
    return [alter, current, current_mv, view, daily, daily_mv, daily_view]


# Seconds a part replaced by a merge stays on disk (ClickHouse server's default; chDB's is 0).
# A merge running when the disk fills can leave a merged part with an empty marks file that
# still goes active (seen with chDB 4.4 / ClickHouse 26.9): reopening the engine detaches it
# as broken and brings back the parts it replaced, but only while they still exist.
OLD_PARTS_LIFETIME_S = 480
MERGE_TREE_TABLES = (
    "orders", "order_events", "executions", "market_ticks", "dead_letters",
    "position_changes", "notifications", "metrics", "positions_current", "position_daily",
)  # fmt: skip


def _v6(sink: SinkSettings) -> list[str]:
    return [
        f"ALTER TABLE {table} MODIFY SETTING old_parts_lifetime = {OLD_PARTS_LIFETIME_S}"
        for table in MERGE_TREE_TABLES
    ]


def _v7(sink: SinkSettings) -> list[str]:
    # The sink sends the JSON of position records and execution reports itself (see
    # oms.sinks.staged): ENGINE = Null staging tables keep nothing, their views write the
    # same rows the Python path builds (oms.sinks.clickhouse.rows) into the real tables, whose
    # own views (positions_current, position_daily) run on from there. Column DEFAULTs are
    # the pydantic defaults of fields a message may omit; times arrive as epoch milliseconds.
    positions_json = """
    CREATE TABLE IF NOT EXISTS position_changes_json (
        record_id String,
        account_id String,
        instrument_name String,
        record_type String DEFAULT 'execution',
        size Float64,
        size_before Float64 DEFAULT 0,
        average_price Nullable(Float64),
        average_price_before Nullable(Float64),
        realized_pnl Float64 DEFAULT 0,
        unrealized_pnl Nullable(Float64),
        fee Float64 DEFAULT 0,
        order_id Nullable(String),
        trade_id Nullable(String),
        direction Nullable(String),
        trade_amount Nullable(Float64),
        trade_price Nullable(Float64),
        actor String DEFAULT 'oms',
        timestamp Int64,
        kind Nullable(String),
        realized_pnl_change Float64 DEFAULT 0,
        fees_total Float64 DEFAULT 0,
        version UInt64 DEFAULT 0,
        mark_price Nullable(Float64),
        reason_code Nullable(String),
        message Nullable(String),
        needs_review Bool DEFAULT false,
        exchange_size Nullable(Float64),
        exchange_average_price Nullable(Float64),
        fills_total UInt64 DEFAULT 0,
        turnover_total Float64 DEFAULT 0,
        trade_notional Float64 DEFAULT 0
    ) ENGINE = Null"""
    positions_mv = f"""
    CREATE MATERIALIZED VIEW IF NOT EXISTS position_changes_json_mv TO position_changes AS
    SELECT record_id, account_id, instrument_name, record_type, size, size_before,
           average_price, average_price_before, realized_pnl, unrealized_pnl, fee, order_id,
           trade_id, direction, trade_amount, trade_price, actor,
           fromUnixTimestamp64Milli(j.timestamp, 'UTC')::{TS} AS timestamp, kind,
           realized_pnl_change, fees_total, version, mark_price, reason_code, message,
           needs_review, exchange_size, exchange_average_price, fills_total, turnover_total,
           trade_notional
    FROM position_changes_json AS j"""
    # One row per fill (ARRAY JOIN drops a report without fills, as the Python path does);
    # a fill without its own time takes the report's exchange_timestamp.
    executions_json = """
    CREATE TABLE IF NOT EXISTS executions_json (
        report_id String,
        order_id String,
        account_id String,
        source String,
        instrument_name String,
        exchange_order_id Nullable(String),
        direction Nullable(String),
        exchange_timestamp Int64 DEFAULT 0,
        received_at Int64,
        fills Array(Tuple(
            trade_id String,
            amount Float64,
            price Float64,
            fee Float64,
            fee_currency Nullable(String),
            liquidity Nullable(String),
            timestamp Int64))
    ) ENGINE = Null"""
    executions_mv = f"""
    CREATE MATERIALIZED VIEW IF NOT EXISTS executions_json_mv TO executions AS
    SELECT order_id, fill.trade_id AS trade_id, account_id, instrument_name, direction,
           fill.amount AS amount, fill.price AS price, fill.fee AS fee,
           fill.fee_currency AS fee_currency, fill.liquidity AS liquidity,
           fromUnixTimestamp64Milli(if(fill.timestamp != 0, fill.timestamp,
                                       j.exchange_timestamp), 'UTC')::{TS} AS timestamp,
           exchange_order_id, report_id, source,
           fromUnixTimestamp64Milli(j.received_at, 'UTC')::{TS} AS received_at
    FROM executions_json AS j ARRAY JOIN j.fills AS fill"""
    return [positions_json, positions_mv, executions_json, executions_mv]


# Tables whose rows belong to one venue (the record's ``venue``; rows written before venues
# existed were at the default venue, which the column's DEFAULT gives them).
VENUE_TABLES = ("orders", "order_events", "executions", "position_changes")
# Tables whose sorting key identifies a position: without the venue in it, a
# ReplacingMergeTree/AggregatingMergeTree would merge two venues' rows of one
# account+instrument into one.
VENUE_KEYED_TABLES: dict[str, str] = {
    "positions_current": "account_id, instrument_name",
    "position_daily": "account_id, instrument_name, day",
}


def _venue_key(table: str, key: str) -> list[str]:
    # ClickHouse only appends to a sorting key a column added in the same ALTER and without
    # a default (it cannot re-sort existing parts), so the DEFAULT comes in a second ALTER.
    # Parts written before keep no venue column and read it from the DEFAULT ('deribit');
    # merges are stopped in between so none materializes the empty value meanwhile. Both
    # ALTERs are metadata only and may run again after a crash.
    return [
        f"SYSTEM STOP MERGES {table}",
        f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS venue {LC}, "
        f"MODIFY ORDER BY ({key}, venue)",
        f"ALTER TABLE {table} MODIFY COLUMN venue DEFAULT '{DEFAULT_VENUE}'",
        f"SYSTEM START MERGES {table}",
    ]


# Latest mark and index price per instrument (the same reading as oms.positions.queries).
_MARKS = """
    SELECT instrument_name, argMax(mark_price, timestamp) AS mark,
           argMax(index_price, timestamp) AS index_price
    FROM market_ticks FINAL WHERE mark_price IS NOT NULL GROUP BY instrument_name"""


def _v8(sink: SinkSettings) -> list[str]:
    added = [
        f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS venue {LC} DEFAULT '{DEFAULT_VENUE}' "
        "AFTER account_id"
        for table in VENUE_TABLES
    ]
    keyed = [s for table, key in VENUE_KEYED_TABLES.items() for s in _venue_key(table, key)]
    staging = [
        f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS venue String DEFAULT '{DEFAULT_VENUE}'"
        for table in ("position_changes_json", "executions_json")
    ]
    # The views that write those tables carry the venue on (MODIFY QUERY swaps the SELECT
    # atomically: no insert runs through neither version).
    views = [
        """
    ALTER TABLE positions_current_mv MODIFY QUERY
    SELECT account_id, instrument_name, venue, version, kind, size, average_price,
           realized_pnl, fees_total, fills_total, turnover_total, needs_review,
           record_type AS last_record_type, record_id AS last_record_id,
           timestamp AS updated_at
    FROM position_changes""",
        """
    ALTER TABLE position_daily_mv MODIFY QUERY
    SELECT account_id, instrument_name, venue, toDate(timestamp) AS day,
           anyState(CAST(kind AS Nullable(String))) AS kind,
           minState(version) AS first_version,
           maxState(version) AS last_version,
           argMaxState(fills_total, version) AS fills_end,
           argMinState(toUInt64(fills_total - (record_type = 'execution')), version) AS fills_start,
           argMaxState(turnover_total, version) AS turnover_end,
           argMinState(turnover_total - trade_notional, version) AS turnover_start,
           argMaxState(realized_pnl, version) AS realized_end,
           argMinState(realized_pnl - realized_pnl_change, version) AS realized_start,
           argMaxState(fees_total, version) AS fees_end,
           argMinState(fees_total - fee, version) AS fees_start,
           argMaxState(size, version) AS size_end,
           uniqExactStateIf(record_id, record_type = 'correction') AS corrections
    FROM position_changes
    GROUP BY account_id, instrument_name, venue, day""",
        f"""
    ALTER TABLE position_changes_json_mv MODIFY QUERY
    SELECT record_id, account_id, venue, instrument_name, record_type, size, size_before,
           average_price, average_price_before, realized_pnl, unrealized_pnl, fee, order_id,
           trade_id, direction, trade_amount, trade_price, actor,
           fromUnixTimestamp64Milli(j.timestamp, 'UTC')::{TS} AS timestamp, kind,
           realized_pnl_change, fees_total, version, mark_price, reason_code, message,
           needs_review, exchange_size, exchange_average_price, fills_total, turnover_total,
           trade_notional
    FROM position_changes_json AS j""",
        f"""
    ALTER TABLE executions_json_mv MODIFY QUERY
    SELECT order_id, fill.trade_id AS trade_id, account_id, venue, instrument_name, direction,
           fill.amount AS amount, fill.price AS price, fill.fee AS fee,
           fill.fee_currency AS fee_currency, fill.liquidity AS liquidity,
           fromUnixTimestamp64Milli(if(fill.timestamp != 0, fill.timestamp,
                                       j.exchange_timestamp), 'UTC')::{TS} AS timestamp,
           exchange_order_id, report_id, source,
           fromUnixTimestamp64Milli(j.received_at, 'UTC')::{TS} AS received_at
    FROM executions_json AS j ARRAY JOIN j.fills AS fill""",
        # A view's columns are fixed when it is created: ``*`` read no venue before.
        "CREATE OR REPLACE VIEW positions AS SELECT * FROM positions_current FINAL",
        """
    CREATE OR REPLACE VIEW position_daily_stats AS
    SELECT account_id, instrument_name, venue, day, anyMerge(kind) AS kind,
           argMaxMerge(fills_end) - argMinMerge(fills_start) AS fills,
           argMaxMerge(turnover_end) - argMinMerge(turnover_start) AS turnover,
           argMaxMerge(realized_end) - argMinMerge(realized_start) AS realized_pnl,
           argMaxMerge(fees_end) - argMinMerge(fees_start) AS fees,
           argMaxMerge(size_end) AS size_end_of_day,
           uniqExactMerge(corrections) AS corrections
    FROM position_daily
    GROUP BY account_id, instrument_name, venue, day""",
    ]
    # One row per position (account, instrument, venue) with its mark, USD exposure
    # (Deribit's conventions, see oms/positions/math.py) and the currency it is exposed to:
    # the leading letters of the instrument name (BTC-PERPETUAL, BTC_USDC-PERPETUAL and a
    # ccxt symbol BTC/USDT:USDT all read BTC).
    marked = f"""
    CREATE VIEW IF NOT EXISTS positions_marked AS
    SELECT p.account_id AS account_id, p.instrument_name AS instrument_name,
           p.venue AS venue, p.kind AS kind, p.size AS size,
           p.average_price AS average_price, p.needs_review AS needs_review,
           if(m.mark > 0, m.mark, NULL) AS mark_price,
           multiIf(p.kind = 'inverse', p.size,
                   p.kind = 'option', p.size * m.index_price,
                   p.size * m.mark) AS exposure_usd,
           extract(p.instrument_name, '^[A-Za-z0-9]+') AS currency
    FROM positions_current AS p FINAL
    LEFT JOIN ({_MARKS}) AS m ON m.instrument_name = p.instrument_name"""
    # The same instrument name traded at several venues: the account's net size over them.
    by_instrument = """
    CREATE VIEW IF NOT EXISTS positions_by_instrument AS
    SELECT account_id, instrument_name, any(currency) AS currency,
           sum(size) AS net_size, sum(abs(size)) AS gross_size,
           sum(exposure_usd) AS net_exposure_usd,
           arraySort(groupArrayIf(venue, size != 0)) AS venues,
           max(needs_review) AS needs_review
    FROM positions_marked
    GROUP BY account_id, instrument_name"""
    # Per account and currency, every instrument at every venue: what limits should see.
    by_currency = """
    CREATE VIEW IF NOT EXISTS positions_by_currency AS
    SELECT account_id, currency,
           sum(exposure_usd) AS net_exposure_usd,
           sum(abs(exposure_usd)) AS gross_exposure_usd,
           countIf(size != 0) AS positions,
           arraySort(groupUniqArrayIf(venue, size != 0)) AS venues,
           arraySort(groupUniqArrayIf(instrument_name, size != 0)) AS instruments,
           countIf(size != 0 AND exposure_usd IS NULL) AS unpriced_positions,
           max(needs_review) AS needs_review
    FROM positions_marked
    GROUP BY account_id, currency"""
    return [*added, *keyed, *staging, *views, marked, by_instrument, by_currency]


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: Callable[[SinkSettings], list[str]]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "orders, order_events, executions, market_ticks, dead_letters", _v1),
    Migration(2, "position_changes, notifications", _v2),
    Migration(3, "metrics", _v3),
    Migration(4, "notifications: severity, reason_code, event_count, group_key, alert_id", _v4),
    Migration(5, "position keeper: columns, current positions, daily statistics", _v5),
    Migration(
        6, "keep merged-away parts 8 minutes: a merge broken by a full disk can be undone", _v6
    ),
    Migration(7, "JSON staging tables for position_changes and executions", _v7),
    Migration(8, "venue on every venue's rows and in position keys; positions per currency", _v8),
)

SCHEMA_MIGRATIONS = f"""
CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32,
    name String,
    applied_at {TS} DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
ORDER BY version"""


def applied_versions(client: Client) -> set[int]:
    """Versions recorded in ``schema_migrations``."""
    rows = client.query("SELECT DISTINCT version FROM schema_migrations").result_rows
    return {int(row[0]) for row in rows}


def apply_migrations(client: Client, sink: SinkSettings) -> list[int]:
    """Apply the migrations not yet recorded, in order; returns the versions applied now.

    Blocking: call it from a worker thread in async code.
    """
    client.command(SCHEMA_MIGRATIONS)
    done = applied_versions(client)
    applied: list[int] = []
    for migration in MIGRATIONS:
        if migration.version in done:
            continue
        for statement in migration.statements(sink):
            client.command(statement)
        client.insert(
            "schema_migrations",
            [[migration.version, migration.name]],
            column_names=["version", "name"],
        )
        applied.append(migration.version)
    sync_retention(client, sink.retention_days)
    return applied


_TTL_DAYS = re.compile(r"toIntervalDay\((\d+)\)")


def sync_retention(client: Client, days: int) -> list[str]:
    """Bring each table's TTL to ``days`` if ``sink.retention_days`` changed since creation.

    Returns the tables altered. ``materialize_ttl_after_modify=0``: old parts are cleaned by
    later merges instead of a rewrite of every part at startup.
    """
    rows = client.query(
        "SELECT name, create_table_query FROM system.tables "
        "WHERE database = currentDatabase() AND name IN {names:Array(String)}",
        parameters={"names": list(RETENTION_COLUMNS)},
    ).result_rows
    altered = []
    for name, ddl in rows:
        match = _TTL_DAYS.search(ddl)
        if match and int(match.group(1)) == days:
            continue
        client.command(
            f"ALTER TABLE {name} MODIFY {_ttl(name, days)}",
            settings={"materialize_ttl_after_modify": 0},
        )
        altered.append(name)
    return altered


# system.tables may hand the DDL back with quotes escaped.
_POSITION_TTL = re.compile(r"TTL addDays\(.*execution\\?', (\d+), (\d+)\)")


def sync_position_retention(client: Client, execution_days: int, audit_days: int) -> bool:
    """Set ``position_changes``' TTL: execution records after ``execution_days``, the audit
    trail (corrections, adjustments) after ``audit_days``. Returns True if it changed."""
    ddl = str(
        client.command(
            "SELECT create_table_query FROM system.tables "
            "WHERE database = currentDatabase() AND name = 'position_changes'"
        )
    )
    match = _POSITION_TTL.search(ddl)
    if match and (int(match.group(1)), int(match.group(2))) == (execution_days, audit_days):
        return False
    client.command(
        "ALTER TABLE position_changes MODIFY TTL addDays(toDateTime(timestamp), "
        f"if(record_type = 'execution', {int(execution_days)}, {int(audit_days)}))",
        settings={"materialize_ttl_after_modify": 0},
    )
    return True
