"""The benchmark report writer: figures over repetitions, noisy runs, targets, the files."""

from __future__ import annotations

from pathlib import Path

import orjson

from oms_dev.benchmarks.e2e import bucket_counts, latency_histogram, timeline
from oms_dev.benchmarks.report import (
    NOISY_SPREAD_PCT,
    Figure,
    build_report,
    lookup,
    machine_info,
    render_markdown,
    summarize,
    write_report,
)
from oms_dev.benchmarks.suite import query_figures

RUNS = {
    "e2e": [
        {"throughput_per_s": 400.0, "baseline_throughput_per_s": 8000.0, "latency_ms": {"p99": 90}},
        {"throughput_per_s": 500.0, "baseline_throughput_per_s": 6000.0, "latency_ms": {"p99": 40}},
        {
            "throughput_per_s": 450.0,
            "baseline_throughput_per_s": 7000.0,
            "latency_ms": {"p99": 45},
            "latency_histogram": latency_histogram([1.0, 2.0, 2.5, 40.0]),
        },
    ],
    "e2e-paced": [{"throughput_per_s": 100.0, "latency_histogram": latency_histogram([])}],
    "notify": [{"events_per_s": 10_000.0}, {"events_per_s": 10_100.0}],
    "queries": [{"queries": [{"name": "orders per status", "p50_ms": 3.0, "p99_ms": 9.5}]}],
}
FIGURES = [
    Figure("e2e", "orders/s", "throughput_per_s", "/s", "baseline_throughput_per_s", 1_000),
    Figure("e2e", "p99", "latency_ms.p99", "ms", target=50, target_kind="max"),
    Figure("notify", "events/s", "events_per_s", "/s"),
    Figure("positions", "fills/s", "fills_per_s", "/s", target=5_000),
]


def test_lookup_reads_dotted_paths_and_list_indexes() -> None:
    result = {"a": {"b": 2}, "q": [{"p": 1.5}], "flag": True, "nan": float("nan")}
    assert lookup(result, "a.b") == 2.0
    assert lookup(result, "q.0.p") == 1.5
    assert lookup(result, "q.1.p") is None
    assert lookup(result, "a.missing") is None
    assert lookup(result, "flag") is None  # a bool is not a figure
    assert lookup(result, "nan") is None


def test_median_spread_ratio_and_targets() -> None:
    by_label = {s.figure.label: s for s in summarize(FIGURES, RUNS)}

    throughput = by_label["orders/s"]
    assert throughput.median == 450.0
    assert throughput.baseline == 7000.0
    assert throughput.ratio == 450.0 / 7000.0
    assert throughput.spread_pct == (500 - 400) / 450 * 100
    assert throughput.noisy  # 22% > the threshold
    assert throughput.met is False

    p99 = by_label["p99"]
    assert p99.median == 45
    assert p99.met is True  # "max" target: 45 <= 50
    assert p99.noisy

    events = by_label["events/s"]
    assert events.spread_pct is not None and events.spread_pct < NOISY_SPREAD_PCT
    assert not events.noisy
    assert events.met is None  # no target

    missing = by_label["fills/s"]  # the scenario failed or was not run
    assert missing.median is None and missing.met is None and missing.spread_pct is None


def test_single_repetition_has_no_spread() -> None:
    [summary] = summarize([Figure("q", "x", "v")], {"q": [{"v": 3.0}]})
    assert summary.spread_pct is None
    assert not summary.noisy


def test_query_figures_are_named_by_the_readme_comment() -> None:
    figures = query_figures(RUNS["queries"][0])[1:]  # after the history size line
    assert [f.label for f in figures] == ["orders per status: p50", "orders per status: p99"]
    [p50, p99] = summarize(figures, RUNS)
    assert (p50.median, p99.median) == (3.0, 9.5)


