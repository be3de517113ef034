"""The benchmark suite's report: figures summarized over repetitions, machine info, and the
files ``bench/results/latest.json``, ``latest.md`` and PNG charts.

Pure functions over plain dicts, so the report writer is tested without running anything.
A *figure* is one number a scenario returns (``throughput_per_s``, ``latency_ms.p99``...),
read by a dotted path from each repetition's result; its *baseline* (when the scenario
measures one in the same run) is read the same way, and the ratio is median / median.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import orjson

# A figure whose repetitions spread more than this (max - min, in % of the median) is noisy.
NOISY_SPREAD_PCT = 15.0


@dataclass(frozen=True)
class Figure:
    """How to read, compare and judge one number of a scenario's result."""

    scenario: str
    label: str
    path: str
    unit: str = ""
    baseline_path: str | None = None
    target: float | None = None
    # "min": the figure must be at least the target; "max": at most.
    target_kind: Literal["min", "max"] = "min"
    note: str = ""

    def target_text(self) -> str:
        if self.target is None:
            return "-"
        sign = ">=" if self.target_kind == "min" else "<="
        return f"{sign} {_fmt(self.target)}{(' ' + self.unit) if self.unit else ''}"


@dataclass
class FigureSummary:
    """A figure over every repetition of its scenario."""

    figure: Figure
    values: list[float]
    baseline_values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    @property
    def baseline(self) -> float | None:
        return statistics.median(self.baseline_values) if self.baseline_values else None

    @property
    def ratio(self) -> float | None:
        if self.median is None or not self.baseline:
            return None
        return self.median / self.baseline

    @property
    def spread_pct(self) -> float | None:
        """(max - min) / median in %, None below two repetitions."""
        if len(self.values) < 2 or not self.median:
            return None
        return (max(self.values) - min(self.values)) / abs(self.median) * 100

    @property
    def noisy(self) -> bool:
        spread = self.spread_pct
        return spread is not None and spread > NOISY_SPREAD_PCT

    @property
    def met(self) -> bool | None:
        target, value = self.figure.target, self.median
        if target is None or value is None:
            return None
        return value >= target if self.figure.target_kind == "min" else value <= target

    def to_dict(self) -> dict[str, Any]:
        f = self.figure
        return {
            "scenario": f.scenario,
            "figure": f.label,
            "path": f.path,
            "unit": f.unit,
            "median": _round(self.median),
            "values": [_round(v) for v in self.values],
            "repetitions": len(self.values),
            "spread_pct": _round(self.spread_pct),
            "noisy": self.noisy,
            "baseline": _round(self.baseline),
            "baseline_values": [_round(v) for v in self.baseline_values],
            "ratio": _round(self.ratio, 4),
            "target": f.target,
            "target_kind": f.target_kind if f.target is not None else None,
            "met": self.met,
            "note": f.note,
        }


def lookup(result: dict[str, Any], path: str) -> float | None:
    """The number at a dotted ``path`` in a result (digits index lists), None if absent or
    not a finite number."""
    node: Any = result
    for part in path.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    if isinstance(node, bool) or not isinstance(node, int | float):
        return None
    return float(node) if math.isfinite(node) else None


def summarize(
    figures: Sequence[Figure], runs: dict[str, list[dict[str, Any]]]
) -> list[FigureSummary]:
    """Each figure over the repetitions of its scenario (missing values are skipped)."""
    out = []
    for figure in figures:
        results = runs.get(figure.scenario, [])
        values = [v for r in results if (v := lookup(r, figure.path)) is not None]
        baselines = []
        if figure.baseline_path:
            baselines = [v for r in results if (v := lookup(r, figure.baseline_path)) is not None]
        out.append(FigureSummary(figure, values, baselines))
    return out


def machine_info(load_before: tuple[float, float, float] | None = None) -> dict[str, Any]:
    """Cores, load, Python, git commit and the versions of what is measured."""
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "load_average_before": list(load_before) if load_before else None,
        "load_average_after": list(os.getloadavg()),
        "git_commit": _git("rev-parse", "HEAD"),
        # The results directory is rewritten by the run itself: not a change of the code.
        "git_dirty": bool(
            _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results")
        ),
        "versions": {name: _version(name) for name in _PACKAGES},
    }
    try:
        from oms.settings import Settings

        info["versions"]["kafka"] = Settings().kafka.version
    except Exception:  # the version is informative; a settings problem must not stop a report
        info["versions"]["kafka"] = None
    try:
        import chdb

        info["versions"]["chdb_engine"] = getattr(chdb, "engine_version", None)
    except ImportError:
        pass
    return info


