"""The performance bar: its scenarios, their sizes, each target and how it is read
off a run's results, and the table. No harness packages needed: the suite tests it."""

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

LONG_POLL_S = 25.0  # the server's cap: what a phone behind a proxy would use
KIB = 1024
SCENARIOS = ("waiting", "fan-out", "empty", "holding")

PROFILES: dict[str, dict[str, Any]] = {
    "default": {
        "waiting": 5000,
        "waiting_ramp": LONG_POLL_S,
        "rate": 50.0,
        "window": 20.0,
        "senders": 16,
        "receivers": 100,
        "fan_out_rate": 10.0,
        "empty_devices": 100,
        "empty_window": 10.0,
        "hold": 20_000,
        "hold_processes": 2,
    },
    "quick": {
        "waiting": 200,
        "waiting_ramp": 1.0,
        "rate": 10.0,
        "window": 4.0,
        "senders": 4,
        "receivers": 20,
        "fan_out_rate": 5.0,
        "empty_devices": 20,
        "empty_window": 3.0,
        "hold": 1000,
        "hold_processes": 2,
    },
}


def parse_scenarios(value: str) -> tuple[str, ...]:
    chosen = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(SCENARIOS)}")
    return tuple(name for name in SCENARIOS if name in chosen)


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill in the profile's sizes; refuse to publish a partial table."""
    if args.publish and args.only != SCENARIOS:
        raise SystemExit("--publish writes the whole table: run every scenario (no --only)")
    profile = PROFILES["quick" if args.quick else "default"]
    for key, value in profile.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


@dataclass(frozen=True)
class Target:
    what: str
    measured: Callable[[dict[str, Any]], str]
    met: Callable[[dict[str, Any]], bool]
    scenarios: tuple[str, ...]  # shown when any of them ran


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _latency(r: dict[str, Any], scenario: str, q: str) -> float:
    value = r[scenario]["phase"]["latency_s"][q]
    return float("inf") if value is None else value


def _cpu(r: dict[str, Any], scenario: str) -> float:
    return r[scenario]["phase"]["server_cpu_ms_per_delivery"]


def _kib_per_poll(probe: dict[str, Any] | None) -> float:
    per_poll = (probe or {}).get("web_pss_per_poll_bytes")
    return float("inf") if per_poll is None else per_poll / KIB


def _memory(probe: dict[str, Any] | None) -> str:
    held = (probe or {}).get("held") or 0
    return f"{_kib_per_poll(probe):.1f} KiB ({held:,.0f} held)"


def _most_held(probe: dict[str, Any] | None) -> float:
    """The most polls the server held at once (the holding scenario's peak; the
    waiting scenario's probe holds all of them until it measures)."""
    probe = probe or {}
    return probe.get("most_held", probe.get("held")) or 0


def _memory_met(probe: dict[str, Any] | None, wanted: int) -> bool:
    """Met only when measured once every poll was held: fewer would flatter it."""
    return _most_held(probe) >= wanted and _kib_per_poll(probe) <= 30


def _polls_per_worker(r: dict[str, Any]) -> float:
    """Empty polls a second per gunicorn worker (the web group less the master)."""
    return r["empty"]["polls_per_s"] / max(r["empty"]["web_processes"] - 1, 1)


def _empty_polls(r: dict[str, Any]) -> str:
    """The rate per worker, and what each poll cost the workers: on cores shared with
    the harness the rate says as much about the client as about the server."""
    empty = r["empty"]
    rate = f"{_polls_per_worker(r):,.0f}/s"
    if not empty["polls"]:
        return rate
    return f"{rate} ({1000 * empty['web_cpu_s'] / empty['polls']:.2f} ms of worker CPU each)"


def _broken(r: dict[str, Any]) -> int:
    phases = [r[scenario]["phase"] for scenario in ("waiting", "fan-out") if scenario in r]
    return sum(
        p["lost"] + p["duplicates"] + p["seq_gaps"] + p["out_of_order"] + p["cursor_mismatches"]
        for p in phases
    )