def test_markdown_table_flags_noise_and_unmet_targets() -> None:
    report = build_report(
        summarize(FIGURES, RUNS), RUNS, machine_info((1.0, 1.0, 1.0)), mode="quick",
        seconds=12.3, errors={"positions#1": "RuntimeError: boom"},
    )  # fmt: skip
    text = render_markdown(report, ["/x/throughput.png"])
    rows = [line for line in text.splitlines() if line.startswith("| e2e | orders/s")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[2] == "450.0 /s"
    assert "**noisy**" in cells[3]
    assert cells[4] == "3"  # repetitions
    assert cells[5] == "7,000"
    assert cells[6] == "0.0643"
    assert cells[7] == ">= 1,000 /s"
    assert cells[8] == "**no**"
    assert "`oms bench all --quick`" in text
    assert "`positions#1`: RuntimeError: boom" in text
    assert "![throughput](throughput.png)" in text


def test_write_report_writes_json_markdown_and_charts(tmp_path: Path) -> None:
    report = build_report(summarize(FIGURES, RUNS), RUNS, machine_info(), mode="full", seconds=1.0)
    written = write_report(report, tmp_path)
    names = sorted(p.name for p in written)
    assert names == ["e2e-latency.png", "latest.json", "latest.md", "throughput.png"]
    for png in ("e2e-latency.png", "throughput.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = orjson.loads((tmp_path / "latest.json").read_bytes())
    assert data["mode"] == "full"
    assert data["runs"] == RUNS
    machine = data["machine"]
    assert machine["cores"] and machine["python"]
    assert set(machine["versions"]) >= {
        "faust-streaming",
        "aiokafka",
        "clickhouse-connect",
        "kafka",
    }
    assert machine["versions"]["aiokafka"]  # installed, so known
    [fig] = [f for f in data["figures"] if f["figure"] == "orders/s"]
    assert fig["values"] == [400.0, 500.0, 450.0] and fig["met"] is False


def test_no_latencies_no_histogram(tmp_path: Path) -> None:
    runs = {"e2e": [{k: v for k, v in r.items() if k != "latency_histogram"} for r in RUNS["e2e"]]}
    report = build_report(summarize(FIGURES, runs), runs, machine_info(), mode="quick", seconds=1)
    names = {p.name for p in write_report(report, tmp_path)}
    assert "e2e-latency.png" not in names and "throughput.png" in names


def test_stage_histogram_and_timeline_charts_from_the_e2e_run(tmp_path: Path) -> None:
    runs = {
        "e2e": [
            {
                "throughput_per_s": 400.0,
                "stage_latency_buckets": {
                    "intake": [[1.0, 5.0], [5.0, 90.0], [None, 1.0]],
                    "sent": [[1.0, 0.0], [5.0, 60.0], [None, 36.0]],
                },
                "timeline": timeline(100.0, [100.1, 100.2, 100.6], [100.3, 100.7, 101.2]),
            }
        ]
    }
    report = build_report(summarize(FIGURES, runs), runs, machine_info(), mode="quick", seconds=1)
    names = {p.name for p in write_report(report, tmp_path)}
    assert {"e2e-stages.png", "e2e-timeline.png"} <= names
    for png in ("e2e-stages.png", "e2e-timeline.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_timeline_counts_per_step_as_rates() -> None:
    line = timeline(10.0, [10.1, 10.2, 10.6], [10.3, 10.7, 11.2])
    assert line["step_s"] == 0.5
    assert line["published_per_s"] == [4.0, 2.0, 0.0]
    assert line["acknowledged_per_s"] == [2.0, 2.0, 2.0]


def test_bucket_counts_subtract_the_earlier_scrape_and_decumulate() -> None:
    inf = float("inf")
    before = {"sent": {0.001: 1.0, 0.005: 2.0, inf: 2.0}}
    after = {
        "sent": {0.001: 1.0, 0.005: 12.0, inf: 15.0},
        "intake": {0.001: 0.0, inf: 0.0},  # nothing observed: left out
    }
    assert bucket_counts(before, after) == {"sent": [[1.0, 0.0], [5.0, 10.0], [None, 3.0]]}


def test_latency_histogram_bins_every_value() -> None:
    histogram = latency_histogram([0.0, 5.0, 9.9, 10.0], bins=2)
    assert histogram == {"edges_ms": [0.0, 5.0, 10.0], "counts": [1, 3]}
    assert latency_histogram([])["counts"] == [0] * 50


def test_the_committed_report_links_only_committed_charts() -> None:
    """``latest.md`` is read on the repository's web page: a chart it links must be there."""
    import re
    import subprocess
    from pathlib import Path

    results = Path(__file__).resolve().parents[2] / "bench" / "results"
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (results / "latest.md").read_text())
    assert linked, "latest.md links no chart"
    tracked = subprocess.run(
        ["git", "ls-files", "--", *linked],
        cwd=results,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert sorted(tracked) == sorted(linked)
