"""The statistics of execution tuning, counted in ClickHouse from the order history.

What each query reads (the math and the picks are :mod:`oms.algos.tuning_math` and
:mod:`oms.algos.tuner`):

* fills by distance from the touch (:data:`FILLS_SQL`): post-only limit orders that reached
  the exchange. Placed at ``submitted_at`` (else ``created_at``), at their first recorded
  price (the earliest event's price: a chase moves its order later), against the touch at
  placement: the ``touch_*`` keys intake records in the order's metadata from the worker's
  market cache, or, for orders without them (placed before intake recorded them), the newest
  ``market_ticks`` row of the instrument at placement (ASOF JOIN), either only if at most
  ``max_tick_age_s`` old. Distance in bps, positive behind the touch (a buy below the best
  bid), negative inside the spread, rounded to the bucket width. Filled: its first execution
  came within the horizon. Orders younger than the horizon and not filled yet are left out.
* slippage by slice size (:data:`SLICES_SQL`): filled TWAP slices that were not post-only
  (they take liquidity), their average price against the touch on the side they take (the
  ask for a buy), in bps (+ = worse), by amount / the visible amount at that touch, grouped
  in buckets (upper edges: "slices up to 0.5x the depth").
* retries by error kind and delay (:data:`RETRIES_SQL`): the executor counts each retry's
  outcome per venue (the worker's ``exchange.venue``), error kind and wait (on a ladder of
  waits) as cumulative counters in its metric samples (``metrics`` table, ``retry.*``
  names). Totals are the counters' increases per worker, a drop (a restart under the same
  worker name) counted as a reset, as Prometheus' ``increase`` does. Orders before workers
  counted them have no retry history: the executor kept its retries in memory and stored only
  the final outcome.

Fills and slices are those of the primary venue (the picks are settings per instrument);
retries are counted per venue. Every read collapses replayed rows (``FINAL``), like
:mod:`oms.sinks.queries`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oms.algos.tuner import TunerLimits, TuningReport, tune
from oms.algos.tuning_math import FillBucket, RetryBucket, SliceBucket
from oms.schemas import now_ms
from oms.settings import Settings
from oms.sinks.query import run_query

RETRIES_UNAVAILABLE = (
    "no retry outcomes in the history yet: workers count them (venue, error kind, wait, "
    "success) in their metric samples from this version on; retries made before were not "
    "stored"
)

RETRIES_SQL = """
WITH
  series AS (
    SELECT worker, name, value,
           lagInFrame(toNullable(value)) OVER (
             PARTITION BY worker, name ORDER BY timestamp
             ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS previous
    FROM metrics FINAL
    WHERE startsWith(name, 'retry.')
  ),
  increases AS (
    SELECT name, sum(if(previous IS NULL OR value < previous, value, value - previous)) AS total
    FROM series
    GROUP BY name
  ),
  parts AS (
    SELECT splitByChar('.', name) AS p, p[2] AS venue, p[3] AS reason,
           toFloat64OrZero(p[4]) / 1000 AS delay_s, p[5] AS kind, total
    FROM increases
    WHERE length(p) = 5
  )
SELECT venue, reason, delay_s,
       toUInt64(sumIf(total, kind = 'attempts')) AS attempts,
       toUInt64(sumIf(total, kind = 'succeeded')) AS succeeded
FROM parts
GROUP BY venue, reason, delay_s
ORDER BY venue, reason, delay_s
"""

_TOUCH = """
    JSONExtract(metadata, 'touch_bid', 'Nullable(Float64)') AS m_bid,
    JSONExtract(metadata, 'touch_ask', 'Nullable(Float64)') AS m_ask,
    JSONExtract(metadata, 'touch_bid_amount', 'Nullable(Float64)') AS m_bid_amount,
    JSONExtract(metadata, 'touch_ask_amount', 'Nullable(Float64)') AS m_ask_amount,
    JSONExtract(metadata, 'touch_at', 'Nullable(Int64)') AS m_at,
    JSONExtract(metadata, 'tick_size', 'Nullable(Float64)') AS tick_size"""

# The touch at placement: the recorded one if fresh, else the newest stored tick if fresh.
_MEASURED = """
  ticks AS (
    SELECT instrument_name, timestamp, best_bid_price, best_ask_price,
           best_bid_amount, best_ask_amount
    FROM market_ticks FINAL
  ),
  measured AS (
    SELECT p.*,
           m_bid IS NOT NULL AND placed_ms - coalesce(m_at, placed_ms) <= {max_age_ms:Int64}
             AS recorded,
           placed_ms - toUnixTimestamp64Milli(t.timestamp) <= {max_age_ms:Int64}
             AND t.best_bid_price IS NOT NULL AS from_ticks,
           multiIf(recorded, m_bid, from_ticks, t.best_bid_price, NULL) AS bid,
           multiIf(recorded, m_ask, from_ticks, t.best_ask_price, NULL) AS ask,
           multiIf(recorded, m_bid_amount, from_ticks, t.best_bid_amount, NULL) AS bid_amount,
           multiIf(recorded, m_ask_amount, from_ticks, t.best_ask_amount, NULL) AS ask_amount
    FROM placed AS p
    ASOF LEFT JOIN ticks AS t
      ON t.instrument_name = p.instrument AND t.timestamp <= p.placed_at
  )"""

FILLS_SQL = f"""
WITH
  placed AS (
    SELECT order_id, instrument_name AS instrument, direction,
           coalesce(submitted_at, created_at) AS placed_at,
           toUnixTimestamp64Milli(placed_at) AS placed_ms,
           price AS latest_price, {_TOUCH}
    FROM orders FINAL
    WHERE order_type = 'limit' AND post_only AND venue = {{venue:String}}
      AND status NOT IN ('pending', 'waiting', 'queued', 'rejected')
  ),
  first_price AS (
    SELECT order_id, argMin(price, version) AS price0
    FROM order_events
    WHERE price IS NOT NULL AND order_id IN (SELECT order_id FROM placed)
    GROUP BY order_id
  ),
  first_fill AS (
    SELECT order_id, toUnixTimestamp64Milli(min(timestamp)) AS fill_ms
    FROM executions FINAL
    WHERE order_id IN (SELECT order_id FROM placed)
    GROUP BY order_id
  ),
  {_MEASURED},
  distances AS (
    SELECT m.instrument AS instrument, toHour(m.placed_at) AS hour, m.tick_size AS tick_size,
           m.placed_ms AS placed_ms, f.fill_ms AS fill_ms,
           coalesce(fp.price0, m.latest_price) AS price0,
           if(m.direction = 'buy', (m.bid - price0) / m.bid, (price0 - m.ask) / m.ask)
             * 10000 AS distance_bps
    FROM measured AS m
    LEFT JOIN first_price AS fp ON fp.order_id = m.order_id
    LEFT JOIN first_fill AS f ON f.order_id = m.order_id
    WHERE if(m.direction = 'buy', m.bid, m.ask) > 0 AND price0 IS NOT NULL
  )
SELECT instrument, hour,
       round(distance_bps / {{bucket_bps:Float64}}) * {{bucket_bps:Float64}} AS offset_bps,
       count() AS orders,
       countIf(fill_ms > 0 AND fill_ms - placed_ms <= {{horizon_ms:Int64}}) AS filled,
       max(tick_size) AS tick_size
FROM distances
WHERE placed_ms + {{horizon_ms:Int64}} <= {{now_ms:Int64}}
   OR (fill_ms > 0 AND fill_ms - placed_ms <= {{horizon_ms:Int64}})
GROUP BY instrument, hour, offset_bps
ORDER BY instrument, hour, offset_bps
"""

SLICES_SQL = f"""
WITH
  placed AS (
    SELECT order_id, instrument_name AS instrument, direction, amount, average_price,
           coalesce(submitted_at, created_at) AS placed_at,
           toUnixTimestamp64Milli(placed_at) AS placed_ms, {_TOUCH}
    FROM orders FINAL
    WHERE JSONExtractString(metadata, 'parent_id') != '' AND venue = {{venue:String}}
      AND JSONHas(metadata, 'twap_slice') AND NOT post_only
      AND filled_amount > 0 AND average_price IS NOT NULL
  ),
  {_MEASURED},
  sized AS (
    SELECT instrument,
           if(direction = 'buy', ask, bid) AS touch,
           if(direction = 'buy', ask_amount, bid_amount) AS depth,
           if(direction = 'buy', average_price - touch, touch - average_price) / touch * 10000
             AS slippage_bps,
           ceil(amount / depth / {{ratio_bucket:Float64}} - 1e-9) * {{ratio_bucket:Float64}}
             AS depth_ratio
    FROM measured
    WHERE touch > 0 AND depth > 0
  ),
  depths AS (
    SELECT instrument, median(depth) AS median_depth FROM sized GROUP BY instrument
  )
SELECT s.instrument AS instrument, s.depth_ratio AS depth_ratio, count() AS slices,
       avg(s.slippage_bps) AS mean_slippage_bps, varSamp(s.slippage_bps) AS var_slippage_bps,
       any(d.median_depth) AS median_depth
FROM sized AS s
LEFT JOIN depths AS d ON d.instrument = s.instrument
GROUP BY instrument, depth_ratio
ORDER BY instrument, depth_ratio
"""


@dataclass(frozen=True)
class TuningStatistics:
    """Everything the tuner reads, with the statistics that could not be computed."""

    fills: list[FillBucket]
    slices: list[SliceBucket]
    retries: list[RetryBucket] | None
    unavailable: dict[str, str]
    parameters: dict[str, Any]


def _opt(value: Any) -> float | None:
    return None if value is None else float(value)


async def tuning_statistics(settings: Settings, *, now: int | None = None) -> TuningStatistics:
    """Run the tuning queries on the order history (``now``: ms, default the clock)."""
    tuning = settings.tuning
    # Fills and slippage of the primary venue only: the chase offsets and slice limits the
    # tuner picks are settings per instrument, and another venue's book would blur them
    # (retries are counted per venue anyway).
    venue = settings.exchange.primary_venue
    common = {"max_age_ms": int(tuning.max_tick_age_s * 1000), "venue": venue}
    fill_params = {
        **common,
        "bucket_bps": tuning.offset_bucket_bps,
        "horizon_ms": int(tuning.horizon_s * 1000),
        "now_ms": now if now is not None else now_ms(),
    }
    fill_rows = (await run_query(settings, FILLS_SQL, fill_params)).records()
    slice_params = {**common, "ratio_bucket": tuning.depth_ratio_bucket}
    slice_rows = (await run_query(settings, SLICES_SQL, slice_params)).records()
    fills = [
        FillBucket(
            instrument=str(r["instrument"]),
            hour=int(r["hour"]),
            offset_bps=float(r["offset_bps"]) + 0.0,  # -0.0 -> 0.0
            orders=int(r["orders"]),
            filled=int(r["filled"]),
            tick_size=_opt(r.get("tick_size")),
        )
        for r in fill_rows
    ]
    slices = [
        SliceBucket(
            instrument=str(r["instrument"]),
            depth_ratio=float(r["depth_ratio"]),
            slices=int(r["slices"]),
            mean_slippage_bps=_opt(r.get("mean_slippage_bps")),
            var_slippage_bps=_opt(r.get("var_slippage_bps")),
            median_depth=_opt(r.get("median_depth")),
        )
        for r in slice_rows
    ]
    retry_rows = (await run_query(settings, RETRIES_SQL)).records()
    retries = [
        RetryBucket(
            venue=str(r["venue"]),
            reason=str(r["reason"]),
            delay_s=float(r["delay_s"]),
            attempts=int(r["attempts"]),
            succeeded=min(int(r["succeeded"]), int(r["attempts"])),
        )
        for r in retry_rows
    ]
    return TuningStatistics(
        fills=fills,
        slices=slices,
        retries=retries,
        unavailable={} if retries else {"retry.schedule": RETRIES_UNAVAILABLE},
        parameters={
            "venue": venue,
            "horizon_s": tuning.horizon_s,
            "offset_bucket_bps": tuning.offset_bucket_bps,
            "depth_ratio_bucket": tuning.depth_ratio_bucket,
            "max_tick_age_s": tuning.max_tick_age_s,
            "min_samples": tuning.min_samples,
            "max_slippage_bps": tuning.max_slippage_bps,
        },
    )


def limits_of(settings: Settings) -> TunerLimits:
    """What a pick needs, from the tuning and lifecycle settings."""
    return TunerLimits(
        min_samples=settings.tuning.min_samples,
        max_slippage_bps=settings.tuning.max_slippage_bps,
        retry_min_delay_s=settings.lifecycle.retry_delay,
        retry_max_delay_s=settings.lifecycle.retry_max_delay,
        retry_attempts=settings.lifecycle.retry_attempts,
    )


async def tuning_report(
    settings: Settings, *, now: int | None = None
) -> tuple[TuningStatistics, TuningReport]:
    """The statistics of the history and the tuner's picks from them."""
    stats = await tuning_statistics(settings, now=now)
    report = tune(stats.fills, stats.retries, stats.slices, limits_of(settings), stats.unavailable)
    return stats, report
