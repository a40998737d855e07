"""``python -m bench targets``: Parley against its performance bar, measured.

Four scenarios, one after the other, on a Parley in the scaled mode (started
as for ``compare``, or ``--url``); started by the harness, the empty polls get
a Parley of their own with one worker process, the rest one with --workers:

  waiting   --waiting devices (5,000) hold long polls while 1:1 chats among them
            carry --rate messages a second (50): delivery latency and server CPU
            per delivery in the steady state (the devices come online over
            --waiting-ramp seconds, one poll period, so their time-outs are
            spread out as they would be after a while); before it, every
            device holds one long poll and the web processes' memory growth
            gives the memory per waiting poll
  fan-out   --senders (16) take turns sending --fan-out-rate messages a second
            (10) into one group with --receivers (100): deliveries per second
  empty     --empty-devices (100) short-poll their empty inboxes back to back
            for --empty-window seconds: empty polls per second per worker
            process, and the server's own count of database queries meanwhile
            (two workers and the harness on two cores would each get under a
            core, whatever a poll cost)
  holding   --hold devices (20,000) each hold one long poll, from
            --hold-processes client processes (one process may open only so
            many files): polls held, errors, memory per poll

``--only waiting`` (or any comma-separated few) runs just those and shows their
targets: a few minutes to compare two versions of the code on one scenario.

Every (message, device) delivery is checked as in ``compare``: lost and
duplicated must be 0. Each target is then read off one run: a percentile or a
ratio, not a timing to pass or fail on another machine.
"""

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench import clients, workloads
from bench.bar import LONG_POLL_S, PROFILES, SCENARIOS, parse_scenarios, table
from bench.clients import Api, Device
from bench.holders import Holders
from bench.ledger import Ledger
from bench.measure import Sampler, repo_root
from bench.run import (
    HOLD_PROBE_WAIT_S,
    Context,
    RunSettings,
    Strategy,
    lag_monitor,
    metric_total,
    metrics_text,
    no_collector_pauses,
    run_workload,
    set_up,
    waiting_long_polls,
)

# Devices coming online a second, at most: a first poll costs ~2 ms of server CPU
# (log-in caches, presence), so this keeps the two cores from a queue of them.
RAMP_PER_S = 500


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "targets",
        help="measure the performance bar (see bench/README.md)",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    for key, value in PROFILES["default"].items():
        parser.add_argument(
            f"--{key.replace('_', '-')}", type=type(value), help=f"default {value:,}"
        )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--url", help="drive this running Parley instead of starting one")
    parser.add_argument("--pg-database", help="with --url: this database's backends only")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument(
        "--results", type=Path, default=repo_root() / "bench" / "results", help="output directory"
    )
    parser.add_argument("--publish", action="store_true", help="also write bench/TARGETS.md")
    parser.add_argument(
        "--only",
        type=parse_scenarios,
        default=SCENARIOS,
        help=f"comma-separated scenarios to run (default all: {','.join(SCENARIOS)})",
    )
    return parser


async def measure_all(
    url: str, args: argparse.Namespace, sampler: Sampler, scenarios: tuple[str, ...]
) -> dict[str, Any]:
    """Run these scenarios, in the bar's order; returns their raw records."""
    # The devices come online over --waiting-ramp seconds, by default one
    # long-poll period (and at most RAMP_PER_S a second), so their polls time out
    # spread out as in the steady state the bar is about. Coming online faster,
    # they would time out in the same wave one period later, inside the measured
    # window: a deploy's thundering herd, which is the holding scenario's subject.
    # CPU is counted from a second before the sends.
    ramp_s = max(args.waiting_ramp, args.waiting / RAMP_PER_S)
    settings = RunSettings(
        strategies=[Strategy("long", LONG_POLL_S)],
        seed=args.seed,
        ramp_s=ramp_s,
        lead_s=ramp_s + 3.0,
        warm_up_s=ramp_s + 2.0,
        tail_s=2.0,
        drain_s=LONG_POLL_S + 10,
        probe_workload="chat",
        probe_ramp_s=args.waiting / RAMP_PER_S,
        long_poll_cap_s=LONG_POLL_S,
    )
    api = Api(url, 2 * max(args.waiting, args.empty_devices) + 100)
    bar = tqdm(total=len(scenarios), desc="targets", unit="scenario")
    context = Context(api, Ledger(), sampler, settings, bar)
    lag_task = asyncio.create_task(lag_monitor(context))
    results: dict[str, Any] = {}
    try:
        if "waiting" in scenarios:
            chat = workloads.chat(
                args.seed, args.waiting // 2, every_s=args.waiting / args.rate, window_s=args.window
            )
            records, probe, _ = await run_workload(context, chat, 0)  # counts on the bar itself
            results["waiting"] = {"phase": records[0], "probe": probe}
        if "fan-out" in scenarios:
            fan_out = workloads.fan_out(
                args.seed, args.senders, args.receivers, args.fan_out_rate, args.window
            )
            records, _, _ = await run_workload(context, fan_out, 1)
            results["fan-out"] = {
                "phase": records[0],
                "delivered_per_s": delivered_per_second(context.ledger, "fan-out/long 25s"),
            }
        if "empty" in scenarios:
            results["empty"] = await empty_polls(context, args.empty_devices, args.empty_window)
            bar.update()
        if "holding" in scenarios:
            results["holding"] = await hold_many(
                context, url, args.hold, args.hold_processes, sampler
            )
            bar.update()
    finally:
        lag_task.cancel()
        bar.close()
        await api.close()
    return results