_PACKAGES = ("faust-streaming", "aiokafka", "clickhouse-connect", "chdb", "pydantic", "orjson")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip()


def build_report(
    summaries: Sequence[FigureSummary],
    runs: dict[str, list[dict[str, Any]]],
    machine: dict[str, Any],
    *,
    mode: str,
    seconds: float,
    errors: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The whole report as one JSON-able dict (this is ``latest.json``)."""
    return {
        "mode": mode,
        "seconds": round(seconds, 1),
        "noisy_spread_pct": NOISY_SPREAD_PCT,
        "machine": machine,
        "figures": [s.to_dict() for s in summaries],
        "runs": runs,
        "errors": errors or {},
    }


def render_markdown(report: dict[str, Any], charts: Sequence[str] = ()) -> str:
    """``latest.md``: the headline table and the conditions of the run."""
    machine = report["machine"]
    versions = machine.get("versions", {})
    lines = [
        "# oms benchmark suite: latest run",
        "",
        f"`oms bench all{' --quick' if report['mode'] == 'quick' else ''}`, "
        f"{report['seconds']} s, commit `{(machine.get('git_commit') or '?')[:12]}`"
        f"{' (uncommitted changes)' if machine.get('git_dirty') else ''}. "
        f"{machine.get('cores')} cores, load average {_load(machine.get('load_average_before'))}"
        f" before, {_load(machine.get('load_average_after'))} after "
        "(Kafka, the OMS and the load generator share this machine).",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v) + f", "
        f"Python {machine.get('python')}.",
        "",
    ]
    if partial := report.get("partial_rerun"):
        lines += [
            f"Re-run here: {', '.join(partial['rerun'])}. Kept from the previous "
            f"{report['mode']} report "
            f"(commit `{(partial.get('kept_commit') or '?')[:12]}`): "
            f"{', '.join(partial['kept']) or 'nothing'}.",
            "",
        ]
    lines += [
        "Each figure is the median over the scenario's repetitions; spread = (max - min) / "
        f"median. A spread over {report['noisy_spread_pct']:g}% is flagged **noisy**. "
        "Baselines are measured in the same run (raw Kafka for the pipelines, direct inserts "
        "for the sink, a linear scan of every order for the trigger engine).",
        "",
        "| scenario | figure | median | spread | runs | baseline | ratio | target | met? |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for f in report["figures"]:
        unit = f" {f['unit']}" if f["unit"] else ""
        spread = "-" if f["spread_pct"] is None else f"{f['spread_pct']:.1f}%"
        if f["noisy"]:
            spread += " **noisy**"
        target = "-"
        if f["target"] is not None:
            sign = ">=" if f["target_kind"] == "min" else "<="
            target = f"{sign} {_fmt(f['target'])}{unit}"
        met = {True: "yes", False: "**no**", None: "-"}[f["met"]]
        label = f["figure"] + (f" ({f['note']})" if f["note"] else "")
        lines.append(
            f"| {f['scenario']} | {label} | {_fmt(f['median'])}{unit if f['median'] else ''}"
            f" | {spread} | {f['repetitions']} | {_fmt(f['baseline'])} | {_fmt(f['ratio'])} "
            f"| {target} | {met} |"
        )
    if report.get("errors"):
        lines += ["", "## Scenarios that failed", ""]
        lines += [f"* `{name}`: {error}" for name, error in report["errors"].items()]
    if charts:
        lines += ["", "## Charts", ""]
        lines += [f"![{Path(c).stem}]({Path(c).name})" for c in charts]
    lines += ["", "All figures, every repetition's full result and the machine info: "
              "[`latest.json`](latest.json).", ""]  # fmt: skip
    return "\n".join(lines)


def write_charts(report: dict[str, Any], out_dir: Path) -> list[str]:
    """PNG charts (matplotlib, Agg): throughput per scenario, and from each e2e scenario's
    last repetition its latency histogram, latency per stage and throughput over time.
    Returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    rates = [f for f in report["figures"] if f["median"] is not None and f["unit"].endswith("/s")]
    if rates:
        fig, ax = plt.subplots(figsize=(9, 0.5 * len(rates) + 1.5))
        labels = [f"{f['scenario']}: {f['figure']}" for f in rates]
        ax.barh(labels, [f["median"] for f in rates], color="#4c72b0", label="median")
        base = [(i, f["baseline"]) for i, f in enumerate(rates) if f["baseline"]]
        if base:
            ax.scatter([b for _, b in base], [i for i, _ in base], color="#dd8452",
                       marker="|", s=300, label="baseline (same run)", zorder=3)  # fmt: skip
        for i, f in enumerate(rates):
            low, high = min(f["values"]), max(f["values"])
            if high > low:
                ax.plot([low, high], [i, i], color="black", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel("per second (log scale; bar = median, line = min..max)")
        ax.set_title("Throughput per scenario")
        ax.legend(loc="lower right", fontsize="small")
        fig.tight_layout()
        path = out_dir / "throughput.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(str(path))
    written += _stage_and_timeline_charts(report, out_dir, plt)
    for scenario, runs in report.get("runs", {}).items():
        histogram = (runs[-1] if runs else {}).get("latency_histogram")
        if not histogram or not sum(histogram["counts"]):
            continue
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.stairs(histogram["counts"], histogram["edges_ms"], fill=True, color="#55a868")
        ax.set_xlabel("request published -> first exchange-acknowledged event (ms)")
        ax.set_ylabel("orders")
        ax.set_title(
            f"bench {scenario} latency ({sum(histogram['counts'])} orders, last repetition)"
        )
        fig.tight_layout()
        path = out_dir / f"{scenario}-latency.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(str(path))
    return written


def _stage_and_timeline_charts(report: dict[str, Any], out_dir: Path, plt: Any) -> list[str]:
    """From each e2e scenario's last repetition: a latency histogram per worker stage
    (``<scenario>-stages.png``) and orders per second over time (``<scenario>-timeline.png``)."""
    written = []
    for scenario, runs in report.get("runs", {}).items():
        last = runs[-1] if runs else {}
        stages = last.get("stage_latency_buckets") or {}
        if stages:
            fig, axes = plt.subplots(len(stages), 1, figsize=(8, 1.9 * len(stages) + 0.6),
                                     sharex=True, squeeze=False)  # fmt: skip
            for ax, (stage, rows) in zip(axes[:, 0], stages.items(), strict=True):
                finite = [(ms, n) for ms, n in rows if ms is not None]
                over = sum(n for ms, n in rows if ms is None)
                labels = [f"{ms:g}" for ms, _ in finite] + [">"]
                ax.bar(labels, [n for _, n in finite] + [over], color="#4c72b0")
                ax.set_ylabel(stage, rotation=0, ha="right", va="center")
                ax.tick_params(axis="x", labelsize="small", labelrotation=45)
            axes[-1, 0].set_xlabel("latency bucket, upper bound (ms)")
            fig.suptitle(f"bench {scenario}: latency per stage (orders per bucket)")
            fig.tight_layout()
            path = out_dir / f"{scenario}-stages.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            written.append(str(path))
        line = last.get("timeline") or {}
        if line.get("acknowledged_per_s"):
            step = line["step_s"]
            fig, ax = plt.subplots(figsize=(8, 3.5))
            for key, label in (("published_per_s", "published"),
                               ("acknowledged_per_s", "acknowledged by the exchange")):  # fmt: skip
                values = line[key]
                ax.plot([i * step for i in range(len(values))], values, label=label)
            ax.set_xlabel("seconds since the first measured order")
            ax.set_ylabel("orders/s")
            ax.set_title(f"bench {scenario}: throughput over time")
            ax.legend(fontsize="small")
            fig.tight_layout()
            path = out_dir / f"{scenario}-timeline.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            written.append(str(path))
    return written


def write_report(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write ``latest.json``, the charts and ``latest.md`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = write_charts(report, out_dir)
    json_path = out_dir / "latest.json"
    json_path.write_bytes(
        orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n"
    )
    md_path = out_dir / "latest.md"
    md_path.write_text(render_markdown(report, charts))
    return [json_path, md_path, *(Path(c) for c in charts)]


def _load(values: Sequence[float] | None) -> str:
    return "/".join(f"{v:.2f}" for v in values) if values else "?"


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:,.1f}"
    return f"{value:.3g}"
