"""``python -m bench compare``: compare polling strategies on a real Parley."""

import argparse
import asyncio
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

from api.config import DEFAULTS
from bench import bar, report, targets, workloads
from bench.clients import SetupError
from bench.measure import busy_cores, machine_info, repo_root, timestamp
from bench.run import RunSettings, Strategy, run_all
from bench.server import ExternalServer, ScaledServer, ServerError, raise_fd_limit, running

OVERVIEW = """\
Compares how Parley's clients receive messages: short polls every I seconds
against long polls held up to T seconds, each replaying the same plan of sends
(same seeds) on the same simulated devices.

By default it starts Parley itself in the scaled mode: gunicorn (gevent) with
--workers processes, a fresh PostgreSQL database `parley_bench` on
127.0.0.1:5432 (dropped and recreated, migrated with Alembic), Redis on
127.0.0.1:6379 under a prefix of its own, rate limits off (one address sends
everything) and cheap password hashing (sign-ups are set-up). Everything it
started is stopped at the end, also on Ctrl-C or an error. With --url it drives
a Parley that is already running instead.

Thousands of devices run in this one process (asyncio + aiohttp), each a log-in
of its own. They poll the way the README's client loop says: `after=<cursor>`
confirms, a long poll re-polls at once after every answer, a short poll waits
for its next tick (at once on `has_more`), errors back off from 1 s to 60 s.
Set-up (sign-ups, log-ins, conversations, emptying the inboxes) is not measured.

Workloads:
  watchers     a sale day scaled down (10M watchers : 1M buyers : 100k
               reviewers = 100 : 10 : 1): idle watchers in big groups with
               rare announcements, buyers asking reviewers in 1:1 chats
  chat         1:1 pairs, both sides sending at random times
  group-burst  one full group, everyone sends at the same moment

Per workload and strategy it reports: latency from the start of the send to the
receipt (p50/p90/p99/max), requests, empty answers and bytes per delivered
message, server CPU (gunicorn, PostgreSQL, Redis from /proc) per delivered
message, peak memory, errors, and lost or duplicated messages, checked for every
(message, device) pair. The run exits 1 if anything was lost, duplicated,
skipped, out of order or answered with a cursor past its entries, 2 if it
could not run. The watchers workload starts with a probe: every watcher holds
one long poll, and the web processes' memory growth divided by the polls held
is the memory per waiting long poll.

Output: a table here, bench/results/<timestamp>.json and .md (with plots in
bench/results/<timestamp>/), and with --publish also bench/LAST_RUN.md.
Run it with `make bench` (BENCH_ARGS="--quick" for a < 60 s smoke run).
"""

BUSY_WARNING_CORES = 0.3  # other processes' load at start above which the run warns

# The sizes and times of the default run (3 to 4 minutes on 2 shared cores) and of --quick.
PROFILES: dict[str, dict[str, Any]] = {
    "default": {
        "short": "1,2,5",
        "long": "5,25",
        "watchers": 500,
        "buyers": 50,
        "reviewers": 5,
        "watcher_group": 100,
        "announce_every": 5.0,
        "ask_every": 10.0,
        "watchers_window": 8.0,
        "pairs": 100,
        "chat_every": 2.0,
        "chat_window": 4.0,
        "burst_size": 100,
        "bursts": 1,
        "burst_gap": 4.0,
        "lead": 1.0,
    },
    "quick": {
        "short": "1",
        "long": "5",
        "watchers": 100,
        "buyers": 10,
        "reviewers": 2,
        "watcher_group": 50,
        "announce_every": 1.0,
        "ask_every": 2.0,
        "watchers_window": 3.0,
        "pairs": 10,
        "chat_every": 1.0,
        "chat_window": 3.0,
        "burst_size": 20,
        "bursts": 1,
        "burst_gap": 2.0,
        "lead": 1.0,
    },
}


