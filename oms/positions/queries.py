"""Position queries against ClickHouse (through the sink's read-only query path).

``position_changes`` is the append-only audit (deduplicated with ``FINAL``), ``positions``
the current position per account, instrument and venue, ``position_daily_stats`` the
per-day figures kept by a materialized view; marks come from ``market_ticks``.
``positions_by_currency`` and ``positions_by_instrument`` sum an account's positions over
venues (what one trader holds, wherever it trades).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from oms.positions.math import PositionKind, kind_of, pnl_currency, turnover_unit
from oms.settings import Settings
from oms.sinks.queries import MAX_LIMIT, account_filters, to_epoch_ms
from oms.sinks.query import run_query

# Latest mark per instrument, for unrealized PnL and exposure.
MARKS = """
    SELECT instrument_name, argMax(mark_price, timestamp) AS mark,
           argMax(index_price, timestamp) AS index_price
    FROM market_ticks FINAL WHERE mark_price IS NOT NULL GROUP BY instrument_name"""

# Unrealized PnL in the settlement coin (USDC for linear) and exposure in USD, per Deribit's
# conventions (see oms/positions/math.py).
CURRENT_POSITIONS = f"""
SELECT p.account_id AS account_id, p.instrument_name AS instrument_name,
       p.venue AS venue, p.kind AS kind,
       p.size AS size, p.average_price AS average_price, p.realized_pnl AS realized_pnl,
       p.fees_total AS fees, p.fills_total AS fills, p.turnover_total AS turnover,
       p.needs_review AS needs_review, p.version AS version, p.updated_at AS updated_at,
       if(m.mark > 0, m.mark, NULL) AS mark_price,
       multiIf(m.mark <= 0 OR p.size = 0, 0,
               p.kind = 'inverse', p.size * (1 / p.average_price - 1 / m.mark),
               p.size * (m.mark - p.average_price)) AS unrealized_pnl,
       multiIf(p.kind = 'inverse', p.size,
               p.kind = 'option', p.size * m.index_price,
               p.size * m.mark) AS exposure_usd,
       extract(p.instrument_name, '^[A-Za-z0-9]+') AS base_currency
FROM positions AS p LEFT JOIN ({MARKS}) AS m ON m.instrument_name = p.instrument_name
"""


async def get_current_positions(
    settings: Settings,
    account_id: str | None = None,
    instrument_name: str | None = None,
    include_flat: bool = False,
    venue: str | None = None,
) -> list[dict[str, Any]]:
    """Current positions (one per account, instrument and venue) with mark, unrealized PnL
    and USD exposure."""
    where, params = account_filters(account_id, instrument_name, venue)
    if not include_flat:
        where.append("(size != 0 OR needs_review)")
    sql = (
        f"SELECT * FROM ({CURRENT_POSITIONS})"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY account_id, instrument_name, venue"
    )
    return (await run_query(settings, sql, params)).records()


async def get_positions_by_currency(
    settings: Settings, account_id: str | None = None
) -> list[dict[str, Any]]:
    """Per account and currency, the net and gross USD exposure summed over every
    instrument at every venue (the ``positions_by_currency`` view); accounts and
    currencies without an open position are left out."""
    where, params = account_filters(account_id, None)
    where.append("positions > 0")
    sql = (
        "SELECT * FROM positions_by_currency WHERE "
        + " AND ".join(where)
        + " ORDER BY account_id, currency"
    )
    return (await run_query(settings, sql, params)).records()


async def get_positions_by_instrument(
    settings: Settings, account_id: str | None = None
) -> list[dict[str, Any]]:
    """Per account and instrument name, the net size over the venues it trades at (the
    ``positions_by_instrument`` view), open positions only."""
    where, params = account_filters(account_id, None)
    where.append("length(venues) > 0")
    sql = (
        "SELECT * FROM positions_by_instrument WHERE "
        + " AND ".join(where)
        + " ORDER BY account_id, instrument_name"
    )
    return (await run_query(settings, sql, params)).records()


async def get_position_records(
    settings: Settings,
    account_id: str | None = None,
    instrument_name: str | None = None,
    start_time: datetime | int | None = None,
    end_time: datetime | int | None = None,
    include_history: bool = True,
    limit: int = 1_000,
) -> list[dict[str, Any]]:
    """Position change records, oldest first; with ``include_history=False``
    only the latest record of each position in the time range."""
    where, params = account_filters(account_id, instrument_name)
    if start_time is not None:
        where.append("timestamp >= fromUnixTimestamp64Milli({start:Int64}, 'UTC')")
        params["start"] = to_epoch_ms(start_time)
    if end_time is not None:
        where.append("timestamp < fromUnixTimestamp64Milli({end:Int64}, 'UTC')")
        params["end"] = to_epoch_ms(end_time)
    params["limit"] = max(0, min(int(limit), MAX_LIMIT))
    cond = " WHERE " + " AND ".join(where) if where else ""
    base = f"SELECT * EXCEPT inserted_at FROM position_changes FINAL{cond}"
    if include_history:
        sql = (
            f"{base} ORDER BY account_id, instrument_name, venue, version "
            "LIMIT {limit:UInt32}"
        )
    else:
        # LIMIT BY and LIMIT in separate SELECTs: the SQL parser that scopes a desk's
        # queries (oms.sinks.scope) reads no LIMIT after a LIMIT BY.
        sql = (
            f"SELECT * FROM ({base} ORDER BY version DESC LIMIT 1 BY account_id, "
            "instrument_name, venue) ORDER BY version DESC LIMIT {limit:UInt32}"
        )
    return (await run_query(settings, sql, params)).records()


async def get_position_history(
    settings: Settings,
    account_id: str,
    instrument_name: str,
    start_time: datetime | int | None = None,
    end_time: datetime | int | None = None,
    limit: int = 1_000,
) -> list[dict[str, Any]]:
    """Every recorded change of one position, oldest first."""
    return await get_position_records(
        settings, account_id, instrument_name, start_time, end_time, True, limit
    )


# Slippage: fill price against the mark at the time the order was requested, in basis points,
# positive when the fill was worse for us (bought higher / sold lower). Per venue: where an
# order trades is part of how it fills.
SLIPPAGE = """
SELECT e.account_id AS account_id, e.instrument_name AS instrument_name,
       e.venue AS venue, toDate(e.timestamp) AS day,
       avg(if(e.direction = 'buy', 1, -1) * (e.price - t.mark_price) / t.mark_price) * 1e4
           AS avg_slippage_bps,
       count() AS fills_with_mark
