"""Run chaos scenarios one after another and write the report: one verdict line each, a
table of the counts, the machine's load and the commit (``bench/results/chaos-latest.*``)."""

from __future__ import annotations

import asyncio
import os
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from oms_dev.benchmarks.report import machine_info
from oms_dev.chaos.config import ChaosConfig
from oms_dev.chaos.scenarios import SCENARIOS
from oms_dev.chaos.verdict import COUNT_COLUMNS, count_cell, make_result, verdict_line

RESULTS_DIR = Path("bench/results")
# A scenario that has not ended after this long is reported as failed (its stack is
# stopped by the cancellation) and the next one runs.
SCENARIO_TIMEOUT_S = 1_500.0


def failed_result(name: str, error: str, seconds: float) -> dict[str, Any]:
    """The result of a scenario that raised or ran out of time."""
    return make_result(
        name,
        requests=0,
        terminal=0,
        lost=0,
        duplicates_at_exchange=0,
        wrong_state=0,
        positions_mismatched=None,
        notifications_lost=None,
        notifications_doubled=None,
        faults={},
        seconds=seconds,
        details={},
        extra_failure=error,
    )


async def run_scenarios(
    names: Sequence[str],
    config: ChaosConfig,
    on_status: Callable[[str], None],
    on_result: Callable[[dict[str, Any]], None] = lambda _: None,
    timeout_s: float = SCENARIO_TIMEOUT_S,
) -> dict[str, Any]:
    """Run the named scenarios in order; the report (``chaos-latest.json``)."""
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ValueError(
            f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}"
        )
    load_before = os.getloadavg()
    t0 = time.monotonic()
    results: list[dict[str, Any]] = []
    for name in names:
        started = time.monotonic()
        try:
            result = await asyncio.wait_for(SCENARIOS[name](config, on_status), timeout_s)
        except TimeoutError:
            result = failed_result(
                name, f"no end after {timeout_s:.0f} s", time.monotonic() - started
            )
        except Exception as exc:  # one scenario's crash is its FAIL, the others still run
            result = failed_result(name, f"error: {exc!r}", time.monotonic() - started)
            result["details"]["traceback"] = traceback.format_exc()[-4000:]
        results.append(result)
        on_result(result)
    return {
        "mode": "quick" if config.quick else "full",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - t0, 1),
        "ok": all(r["ok"] for r in results),
        "verdicts": [verdict_line(r) for r in results],
        "results": results,
        "machine": machine_info(load_before),
    }


_COLUMNS = (*COUNT_COLUMNS, ("seconds", "seconds"))


def render_markdown(report: dict[str, Any]) -> str:
    """``chaos-latest.md``: the verdict lines, the counts, the faults and the machine."""
    machine = report["machine"]
    load = machine.get("load_average_before") or []
    after = machine.get("load_average_after") or []
    quick = " --quick" if report["mode"] == "quick" else ""
    lines = [
        "# oms chaos suite: latest run",
        "",
        f"`oms chaos run{quick}`, {report['started_at']}, {report['seconds']} s, commit "
        f"`{(machine.get('git_commit') or '?')[:12]}`"
        f"{' (uncommitted changes)' if machine.get('git_dirty') else ''}. "
        f"{machine.get('cores')} cores, load average {'/'.join(f'{v:.2f}' for v in load)} "
        f"before, {'/'.join(f'{v:.2f}' for v in after)} after (Kafka, every OMS process, "
        "the paper exchange and the flow share this machine).",
        "",
        "```",
        *report["verdicts"],
        "```",
        "",
        "| scenario | verdict | " + " | ".join(title for _, title in _COLUMNS) + " |",
        "|---|---|" + "---:|" * len(_COLUMNS),
    ]
    for r in report["results"]:
        cells = " | ".join(count_cell(r.get(key)) for key, _ in _COLUMNS)
        verdict = r["verdict"] if r["ok"] else f"**{r['verdict']}**"
        lines.append(f"| {r['scenario']} | {verdict} | {cells} |")
    lines += ["", "## Faults injected", ""]
    for r in report["results"]:
        faults = {k: v for k, v in r.get("faults", {}).items() if k != "summary"}
        lines.append(f"* `{r['scenario']}`: {r.get('faults', {}).get('summary', '-')}; "
                     f"`{orjson.dumps(faults).decode()}`")  # fmt: skip
        final = r.get("details", {}).get("final_states")
        if final:
            lines.append(f"  final states: `{orjson.dumps(final).decode()}`")
        failure = r.get("details", {}).get("failure")
        if failure:
            lines.append(f"  **failure**: {failure}")
    lines += [
        "",
        "A request is an order of the flow (or, for `hostile`, a message). terminal: orders "
        "with exactly one terminal state; lost: orders with none; duplicates at exchange: "
        "labels the paper exchange holds more than once; wrong state: several terminal "
        "states, not the one the order's kind expects, or disagreeing with the exchange; "
        "positions mismatched: the position keeper against `private/get_positions` per "
        "account and instrument at the end; notifications lost/doubled: the notices the "
        "routing rules should send (console channel) against the `sent` records on the "
        "notifications topic. `-`: not checked by that scenario.",
        "",
        "Every count, the details and the machine info: [`chaos-latest.json`](chaos-latest.json).",
        "",
    ]
    return "\n".join(lines)


def write_report(report: dict[str, Any], out_dir: Path = RESULTS_DIR) -> list[Path]:
    """Write ``chaos-latest.json`` and ``chaos-latest.md`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "chaos-latest.json"
    json_path.write_bytes(
        orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=str)
        + b"\n"
    )
    md_path = out_dir / "chaos-latest.md"
    md_path.write_text(render_markdown(report))
    return [json_path, md_path]
