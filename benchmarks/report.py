"""Turn cell results into rows, ratios, a markdown table, a JSON file and,
when matplotlib is installed, a PNG chart; and describe the machine.

Ratios compare medians measured in the same invocation, against the same
server: a row's throughput divided by urllib3's and by the raw socket's in
the same scenario.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

from .clients import REGISTRY
from .scenarios import SCENARIOS
from .spec import Run

__all__ = ["machine_description", "markdown", "summarize", "write_chart", "write_outputs"]

PACKAGES = ("poolwatch", "urllib3", "requests", "httpx", "httpcore", "h11", "aiohttp", "uvloop")
BASELINES = ("urllib3", "raw")  # the ratio columns, in order
# Each poolwatch entry and the clients it is measured against, pair by pair.
PAIRS = (
    ("poolwatch", "urllib3"),
    ("poolwatch", "raw"),
    ("requests+poolwatch", "requests"),
    ("httpx+poolwatch", "httpx"),
    ("poolwatch-async", "aiohttp"),
    ("httpx-async+poolwatch", "httpx-async"),
    ("httpx-async+poolwatch", "aiohttp"),
)
# An idle machine's load average is near 0; above this, other work was
# running on the cores the benchmark pins itself to.
BUSY_LOAD = 0.5
BUSY_WARNING = (
    " (**the machine was busy**: absolute numbers are low and noisy; the "
    "interleaved ratios are the better guide)"
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_description(server: str, pinning: str) -> dict[str, Any]:
    """CPU model, cores, Python, kernel, package versions, server, pinning."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "kernel": f"{platform.system()} {platform.release()}",
        "packages": {name: _version(name) for name in PACKAGES},
        "server": server,
        "pinning": pinning,
    }


def _row(cell: dict[str, Any], connections: int | None) -> dict[str, Any]:
    scenario = SCENARIOS[cell["scenario"]]
    entry = REGISTRY.get(cell["client"])
    row: dict[str, Any] = {
        "scenario": cell["scenario"],
        "client": cell["client"],
        "label": entry.label if entry else cell["client"],
        "unit": scenario.unit,
        "status": cell["status"],
        "note": cell.get("note") or cell.get("error", ""),
    }
    if cell["status"] != "ok":
        return row
    runs = [Run(**r) for r in cell["runs"]]
    rates = [r.rate(scenario.unit) for r in runs]
    warmup = cell.get("warmup", {}).get("requests", 0)
    row.update(
        median=statistics.median(rates),
        min=min(rates),
        max=max(rates),
        runs=len(runs),
        cpu_us=statistics.median(r.cpu_per_request() for r in runs) * 1e6,
        caller_cpu_us=statistics.median(r.caller_cpu_per_request() for r in runs) * 1e6,
        cpu_share=statistics.median(r.cpu / r.wall for r in runs if r.wall > 0),
        peak_rss_mib=cell["peak_rss_kib"] / 1024,
        rates=rates,
        cpus_us=[r.cpu_per_request() * 1e6 for r in runs],
        requests=sum(r.requests for r in runs) + warmup,
        server_connections=connections,
        client_stats=cell.get("client_stats", {}),
    )
    return row


def summarize(cells: list[tuple[dict[str, Any], int | None]]) -> list[dict[str, Any]]:
    """Rows from ``(cell result, server connections)`` pairs, with each ok
    row's throughput and CPU per request relative to the baselines."""
    rows = [_row(cell, conns) for cell, conns in cells]
    ok = {(r["scenario"], r["client"]): r for r in rows if r["status"] == "ok"}
    for row in rows:
        if row["status"] != "ok":
            continue
        for base in BASELINES:
            ref = ok.get((row["scenario"], base), {})
            row[f"vs_{base}"] = _divide(row["median"], ref.get("median"))
            row[f"cpu_vs_{base}"] = _divide(row["cpu_us"], ref.get("cpu_us"))
    return rows


