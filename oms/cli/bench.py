"""``oms bench ...``: self-contained benchmarks that print figures against a baseline."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from oms.cli.dev import dev_commands

bench_app = dev_commands("oms bench", "Benchmarks (each starts what it needs).")
console = Console(stderr=True)

# Options several benchmarks take.
JsonOption = Annotated[bool, typer.Option("--json", help="print one JSON object")]
PartitionsOption = Annotated[int, typer.Option()]
BrokerOption = Annotated[
    str | None, typer.Option(help="use this running Kafka instead of starting one")
]


@bench_app.command("e2e")
def e2e(
    orders: Annotated[int, typer.Option(help="orders to submit")] = 2_000,
    rate: Annotated[
        float | None, typer.Option(help="orders/s (default: as fast as possible)")
    ] = None,
    accounts: Annotated[int | None, typer.Option(help="paper accounts to spread over")] = None,
    partitions: PartitionsOption = 8,
    json: JsonOption = False,
    secure: Annotated[
        bool,
        typer.Option(
            help="signed requests + every pre-trade risk check (the default configuration); "
            "--no-secure: trusted mode, checks off"
        ),
    ] = True,
    compare_secure: Annotated[
        bool, typer.Option(help="run without, then with signing + risk checks; print both")
    ] = False,
    workers: Annotated[
        list[int] | None,
        typer.Option(
            "--workers",
            help="workers in the consumer group; repeat (--workers 1 --workers 2) to run each "
            "on the same broker and print the scaling ratio",
        ),
    ] = None,
    preload: Annotated[
        int,
        typer.Option(
            min=0,
            help="ended orders in the workers' table before measuring (written as its "
            "changelog records, restored when the workers start)",
        ),
    ] = 0,
    compare_preload: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="on one broker: a warm-up run, then this many ended orders preloaded, then "
            "an empty table; print them and the throughput ratio preloaded / empty",
        ),
    ] = None,
    secure_transport: Annotated[
        bool,
        typer.Option(
            help="run over plaintext Kafka, then over SASL_SSL with a principal per component "
            "and the ACLs (each on a fresh broker); print both and the throughput ratio"
        ),
    ] = False,
    idle: Annotated[
        float,
        typer.Option(
            min=0,
            help="after the warm-up, seconds with no orders during which each process's CPU "
            "is measured (idle_cpu_ms_per_s)",
        ),
    ] = 0.0,
) -> None:
    """Orders through Kafka, Faust and the paper exchange, against a raw Kafka baseline."""
    from oms_dev.benchmarks.e2e import (
        E2EConfig,
        run_e2e,
        run_e2e_compare_preload,
        run_e2e_scaling,
        run_e2e_secure_transport,
    )

    counts = sorted(set(workers or [1]))
    if any(n < 1 for n in counts):
        raise typer.BadParameter("at least one worker", param_hint="--workers")
    modes = [compare_secure, len(counts) > 1, compare_preload is not None, secure_transport]
    if sum(modes) > 1:
        raise typer.BadParameter(
            "one of --compare-secure, --compare-preload, --secure-transport or several "
            "--workers at a time"
        )
    # One configuration from the options; each mode below varies only what it is about.
    base = E2EConfig(
        orders=orders,
        rate=rate,
        accounts=accounts,
        partitions=partitions,
        secure=secure,
        workers=counts[0],
        preload=preload,
        idle_s=idle,
    )
    if compare_preload is not None:
        preloaded = compare_preload

        async def compare(config: E2EConfig, on_status: Callable[[str], None]) -> dict[str, Any]:
            return await run_e2e_compare_preload(config, preloaded, on_status=on_status)

        _print(_run("e2e", compare, base), "oms bench e2e --compare-preload", json)
        return
    if secure_transport:
        both = _run("e2e", run_e2e_secure_transport, base)
        # The table shows the comparison; each run's full figures are in the JSON output.
        shown = both if json else {k: v for k, v in both.items() if k != "runs"}
        _print(shown, "oms bench e2e --secure-transport", json)
        return
    if len(counts) > 1:

        async def scaling(config: E2EConfig, on_status: Callable[[str], None]) -> dict[str, Any]:
            return await run_e2e_scaling(config, counts, on_status=on_status)

        _print(_run("e2e", scaling, base), "oms bench e2e --workers", json)
        return

    def run(secure_mode: bool) -> dict[str, object]:
        return _run("e2e", run_e2e, dataclasses.replace(base, secure=secure_mode))

    if compare_secure:
        plain, secured = run(False), run(True)
        a, b = plain["throughput_per_s"], secured["throughput_per_s"]
        assert isinstance(a, float) and isinstance(b, float)
        result: dict[str, object] = {
            "plain": plain,
            "secure": secured,
            "secure_vs_plain_throughput": round(b / a, 3) if a else None,
        }
    else:
        result = run(secure)
    _print(result, "oms bench e2e", json)


@bench_app.command("conditions")
def conditions(
    orders: Annotated[int, typer.Option(help="resting conditional orders (engine)")] = 100_000,
    ticks: Annotated[int, typer.Option(help="ticks through the engine")] = 200_000,
    naive_ticks: Annotated[int, typer.Option(help="ticks sampled for the naive scan")] = 200,
    pipeline: Annotated[bool, typer.Option(help="also measure through Kafka and a worker")] = True,
    pipeline_orders: Annotated[int, typer.Option(help="orders resting in the worker")] = 2_000,
    pipeline_ticks: Annotated[int, typer.Option(help="ticks published to the worker")] = 100_000,
    rate: Annotated[
        float | None, typer.Option(help="ticks/s published (default 10000; 0: as fast as possible)")
    ] = 10_000.0,
    probes: Annotated[int, typer.Option(help="ticks that trigger a probe order")] = 200,
    json: JsonOption = False,
) -> None:
    """The trigger engine against a linear scan of every order; ticks through Kafka + a worker."""
    from oms_dev.benchmarks.conditions import ConditionsConfig, run_conditions

    config = ConditionsConfig(
        orders=orders,
        ticks=ticks,
        naive_ticks=naive_ticks,
        pipeline=pipeline,
        pipeline_orders=pipeline_orders,
        pipeline_ticks=pipeline_ticks,
        rate=rate or None,
        probes=probes,
    )
    result = _run("conditions", run_conditions, config)
    _print(result, "oms bench conditions", json)


def _run(
    name: str, run: Callable[..., Coroutine[Any, Any, dict[str, Any]]], config: Any
) -> dict[str, Any]:
    """Run one benchmark coroutine with a live status line (``bench <name>: <step>``)."""
    with console.status(f"bench {name}") as status:
        return asyncio.run(run(config, on_status=lambda s: status.update(f"bench {name}: {s}")))


def _print(result: dict[str, object], title: str, as_json: bool) -> None:
    from oms_dev.benchmarks.e2e import dumps

    if as_json:
        print(dumps(result))
        return
    from rich.table import Table

    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, str(value))
    Console().print(table)


@bench_app.command("chaos")
def chaos(
    orders: Annotated[int, typer.Option(help="orders to submit")] = 1_000,
    rate: Annotated[float, typer.Option(help="orders/s")] = 50.0,
    drop_every: Annotated[float, typer.Option(help="cut every connection this often, s")] = 3.0,
    rate_limit_fraction: Annotated[float, typer.Option(help="order requests refused 10028")] = 0.1,
    delay_fraction: Annotated[float, typer.Option(help="replies held back --delay-s")] = 0.01,
    delay_s: Annotated[float, typer.Option(help="how long a delayed reply waits, s")] = 5.0,
    bootstrap: BrokerOption = None,
    json: JsonOption = False,
) -> None:
    """The ``exchange-faults`` chaos scenario alone (``oms chaos run --scenario exchange-faults``
    with options): orders under dropped connections, rate limits and late replies; one terminal
    state each, no label twice at the exchange. Exits 1 if any check fails."""
    from oms_dev.chaos.flow import FlowConfig
    from oms_dev.chaos.scenarios.exchange_faults import ExchangeFaults, run_exchange_faults

    flow = FlowConfig(orders=orders, rate=rate, bootstrap=bootstrap)
    faults = ExchangeFaults(
        drop_every_s=drop_every,
        rate_limit_fraction=rate_limit_fraction,
        delay_fraction=delay_fraction,
        delay_s=delay_s,
    )

    async def scenario(_: Any, on_status: Callable[[str], None]) -> dict[str, Any]:
        return await run_exchange_faults(flow, faults, on_status)

    result = _run("chaos", scenario, None)
    _print(result, "oms bench chaos", json)
    raise typer.Exit(0 if result["ok"] else 1)


@bench_app.command("notify")
def notify(
    events: Annotated[int, typer.Option(help="order events to push through")] = 50_000,
    accounts: Annotated[int, typer.Option(help="accounts the events belong to")] = 100,
    partitions: PartitionsOption = 8,
    bootstrap: Annotated[
        str | None, typer.Option(help="use this broker (default: start one on free ports)")
    ] = None,
    json: JsonOption = False,
) -> None:
    """Order events through the notifier (Kafka, rules, grouping) to the console channel,
    against a raw Kafka consume of the same events."""
    from oms.logs import configure_logging
    from oms_dev.benchmarks.notify import NotifyBenchConfig, run_notify_bench

    configure_logging("warn")

    config = NotifyBenchConfig(
        events=events, accounts=accounts, partitions=partitions, bootstrap=bootstrap
    )
    result = _run("notify", run_notify_bench, config)
    _print(result, "oms bench notify", json)


@bench_app.command("positions")
def positions(
    fills: Annotated[int, typer.Option(help="fills to push through the keeper")] = 200_000,
    accounts: Annotated[int, typer.Option(help="accounts (x2 instruments = positions)")] = 20,
    partitions: PartitionsOption = 8,
    json: JsonOption = False,
) -> None:
    """Fills through Kafka and the position keeper; sink vs direct ClickHouse inserts."""
    from oms_dev.benchmarks.positions import PositionBenchConfig, run_positions_bench

    config = PositionBenchConfig(fills=fills, accounts=accounts, partitions=partitions)
    result = _run("positions", run_positions_bench, config)
    _print(result, "oms bench positions", json)


@bench_app.command("queries")
def queries(
    events: Annotated[int, typer.Option(help="order events in the history")] = 10_000_000,
    position_changes: Annotated[int, typer.Option(help="position changes")] = 1_000_000,
    repeat: Annotated[int, typer.Option(help="timed runs per query")] = 10,
    json: JsonOption = False,
) -> None:
    """The README's analyst queries over a generated history in embedded ClickHouse:
    p50/p99 per query."""
    from oms_dev.benchmarks.clickhouse_queries import QueryBenchConfig, run_query_bench

    config = QueryBenchConfig(events=events, position_changes=position_changes, repeat=repeat)
    with console.status("bench queries") as status:
        result = run_query_bench(config, on_status=lambda s: status.update(f"bench queries: {s}"))
    if json:
        _print(result, "oms bench queries", True)
        return
    from rich.table import Table

    table = Table(title=f"oms bench queries ({events:,} events, {position_changes:,} changes)")
    for column in ("query", "rows", "p50 ms", "p99 ms"):
        table.add_column(column, justify="left" if column == "query" else "right")
    for q in result["queries"]:
        table.add_row(q["name"], str(q["rows"]), str(q["p50_ms"]), str(q["p99_ms"]))
    Console().print(table)
    Console().print(f"history loaded in {result['loaded']['seconds']} s "
                    f"({result['load_rows_per_s']:,.0f} rows/s)")  # fmt: skip


@bench_app.command("all")
def all_scenarios(
    quick: Annotated[
        bool, typer.Option("--quick", help="each scenario once, small counts (a few minutes)")
    ] = False,
    repetitions: Annotated[int, typer.Option(help="repetitions per scenario (full mode)")] = 3,
    only: Annotated[
        list[str] | None, typer.Option(help="run only these scenarios (repeatable)")
    ] = None,
    bootstrap: Annotated[
        str | None,
        typer.Option(
            envvar="OMS_KAFKA__BOOTSTRAP",
            help="running broker for notify/positions (default: each starts its own)",
        ),
    ] = None,
    out: Annotated[str, typer.Option(help="directory for latest.json/.md and charts")] = (
        "bench/results"
    ),
) -> None:
    """Every scenario (e2e, conditions, notify, positions, ClickHouse queries), repeated for a
    median and spread; writes latest.json, latest.md and PNG charts."""
    from pathlib import Path

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from oms_dev.benchmarks.suite import SuiteConfig, run_suite, scenarios

    config = SuiteConfig(
        quick=quick, repetitions=repetitions, only=only, bootstrap=bootstrap, out_dir=Path(out)
    )
    plan = {s.name: s.repetitions for s in scenarios(config)}
    done: set[tuple[str, int]] = set()
    with Progress(
        TextColumn("[bold]{task.fields[scenario]}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} runs"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
    ) as progress:
        task = progress.add_task("", total=sum(plan.values()), scenario="bench all")

        def on_progress(name: str, rep: int, reps: int, text: str) -> None:
            if text == "starting":
                done.add((name, rep))
                progress.update(task, completed=len(done) - 1)
            progress.update(task, scenario=f"{name} {rep}/{reps}", description=text[:70])

        report, written = run_suite(config, on_progress)
        progress.update(task, completed=sum(plan.values()), description="done")
    from rich.table import Table

    table = Table(title=f"oms bench all{' --quick' if quick else ''} ({report['seconds']} s)")
    for column in ("scenario", "figure", "median", "spread", "baseline", "ratio", "target", "met"):
        table.add_column(column, justify="left" if column in ("scenario", "figure") else "right")
    for f in report["figures"]:
        spread = "-" if f["spread_pct"] is None else f"{f['spread_pct']:.1f}%"
        table.add_row(
            f["scenario"], f["figure"], str(f["median"]),
            spread + (" noisy" if f["noisy"] else ""), str(f["baseline"]), str(f["ratio"]),
            "-" if f["target"] is None else f"{'>=' if f['target_kind'] == 'min' else '<='} "
            f"{f['target']}", {True: "yes", False: "NO", None: "-"}[f["met"]],
        )  # fmt: skip
    # Wide enough for the figure names when the output is not a terminal (make, CI logs).
    Console(width=None if console.is_terminal else 160).print(table)
    for name, error in report["errors"].items():
        console.print(f"[red]{name} failed:[/red] {error}")
    console.print("wrote " + ", ".join(str(p) for p in written))
    raise typer.Exit(1 if report["errors"] else 0)


@bench_app.command("hostile")
def hostile(
    messages: Annotated[int, typer.Option(help="hostile messages (hypothesis)")] = 10_000,
    valid: Annotated[int, typer.Option(help="valid orders mixed in")] = 500,
    seed: Annotated[int, typer.Option(help="hypothesis seed")] = 8,
    bootstrap: BrokerOption = None,
    json: JsonOption = False,
) -> None:
    """Hostile messages (malformed, huge, mistyped, unicode, injections) mixed with valid
    orders into a real worker: no crash, each dead-lettered or refused with a reason, valid
    orders correct, no label twice at the exchange. Exits 1 if any check fails."""
    from oms_dev.benchmarks.hostile import HostileConfig, run_hostile

    config = HostileConfig(hostile=messages, valid=valid, seed=seed, bootstrap=bootstrap)
    result = _run("hostile", run_hostile, config)
    _print(result, "oms bench hostile", json)
    raise typer.Exit(0 if result["ok"] else 1)


@bench_app.command("memory")
def memory(
    orders: Annotated[
        int, typer.Option(help="conditional, then as many open, then as many ended orders")
    ] = 10_000,
    bootstrap: BrokerOption = None,
    retention: Annotated[
        float, typer.Option(help="s an ended order stays in the worker's table")
    ] = 5.0,
    json: JsonOption = False,
) -> None:
    """The worker's RSS per 10,000 resting conditional orders, per 10,000 open orders and per
    10,000 orders that ended and left its table."""
    from oms_dev.benchmarks.memory import MemoryBenchConfig, run_memory_bench

    config = MemoryBenchConfig(orders=orders, bootstrap=bootstrap, retention_s=retention)
    result = _run("memory", run_memory_bench, config)
    _print(result, "oms bench memory", json)


@bench_app.command("route")
def route(
    decisions: Annotated[int, typer.Option(min=1, help="routing decisions to time")] = 20_000,
    venues: Annotated[int, typer.Option(min=1, help="venues per decision")] = 3,
    levels: Annotated[int, typer.Option(min=1, help="book levels per venue")] = 10,
    e2e_orders: Annotated[
        int,
        typer.Option(min=0, help="single-venue and routed orders timed through a stack (0: none)"),
    ] = 40,
    second_venue: Annotated[
        str, typer.Option(help="how the second venue is reached: deribit or ccxt")
    ] = "deribit",
    bootstrap: Annotated[
        str | None, typer.Option(help="an existing Kafka (default: a fresh broker)")
    ] = None,
    json: JsonOption = False,
) -> None:
    """Routing decisions/s of the pure smart order router (split + its event payload), then
    the latency a route adds through the stack against a single-venue order, same run."""
    from oms_dev.benchmarks.route import (
        RouteConfig,
        RouteE2EConfig,
        run_route_bench,
        run_route_e2e,
    )

    if second_venue not in ("deribit", "ccxt"):
        raise typer.BadParameter("deribit or ccxt", param_hint="--second-venue")
    config = RouteConfig(decisions=decisions, venues=venues, levels=levels)
    result: dict[str, Any] = {"decisions": run_route_bench(config)}
    if e2e_orders:
        e2e = RouteE2EConfig(
            orders=e2e_orders,
            second_kind="ccxt" if second_venue == "ccxt" else "deribit",
            bootstrap=bootstrap,
        )
        result["end_to_end"] = _run("route", run_route_e2e, e2e)
    _print(result, "oms bench route", json)


@bench_app.command("history")
def history(
    rounds: Annotated[int, typer.Option(help="rounds of passive orders (one per offset)")] = 600,
    slice_rounds: Annotated[int, typer.Option(help="TWAP slices of varied size")] = 300,
    seed: Annotated[int, typer.Option(help="seed of the synthetic market")] = 7,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="an empty or new directory for the history (default: a temporary one)"),
    ] = None,
    max_slippage_bps: Annotated[
        float, typer.Option(help="the TWAP slice limit's slippage bound for this run")
    ] = 1.0,
    json: JsonOption = False,
) -> None:
    """A synthetic history from the paper exchange's matching engine, in which one chase
    offset fills clearly better; then the tuner's picks, explained as `oms tune show` does.
    Exit 1 if the tuner did not pick the offset the engine filled best."""
    import tempfile

    from oms.cli.tune import print_report, report_dict
    from oms.settings import get_settings
    from oms_dev.benchmarks.history import HistoryConfig, run_history_bench

    if data_dir is not None and data_dir.exists() and any(data_dir.iterdir()):
        # Synthetic orders must never land in a real history.
        raise typer.BadParameter(f"{data_dir} is not empty", param_hint="--data-dir")
    base = get_settings()
    where = data_dir or Path(tempfile.mkdtemp(prefix="oms-history-"))
    settings = base.model_copy(
        update={
            "data_dir": where,
            "clickhouse_url": None,
            "tuning": base.tuning.model_copy(update={"max_slippage_bps": max_slippage_bps}),
        }
    )
    config = HistoryConfig(rounds=rounds, slice_rounds=slice_rounds, seed=seed)
    with console.status("bench history") as status:
        result = run_history_bench(
            config, settings, on_status=lambda s: status.update(f"bench history: {s}")
        )
    stats, report = result.pop("stats"), result.pop("report")
    if json:
        from oms_dev.benchmarks.e2e import dumps

        print(dumps({**result, "tuning": report_dict(stats, report)}))
    else:
        _print(result, "oms bench history", False)
        print_report(stats, report, Console())
        Console().print(
            f"again later: OMS_DATA_DIR={where} OMS_TUNING__MAX_SLIPPAGE_BPS={max_slippage_bps} "
            "oms tune show"
        )
    raise typer.Exit(0 if result["ok"] else 1)
