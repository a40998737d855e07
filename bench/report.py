"""What a run shows: a terminal table, a JSON record, a Markdown report with plots.

Figures are percentiles and ratios from one run on one machine; they compare
strategies with each other, they are not pass/fail timings.
"""

import json
import shutil
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # after use(): the backend is chosen before pyplot loads
from matplotlib.ticker import FuncFormatter, NullFormatter

PLAIN = FuncFormatter(lambda value, _: f"{value:g}")  # 0.5, 2, 20 rather than powers of ten

MIB = 1024 * 1024


def fmt_latency(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s"


def fmt_bytes(count: float) -> str:
    if count >= MIB:
        return f"{count / MIB:.1f} MiB"
    if count >= 1024:
        return f"{count / 1024:.1f} KiB"
    return f"{count:.0f} B"


COLUMNS = (
    ("strategy", lambda r: r["strategy"]),
    ("deliveries", lambda r: str(r["deliveries"])),
    ("p50", lambda r: fmt_latency(r["latency_s"]["p50"])),
    ("p90", lambda r: fmt_latency(r["latency_s"]["p90"])),
    ("p99", lambda r: fmt_latency(r["latency_s"]["p99"])),
    ("max", lambda r: fmt_latency(r["latency_s"]["max"])),
    ("req/msg", lambda r: f"{r['requests_per_delivery']:.2f}"),
    ("empty", lambda r: f"{r['empty_poll_share']:.0%}"),
    ("bytes/msg", lambda r: fmt_bytes(r["bytes_per_delivery"])),
    ("CPU ms/msg", lambda r: f"{r['server_cpu_ms_per_delivery']:.2f}"),
    (
        "CPU s web/pg/redis",
        lambda r: "/".join(f"{r['cpu_s'][g]:.1f}" for g in ("web", "postgres", "redis")),
    ),
    ("peak MiB web/pg", lambda r: _peaks(r)),
    ("client CPU", lambda r: f"{r['client_cpu_share']:.0%}"),
    ("others", lambda r: f"{r['cpu_s']['others'] / r['window_s']:.0%}"),
    ("errors", lambda r: str(r["errors"])),
    ("lost", lambda r: str(r["lost"])),
    ("dup", lambda r: str(r["duplicates"])),
)


def _peaks(record: dict[str, Any]) -> str:
    pss = record["peak_pss_bytes"]
    return f"{pss['web'] / MIB:.0f}/{pss['postgres'] / MIB:.0f}"


def _rows(records: list[dict[str, Any]]) -> list[list[str]]:
    return [[render(r) for _, render in COLUMNS] for r in records]


def text_table(records: list[dict[str, Any]]) -> str:
    """The terminal table: one block per workload."""
    out = []
    for workload in _workloads(records):
        block = [r for r in records if r["workload"] == workload]
        rows = [[name for name, _ in COLUMNS], *_rows(block)]
        widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
        out.append(f"\n{workload} ({block[0]['messages']} messages, {block[0]['devices']} devices)")
        for n, row in enumerate(rows):
            cells = [
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
            out.append("  " + "  ".join(cells))
            if n == 0:
                out.append("  " + "  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown_table(records: list[dict[str, Any]]) -> str:
    header = [name for name, _ in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(records)]
    return "\n".join(lines)


def memory_table(records: list[dict[str, Any]]) -> str:
    """Peak memory per group in the window: summed RSS and summed PSS, MiB."""
    groups = ("web", "postgres", "redis")
    header = ["strategy", *(f"{g} RSS / PSS" for g in groups)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in records:
        cells = [
            f"{r['peak_rss_bytes'][g] / MIB:.0f} / {r['peak_pss_bytes'][g] / MIB:.0f}"
            for g in groups
        ]
        lines.append("| " + " | ".join([r["strategy"], *cells]) + " |")
    return "\n".join(lines)


def _workloads(records: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["workload"] for r in records))


def plot_latency(latencies: dict[str, dict[str, list[float]]], path: Path) -> None:
    """One panel per workload: the share of deliveries (y) that took at most x seconds."""
    names = list(latencies)
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.2), squeeze=False)
    for ax, workload in zip(axes[0], names, strict=True):
        for strategy, values in latencies[workload].items():
            if not values:
                continue
            ordered = sorted(max(v, 1e-4) for v in values)
            shares = [(i + 1) / len(ordered) for i in range(len(ordered))]
            style = "-" if strategy.startswith("long") else "--"
            ax.step(ordered, shares, style, where="post", label=strategy)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(PLAIN)
        ax.set_title(f"{workload}: send → receipt")
        ax.set_xlabel("latency (s, log scale)")
        ax.set_ylabel("share of deliveries ≤ x")
        ax.set_ylim(0, 1.01)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_costs(records: list[dict[str, Any]], path: Path) -> None:
    """Requests and server CPU per delivered message against the poll interval
    (short polls) or the long-poll timeout, one column per workload."""
    workloads = _workloads(records)
    fig, axes = plt.subplots(2, len(workloads), figsize=(5.2 * len(workloads), 7), squeeze=False)
    metrics = (
        ("requests_per_delivery", "requests per delivered message"),
        ("server_cpu_ms_per_delivery", "server CPU ms per delivered message"),
    )
    for column, workload in enumerate(workloads):
        block = [r for r in records if r["workload"] == workload]
        for row, (key, label) in enumerate(metrics):
            ax = axes[row][column]
            for kind, marker, name in (
                ("short", "o--", "short poll every x s"),
                ("long", "s-", "long poll, timeout x s"),
            ):
                points = sorted((r["seconds"], r[key]) for r in block if r["kind"] == kind)
                if points:
                    xs, ys = zip(*points, strict=True)
                    ax.plot(xs, ys, marker, label=name)
                    for x, y in points:
                        ax.annotate(
                            f"{y:.2g}",
                            (x, y),
                            textcoords="offset points",
                            xytext=(4, 4),
                            fontsize=7,
                        )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(sorted({r["seconds"] for r in block}))
            ax.xaxis.set_major_formatter(PLAIN)
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.yaxis.set_major_formatter(PLAIN)
            ax.yaxis.set_minor_formatter(PLAIN)
            ax.set_xlabel("poll interval or long-poll timeout (s)")
            ax.set_ylabel(label)
            ax.set_title(workload)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_json(record: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")


def machine_line(machine: dict[str, str]) -> str:
    return (
        f"{machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']} GiB, "
        f"Linux {machine['kernel']}, Python {machine['python']}, {machine['postgresql']}, "
        f"{machine['redis']}"
    )


def markdown(record: dict[str, Any], figures: dict[str, str]) -> str:
    """The report: machine, settings, one table per workload, the probe, figures, checks."""
    meta, records = record["meta"], record["phases"]
    machine = meta["machine"]
    lines = [
        f"# Parley polling strategies — run {meta['started']}",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {machine_line(machine)}. **Client and server share the cores** (load "
        f"average at start: {machine['load_average_at_start']}; cores busy just before: "
        f"{machine.get('busy_cores_before_start', '?')}).  ",
        f"Server: {meta['server']['mode']}"
        + (
            f", {meta['server'].get('workers')} gevent workers"
            if "workers" in meta["server"]
            else ""
        )
        + f". Seed {meta['settings']['seed']}; lead-in {meta['settings']['lead_s']:g} s, "
        f"tail {meta['settings']['tail_s']:g} s, drain up to {meta['settings']['drain_s']:g} s.",
        "",
        "All figures come from this one run: percentiles and ratios for comparing the strategies "
        "with each other on this machine, not timings to pass or fail.",
        "",
        "## Verdict on delivery",
        "",
        verdict(records),
        "",
    ]
    probe = record.get("hold_probe")
    if probe:
        lines += ["## Memory per waiting long poll", "", probe_text(probe), ""]
    for workload in _workloads(records):
        block = [r for r in records if r["workload"] == workload]
        first = block[0]
        summary = meta["workloads"][workload]["summary"]
        lines += [
            f"## {workload}",
            "",
            f"{summary}. {first['messages']} messages to {first['devices']} devices; "
            f"measuring window {first['window_s']:.1f} s per strategy.",
            "",
            markdown_table(block),
            "",
            _workload_notes(block),
            "",
            "Peak memory in the window, MiB (RSS counts shared pages once per process; "
            "PSS splits them):",
            "",
            memory_table(block),
            "",
        ]
    lines += [
        "## Figures",
        "",
        f"![latency distribution per strategy]({figures['latency']})",
        "",
        "Share of deliveries (y) received within x seconds of the send starting, per "
        "strategy (dashed: short poll, solid: long poll). Further left is faster; a curve's "
        "right end is the slowest delivery.",
        "",
        f"![requests and CPU per delivered message]({figures['costs']})",
        "",
        "Top: HTTP requests (polls and sends) per delivered message; bottom: server CPU "
        "(gunicorn + PostgreSQL + Redis) per delivered message; x is the short-poll interval "
        "or the long-poll timeout. Both axes are logarithmic.",
        "",
        "## Columns",
        "",
        COLUMN_NOTES,
    ]
    return "\n".join(lines) + "\n"


COLUMN_NOTES = """\
- **deliveries**: messages received by a member's device other than the sender's (the
  sender's own device also gets an echo of each send; it is checked but not counted here).
- **p50 … max**: latency from the moment the sender *started* its POST to the moment the
  poll answer carrying the message was read. (From the 201 instead, the fastest deliveries
  are negative: the server wakes long polls at commit, before the sender reads its 201.
  The JSON record has both, and the send durations.)
- **req/msg**: HTTP requests (polls + sends) in the measuring window per delivery.
- **empty**: share of poll answers with no entries.
- **bytes/msg**: request and response bytes (lines, headers, bodies) per delivery.
- **CPU ms/msg**: CPU of gunicorn (master + workers), PostgreSQL (postmaster, background
  processes, this database's backends) and Redis in the window, per delivery; read from
  `/proc/<pid>/stat` (utime + stime). **CPU s web/pg/redis**: the same in seconds.
- **peak MiB web/pg**: the highest summed PSS seen during the window (RSS, which counts
  shared pages once per process, is in the JSON).
- **client CPU**: the harness's own CPU as a share of one core over the window; near 100 %
  the client, not the server, limits the latencies.
- **others**: CPU of every other process on the machine in the window, as a share of one
  core (from `/proc/stat`). Above a few per cent, something else (a test suite, a build)
  competed for the cores and that phase's latencies are not comparable.
- **errors**: non-2xx answers and requests with no answer, drain and wind-down included.
- **lost / dup**: (message, device) pairs never received / received again after the device
  had confirmed them. Both must be 0; the run exits non-zero otherwise."""


def verdict(records: list[dict[str, Any]]) -> str:
    lost = sum(r["lost"] for r in records)
    dup = sum(r["duplicates"] for r in records)
    gaps = sum(r["seq_gaps"] + r["out_of_order"] + r["cursor_mismatches"] for r in records)
    errors = sum(r["errors"] for r in records)
    late = sum(r["late"] for r in records)
    pairs = sum(r["expected_pairs"] for r in records)
    text = (
        f"{pairs} expected (message, device) deliveries across {len(records)} phases: "
        f"**{lost} lost, {dup} duplicated**, {gaps} sequence gaps, out-of-order entries or "
        "cursor mismatches, "
        f"{errors} errors, {late} deliveries later than the drain."
    )
    if lost or dup or gaps:
        bad = [
            r["strategy"] + " in " + r["workload"] for r in records if r["lost"] or r["duplicates"]
        ]
        text += " Failing phases: " + ", ".join(bad) + "."
    return text


def probe_text(probe: dict[str, Any]) -> str:
    per = probe["web_pss_per_poll_bytes"]
    per_text = fmt_bytes(per) if per is not None else "unknown"
    return (
        f"{probe['devices']} watchers each held one long poll (the server's gauge counted "
        f"{probe['held']:.0f}, all held within {probe['established_s']:.1f} s). The web "
        f"processes' summed PSS went from {probe['web_pss_before_bytes'] / MIB:.1f} MiB to "
        f"{probe['web_pss_holding_bytes'] / MIB:.1f} MiB: **about {per_text} per waiting long "
        f"poll** (greenlet, socket buffers in user space, request objects; kernel socket memory "
        f"is not in PSS). Establishing them cost {probe['web_cpu_s_to_establish']:.2f} s "
        "of web CPU."
    )


def _workload_notes(block: list[dict[str, Any]]) -> str:
    notes = []
    for r in block:
        send = r["send_duration_s"]
        lag = r["loop_lag_s"]
        extras = []
        if r["late"]:
            extras.append(
                f"{r['late']} deliveries arrived only after the {r['drained_s']:.0f} s drain "
                "(found when the inboxes were read to the end: late, not lost)"
            )
        if r["redeliveries"]:
            extras.append(f"{r['redeliveries']} redeliveries before confirmation")
        if r["stray_entries"]:
            extras.append(f"{r['stray_entries']} non-message entries")
        if r["failed_sends"]:
            extras.append(f"{r['failed_sends']} sends failed")
        bad = {k: v for k, v in r["status"].items() if not k.startswith("2")}
        if r.get("crashed_loops"):
            extras.append(f"HARNESS: {len(r['crashed_loops'])} poll loops crashed")
        if bad or r["exceptions"]:
            extras.append(
                f"errors by status {bad or '{}'} and exceptions {r['exceptions'] or '{}'}"
            )
        notes.append(
            f"- {r['strategy']}: sends took p50 {fmt_latency(send['p50'])}, p99 "
            f"{fmt_latency(send['p99'])}; client event-loop lag p99 {fmt_latency(lag['p99'])}; "
            f"{r['polls']} polls, {r['sends']} sends in the window"
            + (
                f"; everything received {r['drained_s']:.1f} s after it"
                if r["drained_s"] > 0.05
                else ""
            )
            + ("; " + "; ".join(extras) if extras else "")
            + "."
        )
    return "\n".join(notes)


def write_reports(
    record: dict[str, Any], latencies: dict[str, Any], results_dir: Path, stamp: str
) -> Path:
    """bench/results/<stamp>.json, <stamp>.md and <stamp>/*.png; returns the .md path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    figure_dir = results_dir / stamp
    figure_dir.mkdir(exist_ok=True)
    plot_latency(latencies, figure_dir / "latency.png")
    plot_costs(record["phases"], figure_dir / "costs.png")
    write_json(record, results_dir / f"{stamp}.json")
    report = results_dir / f"{stamp}.md"
    report.write_text(
        markdown(record, {"latency": f"{stamp}/latency.png", "costs": f"{stamp}/costs.png"})
    )
    return report


def publish(record: dict[str, Any], results_dir: Path, stamp: str, bench_dir: Path) -> Path:
    """Copy the report to bench/LAST_RUN.md and its figures to bench/last_run/ (committed)."""
    target = bench_dir / "last_run"
    target.mkdir(exist_ok=True)
    for name in ("latency.png", "costs.png"):
        shutil.copyfile(results_dir / stamp / name, target / name)
    page = bench_dir / "LAST_RUN.md"
    page.write_text(
        markdown(record, {"latency": "last_run/latency.png", "costs": "last_run/costs.png"})
    )
    return page