def pair_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each poolwatch entry and the client it replaces (:data:`PAIRS`),
    in each scenario both ran: the ratios of round ``i``'s throughput and
    CPU per request (the peer's over poolwatch's, so above 1 is better for
    poolwatch in both), which ran back to back, then their median and
    range. Load that changes between rounds hits both sides of a pair."""
    ok = {(r["scenario"], r["client"]): r for r in rows if r["status"] == "ok"}
    pairs = []
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        for mine, peer in PAIRS:
            a, b = ok.get((scenario, mine)), ok.get((scenario, peer))
            if a is None or b is None:
                continue
            rounds = range(min(len(a["rates"]), len(b["rates"])))
            speed = [a["rates"][i] / b["rates"][i] for i in rounds if b["rates"][i]]
            cpu = [b["cpus_us"][i] / a["cpus_us"][i] for i in rounds if a["cpus_us"][i]]
            if not speed or not cpu:
                continue
            pairs.append(
                {
                    "scenario": scenario,
                    "client": mine,
                    "against": peer,
                    "throughput": statistics.median(speed),
                    "throughput_range": [min(speed), max(speed)],
                    "cpu": statistics.median(cpu),
                    "cpu_range": [min(cpu), max(cpu)],
                }
            )
    return pairs


def _divide(value: float, reference: float | None) -> float | None:
    return value / reference if reference else None


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _table_line(row: dict[str, Any]) -> str:
    head = f"| {row['scenario']} | {row['label']} |"
    if row["status"] != "ok":
        note = str(row["note"]).replace("|", "/")
        note = note if len(note) <= 90 else note[:87] + "..."
        return f"{head} {row['status']}: {note} | | | | | | |"
    digits = 1 if row["unit"] == "MiB/s" else 0
    rate = f"{_fmt(row['median'], digits)} {row['unit']}"
    spread = f"{_fmt(row['min'], digits)}-{_fmt(row['max'], digits)}"
    cpu = f"{_fmt(row['cpu_us'])} ({_fmt(row['caller_cpu_us'])})"
    conns = row["server_connections"]
    conns_text = f"{_fmt(conns)} / {_fmt(row['requests'])}" if conns is not None else "n/a"
    return (
        f"{head} {rate} | {spread} | {cpu} | {row['peak_rss_mib']:.1f} | {conns_text} "
        f"| {_ratio(row.get('vs_urllib3'))} | {_ratio(row.get('vs_raw'))} |"
    )


def markdown(machine: dict[str, Any], config: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The report: machine, settings, the full table and a poolwatch summary."""
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items())
    lines = [
        "# poolwatch benchmark",
        "",
        f"- CPU: {machine['cpu']}, {machine['cores']} cores ({machine['pinning']})",
        f"- {machine['python']}, {machine['kernel']}",
        f"- packages: {packages}",
        f"- server: {machine['server']}",
        f"- runs: {config['runs']} x {config['budget']}, warmup {config['warmup']}",
        "- 1-minute load average before and after: "
        + " / ".join(f"{x:.2f}" for x in config["load_average"])
        + (BUSY_WARNING if config["load_average"][0] > BUSY_LOAD else ""),
        "",
        "Median of the runs, min-max across them. CPU is the client process's "
        "(all threads) per request, in parentheses the requesting threads' own. "
        "Connections are those the server accepted during the cell (warmup "
        "included) over the requests made.",
        "",
        "| scenario | client | median | min-max | CPU us/req (caller) | peak RSS MiB "
        "| server conns / requests | x urllib3 | x raw |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [_table_line(row) for row in rows]
    lines += ["", "## poolwatch native relative to the baselines", ""]
    lines += [
        "| scenario | throughput x urllib3 | throughput x raw "
        "| CPU/req x urllib3 | CPU/req x raw |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        if row["client"] == "poolwatch" and row["status"] == "ok":
            lines.append(
                f"| {row['scenario']} | {_ratio(row['vs_urllib3'])} | {_ratio(row['vs_raw'])} "
                f"| {_ratio(row['cpu_vs_urllib3'])} | {_ratio(row['cpu_vs_raw'])} |"
            )
    lines += _pairs_table(rows)
    notes = [f"- {s.key} ({s.title}): {s.note}" for s in SCENARIOS.values() if s.note]
    return "\n".join([*lines, "", "## Notes", "", *notes, *config.get("notes", []), ""])


def _pairs_table(rows: list[dict[str, Any]]) -> list[str]:
    pairs = pair_ratios(rows)
    if not pairs:
        return []
    lines = [
        "",
        "## Each poolwatch entry against the client it replaces",
        "",
        "Round by round (the two ran back to back), then the median and the range "
        "of the rounds' ratios. Throughput: poolwatch's over the peer's; CPU: the "
        "peer's CPU per request over poolwatch's. Above 1.00x, poolwatch is ahead.",
        "",
        "| scenario | poolwatch entry | against | throughput | range | CPU | range |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    labels = {r["client"]: r["label"] for r in rows}
    for p in pairs:
        lo, hi = p["throughput_range"]
        clo, chi = p["cpu_range"]
        lines.append(
            f"| {p['scenario']} | {labels[p['client']]} | {labels[p['against']]} "
            f"| {_ratio(p['throughput'])} | {lo:.2f}-{hi:.2f} "
            f"| {_ratio(p['cpu'])} | {clo:.2f}-{chi:.2f} |"
        )
    return lines


def write_chart(rows: list[dict[str, Any]], path: Path) -> bool:
    """A bar chart per scenario (median, min-max whiskers); ``False`` when
    matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    keys = sorted({r["scenario"] for r in rows if r["status"] == "ok"})
    if not keys:
        return False
    fig, axes = plt.subplots(len(keys), 1, figsize=(8, 2.2 * len(keys)), squeeze=False)
    for ax, key in zip(axes[:, 0], keys, strict=True):
        mine = [r for r in rows if r["scenario"] == key and r["status"] == "ok"]
        medians = [r["median"] for r in mine]
        low = [r["median"] - r["min"] for r in mine]
        high = [r["max"] - r["median"] for r in mine]
        ax.barh([r["label"] for r in mine], medians, xerr=[low, high], color="tab:blue")
        ax.set_title(f"{key}: {SCENARIOS[key].title} ({mine[0]['unit']})", fontsize=9)
        ax.invert_yaxis()  # the table's order, top down
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_outputs(
    out: Path, text: str, document: dict[str, Any], rows: list[dict[str, Any]], chart: bool
) -> list[Path]:
    """Write latest.md, latest.json and (maybe) latest.png; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "latest.md", out / "latest.json"]
    written[0].write_text(text)
    written[1].write_text(json.dumps(document, indent=2, default=str) + "\n")
    if chart and write_chart(rows, out / "latest.png"):
        written.append(out / "latest.png")
    return written
