"""The report of an A/B experiment on execution strategies, from the order history.

Which orders took part, and in which variant, is in their stored metadata (``experiment``,
``variant``, written once by intake: :mod:`oms.orders.experiments`), with the instrument's
mark and the time at acceptance (``arrival_mark``, ``arrival_at``). Per order the report
measures:

* fill ratio: filled amount / amount (every order of the variant; a rejected one counts 0);
* time to fill (s): last fill - acceptance, for orders filled completely;
* slippage (bps): of the average fill price against the arrival mark, positive when worse
  (a buy above the mark, a sell below it), for orders with fills and a known arrival mark;
* fee: the sum of the fees of its fills (an algorithm's children's fills count for their
  parent), in the fee currency, for orders with fills. Fees of different currencies do not
  add up: keep an experiment to instruments of one settlement currency.

Each figure is a mean with its 95% t interval per variant, and each variant is compared with
the baseline by Welch's t interval of the difference of means (:mod:`oms.sinks.statistics`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from oms.settings import Settings
from oms.sinks.query import run_query
from oms.sinks.statistics import Difference, Estimate, mean_interval, welch

EPSILON = 1e-9
METRICS = ("fill_ratio", "time_to_fill_s", "slippage_bps", "fee")

# One row per order of the experiment (its latest state), with the fills of the order and of
# the children an algorithm sent for it (children name their parent in metadata.parent_id).
REPORT_SQL = """
WITH
  enrolled AS (
    SELECT order_id,
           JSONExtractString(metadata, 'variant') AS variant,
           direction, amount, filled_amount, average_price, status,
           JSONExtract(metadata, 'arrival_mark', 'Nullable(Float64)') AS arrival_mark,
           JSONExtract(metadata, 'arrival_at', 'Nullable(Int64)') AS arrival_at,
           toUnixTimestamp64Milli(created_at) AS created_ms
    FROM orders FINAL
    WHERE JSONExtractString(metadata, 'experiment') = {experiment:String}
      AND JSONExtractString(metadata, 'variant') != ''
  ),
  members AS (
    SELECT order_id,
           if(JSONExtractString(metadata, 'parent_id') = '', order_id,
              JSONExtractString(metadata, 'parent_id')) AS root
    FROM orders FINAL
    WHERE root IN (SELECT order_id FROM enrolled)
  ),
  fills AS (
    SELECT m.root AS root, count() AS fill_count, sum(e.fee) AS fees,
           toUnixTimestamp64Milli(max(e.timestamp)) AS last_fill_ms
    FROM executions AS e FINAL
    INNER JOIN members AS m ON e.order_id = m.order_id
    GROUP BY m.root
  )
SELECT enrolled.order_id AS order_id, variant, direction, amount, filled_amount,
       average_price, status, arrival_mark, arrival_at, created_ms,
       fills.fill_count AS fill_count, fills.fees AS fees, fills.last_fill_ms AS last_fill_ms
FROM enrolled
LEFT JOIN fills ON fills.root = enrolled.order_id
ORDER BY variant, order_id
"""


@dataclass(frozen=True)
class OrderOutcome:
    """What one order of an experiment did (a row of :data:`REPORT_SQL`)."""

    order_id: str
    variant: str
    direction: str
    amount: float
    filled_amount: float
    average_price: float | None
    status: str
    arrival_mark: float | None
    arrival_at: int | None
    created_ms: int
    fill_count: int
    fees: float
    last_fill_ms: int | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> OrderOutcome:
        """An outcome from a report row (missing fills: LEFT JOIN defaults or NULLs)."""
        fills = int(row.get("fill_count") or 0)
        return cls(
            order_id=str(row["order_id"]),
            variant=str(row["variant"]),
            direction=str(row["direction"]),
            amount=float(row["amount"]),
            filled_amount=float(row["filled_amount"]),
            average_price=_opt_float(row.get("average_price")),
            status=str(row["status"]),
            arrival_mark=_opt_float(row.get("arrival_mark")),
            arrival_at=None if row.get("arrival_at") is None else int(row["arrival_at"]),
            created_ms=int(row["created_ms"]),
            fill_count=fills,
            fees=float(row.get("fees") or 0.0) if fills else 0.0,
            last_fill_ms=int(row["last_fill_ms"]) if fills and row.get("last_fill_ms") else None,
        )

    @property
    def fill_ratio(self) -> float:
        return min(self.filled_amount / self.amount, 1.0) if self.amount > 0 else 0.0

    @property
    def filled(self) -> bool:
        return self.filled_amount >= self.amount - EPSILON

    @property
    def time_to_fill_s(self) -> float | None:
        """Last fill - acceptance (s), for an order filled completely."""
        if not self.filled or self.last_fill_ms is None:
            return None
        start = self.arrival_at if self.arrival_at is not None else self.created_ms
        return max(self.last_fill_ms - start, 0) / 1000.0

    @property
    def slippage_bps(self) -> float | None:
        """Average fill price against the arrival mark (bps), positive when worse."""
        if self.filled_amount <= EPSILON or self.average_price is None:
            return None
        if self.arrival_mark is None or self.arrival_mark <= 0:
            return None
        sign = 1.0 if self.direction == "buy" else -1.0
        return sign * (self.average_price - self.arrival_mark) / self.arrival_mark * 10_000

    @property
    def fee(self) -> float | None:
        return self.fees if self.fill_count else None

    def metric(self, name: str) -> float | None:
        """One of :data:`METRICS` for this order (None: it does not count for it)."""
        value: float | None = getattr(self, name)
        return value


@dataclass(frozen=True)
class VariantSummary:
    """One variant's orders and the estimate of each metric."""

    variant: str
    orders: int
    rejected: int
    filled: int
    metrics: dict[str, Estimate]

    def as_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "orders": self.orders,
            "rejected": self.rejected,
            "filled": self.filled,
            "metrics": {name: est.as_dict() for name, est in self.metrics.items()},
        }


