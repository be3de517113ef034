"""Execution tuned from the order history: transparent picks, no model.

From the counts of :mod:`oms.sinks.tuning` (as :mod:`oms.algos.tuning_math` buckets) the tuner
picks, each with its evidence (sample sizes, rates, intervals) and a one-line reason:

* the chase offset per instrument (and per UTC hour where that hour has its own evidence):
  among the distances from the touch with at least ``min_samples`` orders, the one that fills
  best within the horizon; where the 95% Wilson intervals of several offsets overlap the
  best one's, the data cannot tell them apart, and the most passive of them is picked (it
  earns the most price for a fill rate not shown to be worse). Fewer than two offsets with
  enough samples: no pick;
* the retry schedule per venue and error kind: the delays (within the lifecycle's
  ``retry_delay``..``retry_max_delay``) with the best successes per second of waiting;
* the TWAP slice limit per instrument: the largest slice, relative to the visible amount at
  the touch, whose slippage interval (upper bound) stays under ``max_slippage_bps``, as do
  all smaller ones; converted to an amount with the median visible amount.

A figure without a pick says why (too few samples, nothing to compare, nothing stored), and
:func:`settings_patch` leaves it out, so applying never writes a guess.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from oms.algos.tuning_math import (
    FillBucket,
    RetryBucket,
    SliceBucket,
    mean_estimate,
    success_per_second,
    wilson,
)

CHASE_OFFSET = "chase.offset_bps"
RETRY_SCHEDULE = "retry.schedule"
TWAP_MAX_SLICE = "twap.max_slice_amount"


@dataclass(frozen=True)
class TunerLimits:
    """What a pick needs (the tuning settings, plus the lifecycle's retry bounds)."""

    min_samples: int = 30
    max_slippage_bps: float = 5.0
    retry_min_delay_s: float = 1.0
    retry_max_delay_s: float = 30.0
    retry_attempts: int = 3


@dataclass(frozen=True)
class Pick:
    """One tuned figure: its value (None: no pick), why, and the evidence it rests on."""

    figure: str
    scope: dict[str, Any]
    value: Any
    reason: str
    evidence: list[dict[str, Any]] = field(default_factory=list)

    @property
    def picked(self) -> bool:
        return self.value is not None

    def as_dict(self) -> dict[str, Any]:
        return {
            "figure": self.figure,
            "scope": self.scope,
            "value": self.value,
            "picked": self.picked,
            "reason": self.reason,
            "evidence": self.evidence,
        }


@dataclass(frozen=True)
class TuningReport:
    """Every pick, plus the statistics that could not be computed and why."""

    picks: list[Pick]
    unavailable: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "picks": [p.as_dict() for p in self.picks],
            "unavailable": self.unavailable,
        }


def _fmt_rate(offset: float, n: int, k: int) -> str:
    r = wilson(k, n)
    assert r.rate is not None and r.low is not None and r.high is not None
    return f"{offset:+g} bps: {r.rate:.0%} [{r.low:.0%}, {r.high:.0%}] of {n}"


def pick_offset(
    counts: dict[float, tuple[int, int]],
    scope: dict[str, Any],
    limits: TunerLimits,
    tick_size: float | None = None,
) -> Pick:
    """The chase offset from (orders, filled) per offset (bps) of one instrument (and hour)."""
    evidence = []
    for offset in sorted(counts):
        n, k = counts[offset]
        evidence.append(
            {"offset_bps": offset, "enough": n >= limits.min_samples, **wilson(k, n).as_dict()}
        )
    usable = {o: c for o, c in counts.items() if c[0] >= limits.min_samples}
    if len(usable) < 2:
        largest = max((c[0] for c in counts.values()), default=0)
        why = (
            f"too few samples: {len(usable)} offset(s) with at least {limits.min_samples} orders "
            f"(largest bucket {largest})"
        )
        return Pick(CHASE_OFFSET, scope, None, f"no pick: {why}", evidence)
    rates = {o: wilson(k, n) for o, (n, k) in usable.items()}
    best = max(rates, key=lambda o: (rates[o].rate or 0.0, rates[o].n, -o))
    best_low = rates[best].low or 0.0
    # Offsets the data cannot tell from the best: their intervals reach its lower bound.
    alike = sorted(o for o, r in rates.items() if (r.high or 0.0) >= best_low)
    chosen = max(alike)  # the most passive of them
    value: dict[str, Any] = {"offset_bps": chosen}
    if tick_size is not None:
        value["tick_size"] = tick_size
    if alike == [best]:
        runner = max((o for o in rates if o != best), key=lambda o: rates[o].rate or 0.0)
        reason = (
            f"{best:+g} bps fills best within the horizon ({_fmt_rate(best, *usable[best])}), "
            f"its interval clear of the next best ({_fmt_rate(runner, *usable[runner])})"
        )
    else:
        reason = (
            f"{', '.join(f'{o:+g}' for o in alike)} bps fill alike within the horizon "
            f"(intervals overlap the best, {_fmt_rate(best, *usable[best])}); "
            f"the most passive, {chosen:+g} bps ({_fmt_rate(chosen, *usable[chosen])}), "
            "earns the most price"
        )
    return Pick(CHASE_OFFSET, scope, value, reason, evidence)


