"""Chaos scenario ``hostile``: hostile messages mixed into the request topic (``oms bench
hostile``), its result mapped into the suite's shape: a request is a hostile message or a valid
order; a hostile message is "terminal" when it has an outcome with a reason (a dead letter or a
rejection event), a valid order when it ends as expected."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from oms_dev.benchmarks.hostile import HostileConfig, run_hostile
from oms_dev.chaos.config import ChaosConfig
from oms_dev.chaos.verdict import make_result


def to_result(raw: dict[str, Any]) -> dict[str, Any]:
    """``run_hostile``'s report in the shared result shape."""
    valid_ok = raw["valid"] - raw["valid_not_ending_as_expected"]
    outcomes = raw["hostile_dead_lettered"] + raw["hostile_rejected_with_event"]
    wrong = (
        raw["valid_not_ending_as_expected"]
        + raw["foreign_labels_at_exchange"]
        + raw["outcomes_without_reason_text"]
    )
    failure = None
    if raw["worker_crashes"]:
        failure = "the worker crashed"
    elif not raw["ok"]:
        failure = "hostile checks failed (see details)"
    return make_result(
        "hostile",
        requests=raw["hostile"] + raw["valid"],
        terminal=valid_ok + outcomes,
        lost=raw["hostile_without_outcome"],
        duplicates_at_exchange=raw["labels_twice_at_exchange"],
        wrong_state=wrong,
        positions_mismatched=None,
        notifications_lost=None,
        notifications_doubled=None,
        faults={
            "kind": "hostile messages in the request topic",
            "hostile": raw["hostile"],
            "kinds": raw["hostile_kinds"],
            "summary": f"{raw['hostile']:,} hostile, {raw['hostile_dead_lettered']:,} "
            f"dead-lettered, {raw['hostile_rejected_with_event']:,} refused",
        },
        seconds=raw["seconds"],
        details=raw,
        extra_failure=failure,
    )


async def run(config: ChaosConfig, on_status: Callable[[str], None]) -> dict[str, Any]:
    hostile = HostileConfig(bootstrap=config.bootstrap)
    if config.quick:
        hostile.hostile, hostile.valid = 1_000, 100
    return to_result(await run_hostile(hostile, on_status))