FROM (SELECT e.*, o.created_at AS requested_at FROM executions AS e FINAL
      INNER JOIN (SELECT order_id, created_at FROM orders FINAL) AS o ON o.order_id = e.order_id
     ) AS e
ASOF LEFT JOIN (SELECT instrument_name, timestamp, mark_price FROM market_ticks FINAL
                WHERE mark_price > 0) AS t
  ON t.instrument_name = e.instrument_name AND t.timestamp <= e.requested_at
WHERE t.mark_price > 0 {where}
GROUP BY account_id, instrument_name, venue, day"""

# Milliseconds from the request to the venue's acceptance, averaged over the orders that
# reached it (NULL without any).
SUBMIT_LATENCY = """if(countIf(submitted_at IS NOT NULL) = 0, NULL,
          avgIf(toUnixTimestamp64Milli(submitted_at) - toUnixTimestamp64Milli(created_at),
                submitted_at IS NOT NULL))"""

# Fill ratio: filled over requested amount of the orders created that day; submit latency:
# from the request to the venue's acceptance, of the orders that reached it.
FILL_RATIO = f"""
SELECT account_id, instrument_name, venue, toDate(created_at) AS day, count() AS orders,
       sum(filled_amount) / nullIf(sum(amount), 0) AS fill_ratio,
       {SUBMIT_LATENCY} AS avg_submit_latency_ms
FROM orders FINAL WHERE 1 {{where}}
GROUP BY account_id, instrument_name, venue, day"""


# Per venue over the period: orders, fill ratio and submit latency of the orders created in
# it, and slippage weighted by the fills behind each day's average.
VENUE_ORDERS = f"""
SELECT venue, count() AS orders,
       sum(filled_amount) / nullIf(sum(amount), 0) AS fill_ratio,
       {SUBMIT_LATENCY} AS avg_submit_latency_ms
FROM orders FINAL WHERE toDate(created_at) >= today() - {{{{days:UInt32}}}} {{where}}
GROUP BY venue"""
VENUE_SLIPPAGE = """
SELECT venue, sum(avg_slippage_bps * fills_with_mark) / nullIf(sum(fills_with_mark), 0)
           AS avg_slippage_bps,
       sum(fills_with_mark) AS slippage_fills