def chase_picks(buckets: Iterable[FillBucket], limits: TunerLimits) -> list[Pick]:
    """Per instrument (all hours pooled), then per instrument and hour."""
    by_inst: dict[str, dict[float, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    by_hour: dict[tuple[str, int], dict[float, list[int]]] = defaultdict(
        lambda: defaultdict(lambda: [0, 0])
    )
    ticks: dict[str, float] = {}
    for b in buckets:
        for target in (
            by_inst[b.instrument][b.offset_bps],
            by_hour[(b.instrument, b.hour)][b.offset_bps],
        ):
            target[0] += b.orders
            target[1] += b.filled
        if b.tick_size:
            ticks[b.instrument] = b.tick_size
    picks = []
    for inst in sorted(by_inst):
        counts = {o: (c[0], c[1]) for o, c in by_inst[inst].items()}
        picks.append(pick_offset(counts, {"instrument": inst}, limits, ticks.get(inst)))
    for inst, hour in sorted(by_hour):
        counts = {o: (c[0], c[1]) for o, c in by_hour[(inst, hour)].items()}
        picks.append(
            pick_offset(counts, {"instrument": inst, "hour": hour}, limits, ticks.get(inst))
        )
    return picks


def retry_picks(buckets: Iterable[RetryBucket], limits: TunerLimits) -> list[Pick]:
    """Per venue and error kind: the delays with the best successes per second of waiting,
    within the lifecycle's bounds, ascending, at most ``retry_attempts`` of them."""
    grouped: dict[tuple[str, str], dict[float, list[int]]] = defaultdict(
        lambda: defaultdict(lambda: [0, 0])
    )
    for b in buckets:
        entry = grouped[(b.venue, b.reason)][b.delay_s]
        entry[0] += b.attempts
        entry[1] += b.succeeded
    picks = []
    for (venue, reason), delays in sorted(grouped.items()):
        scope = {"venue": venue, "reason": reason}
        evidence = []
        scored: list[tuple[float, float]] = []
        for delay in sorted(delays):
            n, k = delays[delay]
            rate = wilson(k, n)
            per_s = success_per_second(rate, delay)
            within = limits.retry_min_delay_s <= delay <= limits.retry_max_delay_s
            usable = n >= limits.min_samples and within
            evidence.append(
                {"delay_s": delay, "success_per_s": per_s, "usable": usable, **rate.as_dict()}
            )
            if usable and per_s is not None and (rate.rate or 0.0) > 0:
                scored.append((per_s, delay))
        if not scored:
            why = (
                f"no delay within {limits.retry_min_delay_s:g}..{limits.retry_max_delay_s:g} s "
                f"with at least {limits.min_samples} retries and a success"
            )
            picks.append(Pick(RETRY_SCHEDULE, scope, None, f"no pick: {why}", evidence))
            continue
        top = sorted(scored, reverse=True)[: max(1, limits.retry_attempts)]
        schedule = sorted(delay for _, delay in top)
        reason = "best successes per second of waiting: " + ", ".join(
            f"{d:g} s ({s:.3g}/s)" for s, d in sorted(top, reverse=True)
        )
        picks.append(Pick(RETRY_SCHEDULE, scope, schedule, reason, evidence))
    return picks


def slice_picks(buckets: Iterable[SliceBucket], limits: TunerLimits) -> list[Pick]:
    """Per instrument: the largest slice (x visible depth) whose slippage stays under the
    limit, as do all smaller ones with enough samples; as an amount."""
    grouped: dict[str, list[SliceBucket]] = defaultdict(list)
    for b in buckets:
        grouped[b.instrument].append(b)
    picks = []
    for inst, rows in sorted(grouped.items()):
        rows.sort(key=lambda b: b.depth_ratio)
        evidence = []
        best: SliceBucket | None = None
        broken: SliceBucket | None = None
        for b in rows:
            est = mean_estimate(b.slices, b.mean_slippage_bps, b.var_slippage_bps)
            enough = b.slices >= limits.min_samples
            evidence.append(
                {"depth_ratio": b.depth_ratio, "enough": enough, "slippage_bps": est.as_dict()}
            )
            if not enough or broken is not None:
                continue
            if est.high is not None and est.high <= limits.max_slippage_bps:
                best = b
            else:
                broken = b
        scope = {"instrument": inst}
        if best is None:
            why = (
                f"no slice size with at least {limits.min_samples} slices keeps slippage under "
                f"{limits.max_slippage_bps:g} bps"
                if any(e["enough"] for e in evidence)
                else f"too few samples (fewer than {limits.min_samples} slices per size)"
            )
            picks.append(Pick(TWAP_MAX_SLICE, scope, None, f"no pick: {why}", evidence))
            continue
        depth = best.median_depth
        amount = None if depth is None else float(f"{best.depth_ratio * depth:.6g}")
        est = mean_estimate(best.slices, best.mean_slippage_bps, best.var_slippage_bps)
        reason = (
            f"slices up to {best.depth_ratio:g}x the visible depth slip {est.mean:.2f} bps "
            f"[{est.low:.2f}, {est.high:.2f}] (n={best.slices}), under {limits.max_slippage_bps:g}"
        )
        if broken is not None:
            reason += f"; {broken.depth_ratio:g}x does not"
        if amount is None:
            picks.append(
                Pick(
                    TWAP_MAX_SLICE,
                    scope,
                    None,
                    f"no pick: {reason}, but the depth is unknown",
                    evidence,
                )
            )
            continue
        reason += f"; median depth {depth:g} -> at most {amount:g} per slice"
        picks.append(
            Pick(
                TWAP_MAX_SLICE,
                scope,
                {"max_slice_amount": amount, "depth_ratio": best.depth_ratio},
                reason,
                evidence,
            )
        )
    return picks


def tune(
    fills: Sequence[FillBucket],
    retries: Sequence[RetryBucket] | None,
    slices: Sequence[SliceBucket],
    limits: TunerLimits,
    unavailable: dict[str, str] | None = None,
) -> TuningReport:
    """Every pick from the statistics; ``retries`` None: not stored (see ``unavailable``)."""
    picks = [
        *chase_picks(fills, limits),
        *retry_picks(retries or (), limits),
        *slice_picks(slices, limits),
    ]
    return TuningReport(picks, dict(unavailable or {}))


def settings_patch(report: TuningReport) -> dict[str, Any]:
    """The picked figures as plugin and lifecycle settings: ``{"chase": {"offsets": ...},
    "twap": {"max_slice_amount": ...}, "lifecycle": {"retry_schedule": ...}}``. A chase offset
    is applied only with the instrument's tick size known (prices stay on the tick)."""
    offsets: dict[str, dict[str, Any]] = {}
    for p in report.picks:
        if p.figure != CHASE_OFFSET or not p.picked or "tick_size" not in p.value:
            continue
        inst = p.scope["instrument"]
        entry = offsets.setdefault(inst, {"tick_size": p.value["tick_size"]})
        if "hour" in p.scope:
            entry.setdefault("hours", {})[str(p.scope["hour"])] = p.value["offset_bps"]
        else:
            entry["offset_bps"] = p.value["offset_bps"]
    # An hour's pick needs the instrument's own pick to fall back on.
    offsets = {i: e for i, e in offsets.items() if "offset_bps" in e}
    slices = {
        p.scope["instrument"]: p.value["max_slice_amount"]
        for p in report.picks
        if p.figure == TWAP_MAX_SLICE and p.picked
    }
    schedule = {
        p.scope["reason"]: p.value for p in report.picks if p.figure == RETRY_SCHEDULE and p.picked
    }
    patch: dict[str, Any] = {}
    if offsets:
        patch["chase"] = {"offsets": offsets}
    if slices:
        patch["twap"] = {"max_slice_amount": slices}
    if schedule:
        patch["lifecycle"] = {"retry_schedule": schedule}
    return patch