@dataclass(frozen=True)
class Comparison:
    """One metric of a variant against the baseline (variant - baseline)."""

    variant: str
    baseline: str
    metric: str
    difference: Difference

    def as_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "baseline": self.baseline,
            "metric": self.metric,
            **self.difference.as_dict(),
        }


@dataclass(frozen=True)
class ExperimentReport:
    """Every variant's figures and every variant against the baseline."""

    experiment: str
    baseline: str | None
    variants: list[VariantSummary]
    comparisons: list[Comparison]

    def as_dict(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "baseline": self.baseline,
            "confidence": 0.95,
            "variants": [v.as_dict() for v in self.variants],
            "comparisons": [c.as_dict() for c in self.comparisons],
        }


def _values(outcomes: Sequence[OrderOutcome], metric: str) -> list[float]:
    return [v for o in outcomes if (v := o.metric(metric)) is not None]


def build_report(
    experiment: str,
    outcomes: Sequence[OrderOutcome],
    *,
    order: Sequence[str] = (),
    baseline: str | None = None,
) -> ExperimentReport:
    """The report over ``outcomes``. Variants are listed in ``order`` (the settings' order;
    others after it, by name); the baseline is ``baseline`` or the first listed."""
    by_variant: dict[str, list[OrderOutcome]] = {}
    for outcome in outcomes:
        by_variant.setdefault(outcome.variant, []).append(outcome)
    names = [n for n in order if n in by_variant] + sorted(set(by_variant) - set(order))
    if baseline is not None and baseline not in by_variant:
        raise ValueError(f"variant {baseline!r} has no orders in experiment {experiment!r}")
    base = baseline if baseline is not None else (names[0] if names else None)
    summaries = [
        VariantSummary(
            variant=name,
            orders=len(rows),
            rejected=sum(1 for r in rows if r.status == "rejected"),
            filled=sum(1 for r in rows if r.filled),
            metrics={m: mean_interval(_values(rows, m)) for m in METRICS},
        )
        for name, rows in ((n, by_variant[n]) for n in names)
    ]
    comparisons = []
    if base is not None:
        for name in names:
            if name == base:
                continue
            for metric in METRICS:
                diff = welch(_values(by_variant[base], metric), _values(by_variant[name], metric))
                comparisons.append(Comparison(name, base, metric, diff))
    return ExperimentReport(experiment, base, summaries, comparisons)


async def fetch_outcomes(settings: Settings, experiment: str) -> list[OrderOutcome]:
    """Every order of ``experiment`` in ClickHouse with its fills (read-only query)."""
    result = await run_query(settings, REPORT_SQL, {"experiment": experiment})
    return [OrderOutcome.from_row(row) for row in result.records()]


async def experiment_report(
    settings: Settings, experiment: str, baseline: str | None = None
) -> ExperimentReport:
    """The report of ``experiment``, variants in the order its settings list them."""
    configured = next((e for e in settings.experiments if e.name == experiment), None)
    order = [v.name for v in configured.variants] if configured is not None else []
    outcomes = await fetch_outcomes(settings, experiment)
    return build_report(experiment, outcomes, order=order, baseline=baseline)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)