FROM ({slippage}) WHERE day >= today() - {{days:UInt32}}
GROUP BY venue"""


async def calculate_position_statistics(
    settings: Settings, account_id: str | None = None, days: int = 30, venue: str | None = None
) -> dict[str, Any]:
    """Position statistics: per account+instrument+venue+day figures (fills, turnover,
    realized PnL, fees, fill ratio, submit latency, slippage), the same execution figures
    per venue over the period, exposure and unrealized PnL of the current positions,
    grouped by instrument (over venues), by venue and by currency, and totals. ``venue``
    keeps one venue's rows only."""
    where, params = account_filters(account_id, None, venue)
    params["days"] = max(0, min(int(days), 10_000))
    cond = "".join(f" AND {w}" for w in where)
    slippage_cond = "".join(f" AND e.{w}" for w in where)
    slippage = SLIPPAGE.format(where=slippage_cond)
    daily_sql = (
        "SELECT account_id, instrument_name, venue, day, d.kind AS kind, d.fills AS fills, "
        "d.turnover AS turnover, d.realized_pnl AS realized_pnl, d.fees AS fees, "
        "d.size_end_of_day AS size_end_of_day, d.corrections AS corrections, "
        "r.orders AS orders, r.fill_ratio AS fill_ratio, "
        "r.avg_submit_latency_ms AS avg_submit_latency_ms, "
        "s.avg_slippage_bps AS avg_slippage_bps "
        "FROM (SELECT * FROM position_daily_stats WHERE day >= today() - {days:UInt32}"
        f"{cond}) AS d "
        f"LEFT JOIN ({FILL_RATIO.format(where=cond)}) AS r "
        "USING (account_id, instrument_name, venue, day) "
        f"LEFT JOIN ({slippage}) AS s "
        "USING (account_id, instrument_name, venue, day) "
        "ORDER BY day, account_id, instrument_name, venue"
    )
    venue_sql = (
        "SELECT venue, o.orders AS orders, o.fill_ratio AS fill_ratio, "
        "o.avg_submit_latency_ms AS avg_submit_latency_ms, "
        "s.avg_slippage_bps AS avg_slippage_bps, s.slippage_fills AS slippage_fills "
        f"FROM ({VENUE_ORDERS.format(where=cond)}) AS o "
        f"FULL JOIN ({VENUE_SLIPPAGE.format(slippage=slippage)}) AS s USING (venue) "
        "ORDER BY venue"
    )
    by_venue_execution = (await run_query(settings, venue_sql, params)).records()
    daily = (await run_query(settings, daily_sql, params)).records()
    positions = await get_current_positions(settings, account_id, venue=venue)
    by_instrument: dict[str, dict[str, Any]] = {}
    by_currency: dict[str, dict[str, float]] = {}
    by_venue: dict[str, dict[str, float]] = {}
    for p in positions:
        at_venue = by_venue.setdefault(p["venue"], {"exposure_usd": 0.0, "positions": 0})
        at_venue["exposure_usd"] += p["exposure_usd"] or 0.0
        at_venue["positions"] += 1
        name = p["instrument_name"]
        one = by_instrument.setdefault(
            name,
            {"exposure_usd": 0.0, "unrealized_pnl": 0.0, "size": 0.0,
             "pnl_currency": pnl_currency(name)},
        )  # fmt: skip
        one["exposure_usd"] += p["exposure_usd"] or 0.0
        one["unrealized_pnl"] += p["unrealized_pnl"] or 0.0
        one["size"] += p["size"] or 0.0
        exposure = by_currency.setdefault(p["base_currency"], {"exposure_usd": 0.0})
        exposure["exposure_usd"] += p["exposure_usd"] or 0.0
    totals = {
        "fills": sum(int(d["fills"]) for d in daily),
        "positions": len(positions),
        "needs_review": sum(1 for p in positions if p["needs_review"]),
    }
    return {
        "account_id": account_id,
        "daily": daily,
        "positions": positions,
        "exposure_by_instrument": by_instrument,
        "exposure_by_currency": by_currency,
        "exposure_by_venue": by_venue,
        "execution_by_venue": by_venue_execution,
        "venue": venue,
        "totals": totals,
        "totals_by_currency": totals_by_currency(daily, positions),
    }


# A recorded ``kind`` column value -> its convention (older rows may have none).
_KINDS = {k.value: k for k in PositionKind}


def totals_by_currency(
    daily: list[dict[str, Any]], positions: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Money totals that only add up within one unit: PnL and fees per settlement currency,
    turnover per notional unit (USD for inverse contracts), one row per pair of the two."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}

    def row(instrument_name: str, kind: str | None) -> dict[str, Any]:
        convention = _KINDS.get(kind or "") or kind_of(instrument_name)
        currency = pnl_currency(instrument_name)
        unit = turnover_unit(convention, instrument_name)
        return rows.setdefault(
            (currency, unit),
            {"currency": currency, "turnover_unit": unit, "fills": 0, "turnover": 0.0,
             "realized_pnl": 0.0, "fees": 0.0, "unrealized_pnl": 0.0},
        )  # fmt: skip

    for d in daily:
        r = row(d["instrument_name"], d.get("kind"))
        r["fills"] += int(d["fills"])
        r["turnover"] += float(d["turnover"])
        r["realized_pnl"] += float(d["realized_pnl"])
        r["fees"] += float(d["fees"])
    for p in positions:
        row(p["instrument_name"], p.get("kind"))["unrealized_pnl"] += float(
            p["unrealized_pnl"] or 0.0
        )
    return [rows[k] for k in sorted(rows)]