def delivered_per_second(ledger: Ledger, phase: str) -> float:
    """Deliveries (to members other than the sender) per second, from the first
    send's start to the last of them."""
    keys = {key for key, expected in ledger.expected.items() if expected.phase == phase}
    starts = [ledger.expected[k].started_at for k in keys if ledger.expected[k].started_at]
    arrivals = [
        receipt.first_at
        for (key, device), receipt in ledger.receipts.items()
        if key in keys and device != ledger.expected[key].sender
    ]
    if not starts or not arrivals:
        return 0.0
    return len(arrivals) / (max(arrivals) - min(starts))


async def empty_polls(context: Context, count: int, window_s: float) -> dict[str, Any]:
    """Devices with empty inboxes short-poll back to back (each waits for its
    answer, then asks again); the server counts its own database queries."""
    api, loop = context.api, asyncio.get_running_loop()
    idle = workloads.Workload("empty", "idle devices", count, {"devices": count}, [], [], 0.0)
    devices, _ = await set_up(context, idle)
    stop = asyncio.Event()

    async def poll_back_to_back(device: Device) -> None:
        while not stop.is_set():
            await clients.poll_once(api, device, context.ledger, "0")

    # Long polls of the scenarios before may still run out their time and read
    # the database as they end: count queries only once none is held.
    for _ in range(int(LONG_POLL_S + 10)):
        if not await waiting_long_polls(api):
            break
        await asyncio.sleep(1)
    queries_before = metric_total(await metrics_text(api), "parley_db_query_seconds_count")
    with no_collector_pauses():
        api.traffic = clients.Traffic()
        context.sampler.mark()
        started = loop.time()
        loops = [asyncio.create_task(poll_back_to_back(d)) for d in devices]
        await asyncio.sleep(window_s)
        stop.set()
        await asyncio.gather(*loops)
        elapsed = loop.time() - started
        usage = context.sampler.mark()
    queries = metric_total(await metrics_text(api), "parley_db_query_seconds_count")
    traffic = api.traffic
    return {
        "devices": count,
        "window_s": elapsed,
        "polls": traffic.polls,
        "empty_polls": traffic.empty_polls,
        "errors": traffic.errors,
        "db_queries": queries - queries_before,
        "polls_per_s": traffic.polls / elapsed,
        "web_cpu_s": usage["web"].cpu_s,
        "web_processes": usage["web"].processes,
        "client_cpu_share": usage["client"].cpu_s / elapsed,
    }


async def hold_many(
    context: Context, url: str, devices: int, processes: int, sampler: Sampler
) -> dict[str, Any]:
    """``devices`` long polls held at once; the web processes' memory growth per poll."""
    holders = Holders(url, context.tag, devices, processes, ramp_s=devices / RAMP_PER_S)
    loop = asyncio.get_running_loop()
    try:
        await asyncio.to_thread(holders.set_up)
        before = sorted(sampler.pss_now("web") for _ in range(3))[1]
        sampler.mark()
        started = loop.time()
        holders.hold()
        most_held = 0.0
        while loop.time() - started < devices / RAMP_PER_S + HOLD_PROBE_WAIT_S:
            await asyncio.sleep(0.5)
            most_held = max(most_held, await waiting_long_polls(context.api))
            if most_held >= devices:
                break
        established_s = loop.time() - started
        await asyncio.sleep(1.0)
        # Fewer than at the peak, by the polls between an answer and the next
        # poll (800 a second at 20,000): memory is divided by the polls held now.
        held = await waiting_long_polls(context.api)
        during = sorted(sampler.pss_now("web") for _ in range(3))[1]
        usage = sampler.mark()
        reports = await asyncio.to_thread(holders.release)
    finally:
        holders.stop()
    return {
        "devices": devices,
        "processes": processes,
        "most_held": most_held,
        "held": held,
        "established_s": established_s,
        "web_pss_per_poll_bytes": (during - before) / held if held else None,
        "web_cpu_s_to_establish": usage["web"].cpu_s,
        "errors": sum(r.errors for r in reports),
        "holders": [vars(r) for r in reports],
    }


def write(record: dict[str, Any], rows: list, results_dir: Path, stamp: str, publish: bool) -> Path:
    """bench/results/targets-<stamp>.json and .md; with ``publish`` also bench/TARGETS.md."""
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"targets-{stamp}.json").write_text(json.dumps(record, indent=1, default=str))
    meta = record["meta"]
    page = "\n".join(
        [
            f"# Parley against its performance bar — run {meta['started']}",
            "",
            f"Command: `{meta['command']}`  ",
            f"Machine: {meta['machine_line']}  ",
            f"Server: {meta['server']}. **Client and server share the cores.**",
            "",
            table(rows),
            "",
            "Figures from this one run; `bench/README.md` says what limits each.",
            "",
        ]
    )
    path = results_dir / f"targets-{stamp}.md"
    path.write_text(page)
    if publish:
        (repo_root() / "bench" / "TARGETS.md").write_text(page)
    return path
