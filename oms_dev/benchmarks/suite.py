"""``oms bench all``: every benchmark scenario, repeated, summarized into one report.

Scenarios are the existing ``oms bench`` ones (their ``run_*`` functions, unchanged), plus
the ClickHouse query benchmark. The ones that open embedded ClickHouse (``positions``,
``queries``) run as ``python -m oms.cli.main bench ... --json`` child processes, because chDB
holds one engine per process; the others run in this process, each repetition in its own
event loop. A scenario that fails is reported as failed; the others still run.

``--quick`` runs each once with small counts (a few minutes on a 2-core machine, including
the Kafka brokers the e2e and conditions scenarios start for themselves); the full run
repeats each scenario (default 3) for a median and spread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from oms_dev.benchmarks.report import Figure

Status = Callable[[str], None]


@dataclass
class Scenario:
    """One benchmark scenario: how to run it once, how often, and its figures."""

    name: str
    run: Callable[[Status], dict[str, Any]]
    repetitions: int
    figures: list[Figure] = field(default_factory=list)
    # Figures that depend on the result (the query benchmark names its queries).
    dynamic_figures: Callable[[dict[str, Any]], list[Figure]] | None = None


@dataclass
class SuiteConfig:
    quick: bool = False
    repetitions: int = 3
    only: list[str] | None = None
    bootstrap: str | None = None  # a running broker for notify/positions (None: their own)
    out_dir: Path = Path("bench/results")


# --- runners ------------------------------------------------------------------------------


@contextlib.contextmanager
def own_broker_env() -> Iterator[None]:
    """Hide ``OMS_KAFKA__*`` from the environment while a scenario that starts its own broker
    runs: its service processes inherit the environment, and a nested ``OMS_KAFKA__BOOTSTRAP``
    would point them at another broker than the one their topics were created on."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("OMS_KAFKA__")}
    try:
        yield
    finally:
        os.environ.update(saved)


def _bounded(coro: Coroutine[Any, Any, dict[str, Any]], timeout_s: float) -> dict[str, Any]:
    """Run a scenario in its own event loop; past ``timeout_s`` it is cancelled (its
    ``finally`` blocks stop what it started) and TimeoutError is raised."""
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


def _e2e(orders: int, rate: float | None, timeout_s: float) -> Callable[[Status], dict[str, Any]]:
    def run(status: Status) -> dict[str, Any]:
        from oms_dev.benchmarks.e2e import E2EConfig, run_e2e

        with own_broker_env():
            config = E2EConfig(orders=orders, rate=rate)
            return _bounded(run_e2e(config, on_status=status), timeout_s)

    return run


def _e2e_preload(orders: int, preload: int, timeout_s: float) -> Callable[[Status], dict[str, Any]]:
    def run(status: Status) -> dict[str, Any]:
        from oms_dev.benchmarks.e2e import E2EConfig, run_e2e_compare_preload

        with own_broker_env():
            config = E2EConfig(orders=orders)
            return _bounded(run_e2e_compare_preload(config, preload, on_status=status), timeout_s)

    return run


def _route(orders: int, timeout_s: float) -> Callable[[Status], dict[str, Any]]:
    """The pure router's decisions/s, then single-venue against routed orders through a
    two-venue stack (flattened: ``decisions.*`` and the stack's figures at the top)."""

    def run(status: Status) -> dict[str, Any]:
        from oms_dev.benchmarks.route import (
            RouteConfig,
            RouteE2EConfig,
            run_route_bench,
            run_route_e2e,
        )

        decisions = run_route_bench(RouteConfig())
        with own_broker_env():
            config = RouteE2EConfig(orders=orders)
            e2e = _bounded(run_route_e2e(config, on_status=status), timeout_s)
        return {"decisions": decisions, **e2e}

    return run


def _conditions(quick: bool, timeout_s: float) -> Callable[[Status], dict[str, Any]]:
    def run(status: Status) -> dict[str, Any]:
        from oms_dev.benchmarks.conditions import ConditionsConfig, run_conditions

        if quick:
            # The engine alone: the pipeline part needs a broker and a worker of its own.
            config = ConditionsConfig(orders=20_000, ticks=50_000, naive_ticks=50, pipeline=False)
        else:
            config = ConditionsConfig()
        with own_broker_env():
            return _bounded(run_conditions(config, on_status=status), timeout_s)

    return run


def _notify(
    events: int, bootstrap: str | None, timeout_s: float
) -> Callable[[Status], dict[str, Any]]:
    def run(status: Status) -> dict[str, Any]:
        from oms.logs import configure_logging
        from oms_dev.benchmarks.notify import NotifyBenchConfig, run_notify_bench

        configure_logging("warn")
        config = NotifyBenchConfig(events=events, bootstrap=bootstrap)
        return _bounded(run_notify_bench(config, on_status=status), timeout_s)

    return run