def _seconds_list(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of seconds: {text!r}") from exc
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError("every interval and timeout must be above 0")
    return values


def _workload_list(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in workloads.NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"workloads are {', '.join(workloads.NAMES)}")
    return names


def compare_parser(subparsers=None) -> argparse.ArgumentParser:
    kwargs = {
        "description": "Run every workload under every strategy and report.",
        "formatter_class": argparse.ArgumentDefaultsHelpFormatter,
    }
    parser = (
        subparsers.add_parser("compare", help="compare the strategies (see below)", **kwargs)
        if subparsers
        else argparse.ArgumentParser(prog="python -m bench compare", **kwargs)
    )
    run = parser.add_argument_group("what to run")
    run.add_argument(
        "--quick", action="store_true", help="a tiny configuration (< 60 s): a smoke test"
    )
    run.add_argument(
        "--workloads", type=_workload_list, default=list(workloads.NAMES), help="comma-separated"
    )
    run.add_argument(
        "--short",
        type=_seconds_list,
        help="short-poll intervals I, s (default 1,2,5; quick 1); '' for none",
    )
    run.add_argument(
        "--long",
        type=_seconds_list,
        help="long-poll timeouts T, s (default 5,25; quick 5); '' for none",
    )
    run.add_argument(
        "--seed", type=int, default=1, help="seeds the plans, the poll phases and the jitter"
    )
    server = parser.add_argument_group("server")
    server.add_argument(
        "--url",
        help="drive this running Parley instead of starting one (e.g. http://127.0.0.1:8000)",
    )
    server.add_argument(
        "--workers",
        type=int,
        default=2,
        help="gunicorn worker processes (WEB_CONCURRENCY) when the harness starts the server",
    )
    server.add_argument(
        "--pg-database",
        help="with --url: count only this database's PostgreSQL backends (default: all)",
    )
    server.add_argument(
        "--connections", type=int, help="client connection pool size (default: 2 per device + 100)"
    )
    sizes = parser.add_argument_group("workload sizes (defaults differ with --quick)")
    sizes.add_argument("--watchers", type=int, help="idle watcher devices (500)")
    sizes.add_argument("--buyers", type=int, help="buyers, each in a 1:1 chat with a reviewer (50)")
    sizes.add_argument(
        "--reviewers",
        type=int,
        help="reviewers: they announce in the groups and answer buyers (5)",
    )
    sizes.add_argument(
        "--watcher-group", type=int, help="watchers per group (100; above 64 no presence fan-out)"
    )
    sizes.add_argument(
        "--announce-every", type=float, help="mean seconds between a group's announcements (5)"
    )
    sizes.add_argument(
        "--ask-every", type=float, help="mean seconds between a buyer's questions (10)"
    )
    sizes.add_argument("--pairs", type=int, help="chat: 1:1 pairs (100)")
    sizes.add_argument(
        "--chat-every", type=float, help="chat: mean seconds between one person's messages (2)"
    )
    sizes.add_argument("--burst-size", type=int, help="group-burst: members, every one sends (100)")
    sizes.add_argument("--bursts", type=int, help="group-burst: bursts per phase (1)")
    sizes.add_argument("--burst-gap", type=float, help="group-burst: seconds between bursts (4)")
    times = parser.add_argument_group("times, in seconds")
    times.add_argument(
        "--watchers-window", type=float, help="watchers: seconds over which the plan sends (8)"
    )
    times.add_argument(
        "--chat-window", type=float, help="chat: seconds over which the plan sends (4)"
    )
    times.add_argument(
        "--lead", type=float, help="lead-in before the first send, while the polls start (1)"
    )
    times.add_argument(
        "--tail",
        type=float,
        help="window after the last planned send (default: longest short interval + 1)",
    )
    times.add_argument(
        "--drain",
        type=float,
        help="after the window, seconds to wait for late deliveries before calling them lost "
        "(default: longest interval or timeout + 10)",
    )
    out = parser.add_argument_group("output")
    out.add_argument(
        "--results",
        type=Path,
        default=repo_root() / "bench" / "results",
        help="directory for the JSON, Markdown and plots",
    )
    out.add_argument(
        "--publish",
        action="store_true",
        help="also write bench/LAST_RUN.md and bench/last_run/*.png",
    )
    out.add_argument(
        "--no-hold-probe", action="store_true", help="skip the memory-per-long-poll probe"
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=OVERVIEW,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Options of `compare`:\n\n" + compare_parser().format_help(),
    )
    subparsers = parser.add_subparsers(dest="command", metavar="compare | targets")
    compare_parser(subparsers)
    targets.add_parser(subparsers)
    return parser


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset options from the profile (default or quick)."""
    profile = PROFILES["quick" if args.quick else "default"]
    for key, value in profile.items():
        if getattr(args, key, None) is None:
            setattr(args, key, _seconds_list(value) if key in ("short", "long") else value)
    limit = DEFAULTS["GROUP_SIZE_LIMIT"]
    if args.watcher_group + 1 > limit or args.burst_size > limit:
        raise SystemExit(f"groups hold at most {limit} members (GROUP_SIZE_LIMIT in api/config.py)")
    if args.reviewers < 1 or args.watchers < 1 or args.pairs < 1 or args.burst_size < 2:
        raise SystemExit(
            "every workload needs people: reviewers, watchers, pairs ≥ 1, burst size ≥ 2"
        )
    if not args.short and not args.long:
        raise SystemExit("name at least one strategy (--short or --long)")
    return args


def build_workloads(args: argparse.Namespace) -> list[workloads.Workload]:
    made = {
        "watchers": lambda: workloads.watchers(
            args.seed,
            watchers=args.watchers,
            buyers=args.buyers,
            reviewers=args.reviewers,
            group_size=args.watcher_group,
            announce_every_s=args.announce_every,
            ask_every_s=args.ask_every,
            window_s=args.watchers_window,
        ),
        "chat": lambda: workloads.chat(args.seed, args.pairs, args.chat_every, args.chat_window),
        "group-burst": lambda: workloads.group_burst(
            args.seed, args.burst_size, args.bursts, args.burst_gap
        ),
    }
    return [made[name]() for name in args.workloads]


def compare(args: argparse.Namespace) -> int:
    args = resolve(args)
    fd_limit = raise_fd_limit()
    chosen = build_workloads(args)
    strategies = [Strategy("short", s) for s in sorted(args.short)] + [
        Strategy("long", s) for s in sorted(args.long)
    ]
    settings = RunSettings(
        strategies=strategies,
        seed=args.seed,
        lead_s=args.lead,
        tail_s=args.tail if args.tail is not None else max(args.short or [0]) + 1.0,
        drain_s=args.drain if args.drain is not None else max([*args.long, *args.short]) + 10.0,
        hold_probe=not args.no_hold_probe,
        long_poll_cap_s=DEFAULTS["LONG_POLL_CAP_S"],
    )
    devices = max(w.devices for w in chosen)
    connections = args.connections or 2 * devices + 100
    if connections + 200 > fd_limit:
        print(
            f"warning: {connections} connections with an open-files limit of {fd_limit}",
            file=sys.stderr,
        )
    server = (
        ExternalServer(args.url.rstrip("/"), database=args.pg_database)
        if args.url
        else ScaledServer(workers=args.workers)
    )
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    stamp = timestamp()
    machine = machine_info()
    busy = busy_cores()
    machine["busy_cores_before_start"] = f"{busy:.2f}"
    if busy > BUSY_WARNING_CORES:
        print(
            f"warning: other processes keep {busy:.1f} cores busy; the numbers will be noisy "
            "(see the 'others' column)",
            file=sys.stderr,
        )
    try:
        with running(server) as sampler:
            results = asyncio.run(run_all(server.url, chosen, settings, sampler, connections))
    except (ServerError, SetupError, KeyboardInterrupt) as exc:
        return could_not_run(exc)
    record = {
        "meta": {
            "started": started,
            "command": "python -m bench " + shlex.join(sys.argv[1:]),
            "machine": machine,
            "server": server.describe(),
            "settings": {
                "seed": settings.seed,
                "lead_s": settings.lead_s,
                "tail_s": settings.tail_s,
                "drain_s": settings.drain_s,
                "strategies": [s.name for s in strategies],
                "connections": connections,
                "open_files_limit": fd_limit,
            },
            "workloads": {
                w.name: {
                    "summary": w.summary,
                    "devices": w.devices,
                    "messages": len(w.plan),
                    **w.params,
                }
                for w in chosen
            },
        },
        "hold_probe": results["hold_probe"],
        "phases": results["phases"],
    }
    page = report.write_reports(record, results["latencies"], args.results, stamp)
    print(report.text_table(record["phases"]))
    if record["hold_probe"]:
        print("\n" + report.probe_text(record["hold_probe"]).replace("**", ""))
    print("\n" + report.verdict(record["phases"]).replace("**", ""))
    print(f"\nreport: {page}\nrecord: {page.with_suffix('.json')}")
    if args.publish:
        print(f"published: {report.publish(record, args.results, stamp, repo_root() / 'bench')}")
    broken = sum(
        r["lost"] + r["duplicates"] + r["seq_gaps"] + r["out_of_order"] + r["cursor_mismatches"]
        for r in record["phases"]
    )
    return 1 if broken else 0


def could_not_run(exc: BaseException) -> int:
    """Say why nothing (more) was measured; the exit status for it."""
    if isinstance(exc, KeyboardInterrupt):
        print("\ninterrupted: stopping what the harness started", file=sys.stderr)
        return 130
    if isinstance(exc, ServerError):
        print(f"the server could not start: {exc}", file=sys.stderr)
    else:
        print(f"set-up failed, nothing was measured: {exc}", file=sys.stderr)
    return 2


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C


# Every poll of the holding target is a connection: more than the default per worker.
TARGETS_WORKER_CONNECTIONS = 19_000  # under the 20,000 open files a process may have here
ONE_WORKER_SCENARIOS = ("empty",)


def _workers(count: str) -> str:
    return f", {count} gevent worker{'' if count == '1' else 's'}"


def measure_targets(args: argparse.Namespace) -> int:
    """Run the performance-bar scenarios; exit 0 only if every target is met."""
    args = bar.resolve(args)
    raise_fd_limit()
    server = (
        ExternalServer(args.url.rstrip("/"), database=args.pg_database)
        if args.url
        else ScaledServer(
            workers=args.workers,
            extra_env={"WORKER_CONNECTIONS": str(TARGETS_WORKER_CONNECTIONS)},
        )
    )
    # Empty polls per worker process: against two workers on two cores shared
    # with the harness, each would get under a core whatever a poll cost, so
    # that scenario gets a Parley of its own with one worker.
    alone = tuple(s for s in args.only if s in ONE_WORKER_SCENARIOS and not args.url)
    together = tuple(s for s in args.only if s not in alone)
    single = ScaledServer(workers=1) if alone else None
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    stamp = timestamp()
    machine = machine_info()
    results: dict = {}
    try:
        if together:
            with running(server) as sampler:
                results |= asyncio.run(targets.measure_all(server.url, args, sampler, together))
        if alone:
            with running(single) as sampler:
                results |= asyncio.run(targets.measure_all(single.url, args, sampler, alone))
    except (ServerError, SetupError, KeyboardInterrupt) as exc:
        return could_not_run(exc)
    rows = bar.evaluate(args, results)
    described = (server if together else single).describe()
    record = {
        "meta": {
            "started": started,
            "command": "python -m bench " + shlex.join(sys.argv[1:]),
            "machine": machine,
            "machine_line": report.machine_line(machine),
            "server": f"{described['mode']}"
            + (_workers(described["workers"]) if "workers" in described else "")
            + (f"; {', '.join(alone)}: one worker of its own" if alone and together else ""),
            "server_details": described,
            **({"one_worker_server_details": single.describe()} if alone and together else {}),
        },
        "targets": [{"target": w, "measured": m, "met": ok} for w, m, ok in rows],
        "results": results,
    }
    page = targets.write(record, rows, args.results, stamp, args.publish)
    print("\n" + bar.table(rows).replace("**", ""))
    print(f"\nreport: {page}")
    return 0 if all(ok for _, _, ok in rows) else 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    commands = {"compare": compare, "targets": measure_targets}
    if args.command not in commands:
        parser.print_help()
        return 0
    signal.signal(signal.SIGTERM, _interrupt)
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