def targets(args: argparse.Namespace) -> list[Target]:
    waiting = f"{args.waiting:,} waiting, {args.rate:g} msg/s"
    fan_out = f"{args.senders} senders → {args.receivers} receivers"
    return [
        Target(
            f"long-poll delivery p50 ≤ 5 ms ({waiting})",
            lambda r: _ms(_latency(r, "waiting", "p50")),
            lambda r: _latency(r, "waiting", "p50") <= 0.005,
            ("waiting",),
        ),
        Target(
            f"long-poll delivery p99 ≤ 25 ms ({waiting})",
            lambda r: _ms(_latency(r, "waiting", "p99")),
            lambda r: _latency(r, "waiting", "p99") <= 0.025,
            ("waiting",),
        ),
        Target(
            f"≤ 2 ms server CPU per delivered message ({waiting})",
            lambda r: f"{_cpu(r, 'waiting'):.2f} ms",
            lambda r: _cpu(r, "waiting") <= 2.0,
            ("waiting",),
        ),
        Target(
            f"≥ 1,000 delivered messages/s ({fan_out})",
            lambda r: f"{r['fan-out']['delivered_per_s']:,.0f}/s",
            lambda r: r["fan-out"]["delivered_per_s"] >= 1000,
            ("fan-out",),
        ),
        Target(
            f"p99 ≤ 100 ms at that rate ({fan_out})",
            lambda r: _ms(_latency(r, "fan-out", "p99")),
            lambda r: _latency(r, "fan-out", "p99") <= 0.1,
            ("fan-out",),
        ),
        Target(
            f"≤ 2 ms server CPU per delivered message ({fan_out})",
            lambda r: f"{_cpu(r, 'fan-out'):.2f} ms",
            lambda r: _cpu(r, "fan-out") <= 2.0,
            ("fan-out",),
        ),
        Target(
            f"≤ 30 KiB per waiting long poll ({args.waiting:,} held)",
            lambda r: _memory(r["waiting"]["probe"]),
            lambda r: _memory_met(r["waiting"]["probe"], args.waiting),
            ("waiting",),
        ),
        Target(
            f"≤ 30 KiB per waiting long poll ({args.hold:,} held)",
            lambda r: _memory(r["holding"]),
            lambda r: _memory_met(r["holding"], args.hold),
            ("holding",),
        ),
        Target(
            f"{args.hold:,} concurrent waiting long polls without errors",
            lambda r: f"{_most_held(r['holding']):,.0f} held, {r['holding']['errors']:,} errors",
            lambda r: _most_held(r["holding"]) >= args.hold and r["holding"]["errors"] == 0,
            ("holding",),
        ),
        Target(
            "an empty short poll costs no database query",
            lambda r: f"{r['empty']['db_queries']:.0f} queries in {r['empty']['polls']:,} polls",
            lambda r: r["empty"]["db_queries"] == 0 and r["empty"]["polls"] > 0,
            ("empty",),
        ),
        Target(
            "≥ 2,000 empty polls/s per worker process",
            _empty_polls,
            lambda r: _polls_per_worker(r) >= 2000,
            ("empty",),
        ),
        Target(
            "0 lost, 0 duplicated (every delivery checked)",
            lambda r: f"{_broken(r)} lost, duplicated, skipped or reordered",
            lambda r: _broken(r) == 0,
            ("waiting", "fan-out"),
        ),
    ]


def table(rows: list[tuple[str, str, bool]]) -> str:
    lines = ["| target | measured | met |", "|---|---|---|"]
    lines += [
        f"| {what} | {measured} | {'yes' if met else '**no**'} |" for what, measured, met in rows
    ]
    return "\n".join(lines)


def evaluate(args: argparse.Namespace, results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """Each target of the scenarios that ran: what it is, what was measured, and if it was met."""
    return [
        (t.what, t.measured(results), t.met(results))
        for t in targets(args)
        if any(scenario in results for scenario in t.scenarios)
    ]