def run_cli_json(
    args: list[str], status: Status, env: dict[str, str] | None = None, timeout_s: float = 900
) -> dict[str, Any]:
    """``python -m oms.cli.main <args>`` in a child process; its last stdout line that is a
    JSON object is the result. Past ``timeout_s`` the child gets SIGINT (so it stops the
    services it started), then SIGKILL, and TimeoutError is raised."""
    status(f"oms {' '.join(args)}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "oms.cli.main", *args], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        raise TimeoutError(f"oms {' '.join(args)} took over {timeout_s:.0f} s") from None
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                result = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(result, dict):
                return result
    tail = "\n".join((stderr or stdout).splitlines()[-15:])
    raise RuntimeError(f"oms {' '.join(args)} exited {proc.returncode}: {tail}")


def _positions(
    fills: int, bootstrap: str | None, timeout_s: float
) -> Callable[[Status], dict[str, Any]]:
    env = {"OMS_KAFKA__BOOTSTRAP": bootstrap} if bootstrap else None

    def run(status: Status) -> dict[str, Any]:
        args = ["bench", "positions", "--fills", str(fills), "--json"]
        return run_cli_json(args, status, env, timeout_s)

    return run


def _queries(
    events: int, changes: int, repeat: int, timeout_s: float
) -> Callable[[Status], dict[str, Any]]:
    def run(status: Status) -> dict[str, Any]:
        args = ["bench", "queries", "--events", str(events), "--position-changes", str(changes),
                "--repeat", str(repeat), "--json"]  # fmt: skip
        return run_cli_json(args, status, timeout_s=timeout_s)

    return run


def _memory(
    orders: int, bootstrap: str | None, timeout_s: float
) -> Callable[[Status], dict[str, Any]]:
    def run(status: Status) -> dict[str, Any]:
        from oms_dev.benchmarks.memory import MemoryBenchConfig, run_memory_bench

        config = MemoryBenchConfig(orders=orders, bootstrap=bootstrap)
        if bootstrap:
            return _bounded(run_memory_bench(config, on_status=status), timeout_s)
        with own_broker_env():
            return _bounded(run_memory_bench(config, on_status=status), timeout_s)

    return run


def query_figures(result: dict[str, Any]) -> list[Figure]:
    """p50 and p99 of each README query, named by the README's comment."""
    size = (
        f"{result.get('events', 0):,} events, {result.get('position_changes', 0):,} position "
        f"changes, {(result.get('queries') or [{}])[0].get('runs', '?')} runs per query"
    )
    out = [Figure("queries", f"history: {size}", "query_count", "queries")]
    for i, query in enumerate(result.get("queries", [])):
        name = str(query.get("name", f"query {i}"))
        name = name if len(name) <= 60 else name[:57] + "..."
        out.append(Figure("queries", f"{name}: p50", f"queries.{i}.p50_ms", "ms"))
        out.append(Figure("queries", f"{name}: p99", f"queries.{i}.p99_ms", "ms"))
    return out


# --- the scenarios ------------------------------------------------------------------------


# The worker-side figures of bench conditions (full mode: quick runs the engine alone).
_CONDITIONS_PIPELINE = [
    Figure(
        "conditions",
        "ticks/s consumed by a worker (published at 10,000/s)",
        "pipeline_ticks_per_s",
        "/s",
        "baseline_consume_ticks_per_s",
        9_500,
    ),
    Figure("conditions", "trigger latency p50", "trigger_latency_ms.p50", "ms"),
    Figure(
        "conditions",
        "trigger latency p99",
        "trigger_latency_ms.p99",
        "ms",
        target=50,
        target_kind="max",
    ),
]


def scenarios(config: SuiteConfig) -> list[Scenario]:
    """The suite, sized for quick or full mode."""
    quick = config.quick
    reps = 1 if quick else max(1, config.repetitions)
    # Per repetition; a scenario stuck past it is stopped and reported as failed.
    limit = 180.0 if quick else 900.0
    out = [
        Scenario(
            "e2e",
            _e2e(1_000 if quick else 5_000, None, limit),
            reps,
            [
                Figure(
                    "e2e",
                    "orders/s, as fast as possible",
                    "throughput_per_s",
                    "/s",
                    "baseline_throughput_per_s",
                    1_000,
                ),
                Figure("e2e", "ratio to raw Kafka 2-hop passthrough", "ratio", "", target=0.25),
                Figure(
                    "e2e",
                    "latency p50 (backlog: publishing outruns the worker)",
                    "latency_ms.p50",
                    "ms",
                ),
                Figure("e2e", "latency p99 (backlog)", "latency_ms.p99", "ms"),
                Figure(
                    "e2e",
                    "longest time with orders outstanding and none acknowledged",
                    "max_ack_gap_ms",
                    "ms",
                    target=500,
                    target_kind="max",
                ),
                Figure(
                    "e2e",
                    "worker CPU per order, as fast as possible",
                    "worker_cpu_ms_per_order",
                    "ms",
                    target=0.6,
                    target_kind="max",
                ),
                Figure(
                    "e2e",
                    "CPU per order in every process (workers, exchange, gateway, Kafka, clients)",
                    "cpu_budget.total_ms_per_order",
                    "ms",
                ),
                Figure(
                    "e2e",
                    "orders/s at which that CPU fills every core",
                    "cpu_budget.ceiling_per_s",
                    "/s",
                ),
                Figure(
                    "e2e",
                    "the same if the workers cost nothing",
                    "cpu_budget.ceiling_without_workers_per_s",
                    "/s",
                ),
            ],
        ),
        Scenario(
            "e2e-rate20",
            _e2e(300 if quick else 600, 20.0, limit),
            reps,
            [
                Figure("e2e-rate20", "latency p50 at 20/s", "latency_ms.p50", "ms",
                       target=10, target_kind="max"),
                Figure("e2e-rate20", "latency p99 at 20/s", "latency_ms.p99", "ms",
                       target=25, target_kind="max"),
                Figure("e2e-rate20", "worker CPU per order at 20/s", "worker_cpu_ms_per_order",
                       "ms", target=2, target_kind="max"),
            ],
        ),
        Scenario(
            "route",
            _route(10 if quick else 40, limit),
            1 if quick else min(reps, 2),
            [
                Figure("route", "routing decisions/s (3 venues, 10 levels)",
                       "decisions.decisions_per_s", "/s"),
                Figure("route", "single-venue order, publish to filled, p50",
                       "single_venue_ms.p50", "ms"),
                Figure("route", "routed order across two venues, publish to filled, p50",
                       "routed_ms.p50", "ms"),
                Figure("route", "latency a route adds, p50", "route_adds_ms.p50", "ms"),
            ],
        ),
    ]  # fmt: skip
    if not quick:
        out.append(
            Scenario(
                "e2e-paced",
                _e2e(5_000, 500.0, limit),
                reps,
                [
                    Figure(
                        "e2e-paced",
                        "orders/s, paced at 500/s",
                        "throughput_per_s",
                        "/s",
                        "baseline_throughput_per_s",
                    ),
                    Figure("e2e-paced", "latency p50 at 500/s", "latency_ms.p50", "ms"),
                    Figure(
                        "e2e-paced",
                        "latency p99 at 500/s",
                        "latency_ms.p99",
                        "ms",
                        target=50,
                        target_kind="max",
                    ),
                ],
            )
        )
        out.append(
            Scenario(
                "e2e-preload",
                _e2e_preload(2_000, 200_000, limit),
                min(reps, 2),
                [
                    Figure(
                        "e2e-preload",
                        "orders/s with ended orders preloaded / with an empty table",
                        "throughput_preloaded_vs_empty",
                        "",
                        target=0.9,
                        note="the count preloaded is the run's `preload`",
                    ),
                ],
            )
        )
    out += [
        Scenario(
            "conditions",
            _conditions(quick, limit),
            reps,
            [
                *([] if quick else _CONDITIONS_PIPELINE),
                Figure(
                    "conditions",
                    "trigger engine ticks/s",
                    "engine_ticks_per_s",
                    "/s",
                    "naive_ticks_per_s",
                    note="baseline: a linear scan of every order",
                ),
                Figure("conditions", "engine bytes per resting order", "bytes_per_order", "B"),
            ],
        ),
        Scenario(
            "notify",
            _notify(10_000 if quick else 50_000, config.bootstrap, limit),
            reps,
            [
                Figure(
                    "notify",
                    "events/s through the notifier",
                    "events_per_s",
                    "/s",
                    "baseline_raw_consume_per_s",
                ),
            ],
        ),
        Scenario(
            "positions",
            _positions(20_000 if quick else 200_000, config.bootstrap, limit),
            reps,
            [
                Figure(
                    "positions",
                    "fills/s through Kafka and the keeper",
                    "fills_per_s",
                    "/s",
                    target=5_000,
                ),
                Figure(
                    "positions",
                    "sink rows/s",
                    "sink_rows_per_s",
                    "/s",
                    "direct_insert_rows_per_s",
                    note="baseline: direct bulk inserts",
                ),
                Figure("positions", "sink ratio", "sink_ratio", "", target=0.5),
            ],
        ),
        Scenario(
            "queries",
            _queries(
                500_000 if quick else 10_000_000,
                50_000 if quick else 1_000_000,
                5 if quick else 10,
                limit,
            ),
            1,  # p50/p99 are already over the query's own repetitions
            [
                Figure(
                    "queries", "history load, rows/s (INSERT ... SELECT)", "load_rows_per_s", "/s"
                )
            ],
            dynamic_figures=query_figures,
        ),
    ]
    out.append(
        Scenario(
            "memory",
            _memory(2_000 if quick else 10_000, config.bootstrap, limit),
            1 if quick else min(reps, 2),
            [
                Figure("memory", "worker RSS per 10,000 resting conditional orders",
                       "per_10k_conditional_mb", "MB"),
                Figure("memory", "worker RSS per 10,000 open orders", "per_10k_open_mb", "MB"),
                Figure("memory", "worker RSS per 10,000 orders ended and purged",
                       "per_10k_ended_purged_mb", "MB"),
                Figure("memory", "worker peak RSS (VmHWM)", "peak_rss_mb", "MB"),
            ],
        )
    )  # fmt: skip
    if config.only:
        out = [s for s in out if s.name in config.only]
    return out


def run_suite(
    config: SuiteConfig, progress: Callable[[str, int, int, str], None] | None = None
) -> tuple[dict[str, Any], list[Path]]:
    """Run every scenario, write the report; returns it and the files written.

    With ``config.only``, the other scenarios' runs are kept from the report already in
    ``out_dir`` (same mode), so one scenario can be measured again without the rest; the
    report then says which scenarios were re-run, and on which commit the others ran.
    ``progress(scenario, repetition, repetitions, status)`` is called on every status line.
    """
    from oms_dev.benchmarks.report import build_report, machine_info, summarize, write_report

    load_before = os.getloadavg()
    mode = "quick" if config.quick else "full"
    every = scenarios(replace(config, only=None))
    suite = scenarios(config)
    runs: dict[str, list[dict[str, Any]]] = {}
    errors: dict[str, str] = {}
    kept_from: dict[str, Any] | None = None
    if config.only:
        previous = _previous_report(config.out_dir, mode)
        if previous is not None:
            rerun = {s.name for s in suite}
            runs = {k: v for k, v in previous["runs"].items() if k not in rerun}
            errors = {
                k: v for k, v in previous.get("errors", {}).items() if k.split("#")[0] not in rerun
            }
            kept_from = {
                "rerun": sorted(rerun),
                "kept": sorted(runs),
                "kept_commit": previous.get("machine", {}).get("git_commit"),
                "kept_load_average": previous.get("machine", {}).get("load_average"),
            }
    t0 = time.monotonic()

    def write() -> tuple[dict[str, Any], list[Path]]:
        figures: list[Figure] = []
        for scenario in every:
            figures += scenario.figures
            if scenario.dynamic_figures and runs.get(scenario.name):
                figures += scenario.dynamic_figures(runs[scenario.name][-1])
        report = build_report(
            summarize(figures, runs),
            runs,
            machine_info(load_before),
            mode=mode,
            seconds=time.monotonic() - t0,
            errors=errors,
        )
        if kept_from is not None:
            report["partial_rerun"] = kept_from
        return report, write_report(report, config.out_dir)

    for scenario in suite:
        runs.pop(scenario.name, None)
        for rep in range(scenario.repetitions):

            def status(text: str, _s: Scenario = scenario, _r: int = rep) -> None:
                if progress:
                    progress(_s.name, _r + 1, _s.repetitions, text)

            status("starting")
            started = time.monotonic()
            try:
                result = scenario.run(status)
            except Exception as exc:  # one failing scenario must not lose the others' figures
                text = str(exc) or "past its time limit, stopped"
                errors[f"{scenario.name}#{rep + 1}"] = f"{type(exc).__name__}: {text}"[:2_000]
                continue
            result["scenario_seconds"] = round(time.monotonic() - started, 1)
            runs.setdefault(scenario.name, []).append(result)
        # Written after every scenario: an interrupted run still leaves its figures.
        status("writing the report")
        write()
    return write()


def _previous_report(out_dir: Path, mode: str) -> dict[str, Any] | None:
    """The report already in ``out_dir`` if it was made in the same mode."""
    path = out_dir / "latest.json"
    if not path.exists():
        return None
    report: dict[str, Any] = orjson.loads(path.read_bytes())
    return report if report.get("mode") == mode else None
