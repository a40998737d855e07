"""One comparison run: set up each workload, then replay its plan once per strategy.

A phase (one workload under one strategy) goes:

    mark CPU ─ start every device's poll loop ─ lead-in ─ the plan's sends ─ tail ─ mark CPU
    │◄──────────────────────── measuring window (same length for every strategy) ─────────►│
    then: drain (until every expected delivery arrived, or --drain seconds), wind down

Costs (requests, bytes, CPU) are counted over the measuring window, which is
the same for every strategy of a workload and long enough (the tail is the
longest short-poll interval plus a second) for every strategy to deliver the
whole plan inside it. Latency, loss and duplicates count everything, drain included.
"""

import asyncio
import contextlib
import gc
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from bench import clients
from bench.clients import Api, Device, Traffic
from bench.ledger import Ledger
from bench.measure import GroupUsage, Sampler
from bench.workloads import Workload

LAG_TICK_S = 0.05
WIND_DOWN_ROUNDS = 4
HOLD_PROBE_WAIT_S = 30.0
DRAIN_POLLS_MAX = 1000  # per device; with the default limit that is 100,000 entries


@dataclass(frozen=True)
class Strategy:
    kind: str  # "short": poll every `seconds`; "long": hold each poll up to `seconds`
    seconds: float

    @property
    def name(self) -> str:
        return f"{self.kind} {self.seconds:g}s"


@dataclass
class RunSettings:
    strategies: list[Strategy]
    seed: int = 1
    lead_s: float = 1.0  # before the first send: long polls get established
    tail_s: float = 6.0  # after the last planned send, still inside the window
    drain_s: float = 35.0  # past the window: time for late deliveries before "lost"
    setup_concurrency: int = 32
    hold_probe: bool = True
    # Seconds after the poll loops start before CPU is measured (0: from the
    # start). Under the lead-in; lets thousands of first polls settle first.
    warm_up_s: float = 0.0
    # Seconds over which the devices' first polls are spread (0: all at once).
    ramp_s: float = 0.0
    probe_workload: str = "watchers"  # the workload whose devices the hold probe uses
    # The same for the hold probe's one poll per device (None: ramp_s); under the
    # long-poll cap, or the first polls end before the last ones are held.
    probe_ramp_s: float | None = None
    long_poll_cap_s: float = 25.0


@dataclass
class Context:
    api: Api
    ledger: Ledger
    sampler: Sampler
    settings: RunSettings
    bar: tqdm
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    lag_s: list[float] = field(default_factory=list)


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50, p90, p99 and max (None when there are no values)."""
    if not values:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None, "min": None}
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "min": ordered[0],
        "p50": quantile(ordered, 0.50),
        "p90": quantile(ordered, 0.90),
        "p99": quantile(ordered, 0.99),
        "max": ordered[-1],
    }


def quantile(ordered: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks of sorted ``ordered``."""
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@contextlib.contextmanager
def no_collector_pauses() -> Iterator[None]:
    """Keep the garbage collector out of a measured phase: collect before it and
    after it, never during it.

    With thousands of simulated devices the harness holds millions of objects,
    and a full collection stopped its event loop for 0.3 to 0.8 s (18 of them in
    one run of the waiting scenario, 4.8 s in all): every answer that arrived
    meanwhile was read late, and its delivery counted the client's pause as the
    server's latency."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


async def lag_monitor(context: Context) -> None:
    """How late the event loop wakes: when this grows, the client is the bottleneck."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(LAG_TICK_S)
        context.lag_s.append(loop.time() - started - LAG_TICK_S)


async def _bounded(limit: asyncio.Semaphore, work):
    async with limit:
        return await work


async def set_up(context: Context, workload: Workload) -> tuple[list[Device], list[int]]:
    """Sign up and log in every device, open the conversations, drain the inboxes."""
    api, limit = context.api, asyncio.Semaphore(context.settings.setup_concurrency)
    short = {"watchers": "w", "chat": "c", "group-burst": "g", "fan-out": "f", "empty": "e"}.get(
        workload.name, "x"
    )
    steps = workload.devices + len(workload.conversations)
    with tqdm(total=steps, desc=f"set-up {workload.name}", leave=False, unit="req") as bar:

        async def counted(work):
            result = await _bounded(limit, work)
            bar.update()
            return result

        devices = await asyncio.gather(
            *(
                counted(clients.sign_up(api, i, f"b{context.tag}{short}{i}"))
                for i in range(workload.devices)
            )
        )
        conversation_ids = await asyncio.gather(
            *(
                counted(
                    clients.create_conversation(
                        api,
                        devices[c.members[0]],
                        c.kind,
                        [devices[m] for m in c.members],
                    )
                )
                for c in workload.conversations
            )
        )
    await drain_inboxes(context, devices)
    return list(devices), list(conversation_ids)


async def drain_inboxes(context: Context, devices: list[Device]) -> None:
    """Short-poll every device until its inbox is empty. The first round also
    brings users online, which writes presence entries to their contacts; the
    second round reads those."""
    limit = asyncio.Semaphore(context.settings.setup_concurrency)

    async def drain(device: Device) -> None:
        for _ in range(DRAIN_POLLS_MAX):
            answer = await clients.poll_once(context.api, device, context.ledger, "0")
            if answer.status == 200 and not answer.body["entries"]:
                return
            if answer.status != 200:
                await asyncio.sleep(max(answer.retry_after or 0, 0.5))

    for _ in range(2):
        await asyncio.gather(*(_bounded(limit, drain(d)) for d in devices))


async def waiting_long_polls(api: Api) -> float:
    """The server's gauge of held long polls (summed over its workers)."""
    return metric_total(await metrics_text(api), "parley_long_polls_waiting")


def metric_total(text: str, name: str) -> float:
    """The sum of one metric's samples (over labels and processes) in /metrics text."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            with contextlib.suppress(ValueError):
                total += float(line.rsplit(" ", 1)[1])
    return total


async def metrics_text(api: Api) -> str:
    try:
        async with api.session.get(f"{api.base_url}/metrics") as response:
            return await response.text()
    except Exception:  # noqa: BLE001 — the probe is best effort; no gauge reads as zero
        return ""


async def hold_probe(context: Context, devices: list[Device]) -> dict[str, Any]:
    """Memory per waiting long poll: the web processes' PSS with every device of
    the workload holding a long poll, minus their PSS just before."""
    api, sampler, loop = context.api, context.sampler, asyncio.get_running_loop()
    api.traffic = Traffic()
    before = sorted(sampler.pss_now("web") for _ in range(3))[1]
    sampler.mark()
    started = loop.time()
    settings = context.settings
    wait = f"{settings.long_poll_cap_s:g}"
    ramp_s = settings.ramp_s if settings.probe_ramp_s is None else settings.probe_ramp_s
    polls = [
        asyncio.create_task(
            clients.after(
                ramp_s * n / len(devices), clients.poll_once(api, d, context.ledger, wait)
            )
        )
        for n, d in enumerate(devices)
    ]
    held = 0.0
    while loop.time() - started < ramp_s + HOLD_PROBE_WAIT_S:
        held = await waiting_long_polls(api)
        if held >= len(devices):
            break
        await asyncio.sleep(0.25)
    established_s = loop.time() - started
    await asyncio.sleep(1.0)  # let the workers settle before reading memory
    held = await waiting_long_polls(api)
    during = sorted(sampler.pss_now("web") for _ in range(3))[1]
    usage = sampler.mark()
    await asyncio.gather(*(clients.supersede(api, d, context.ledger) for d in devices))
    await asyncio.wait(polls, timeout=10)
    for poll in polls:
        poll.cancel()
    per_poll = (during - before) / held if held else None
    return {
        "devices": len(devices),
        "held": held,
        "established_s": established_s,
        "web_pss_before_bytes": before,
        "web_pss_holding_bytes": during,
        "web_pss_per_poll_bytes": per_poll,
        "web_cpu_s_to_establish": usage["web"].cpu_s,
        "errors": api.traffic.errors,
    }


def _poll_loop(strategy: Strategy) -> Callable:
    return clients.short_poll_loop if strategy.kind == "short" else clients.long_poll_loop


async def _play_plan(
    context: Context,
    workload: Workload,
    devices: list[Device],
    conversation_ids: list[int],
    keys: list[str],
    start_at: float,
) -> None:
    loop = asyncio.get_running_loop()
    sends = []
    for planned, key in zip(workload.plan, keys, strict=True):
        delay = start_at + planned.at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        rng = random.Random(f"{context.settings.seed}-{key}")
        sends.append(
            asyncio.create_task(
                clients.send(
                    context.api,
                    devices[planned.sender],
                    conversation_ids[planned.conversation],
                    planned.text,
                    key,
                    context.ledger,
                    rng,
                )
            )
        )
    await asyncio.gather(*sends)


async def _wind_down(context: Context, devices: list[Device], loops: list[asyncio.Task]) -> None:
    """Stop the loops: short polls stop at their next tick; held long polls are
    ended by a newer poll of their device (the documented way), and what those
    answers bring is still recorded."""
    for _ in range(WIND_DOWN_ROUNDS):
        pending = [task for task in loops if not task.done()]
        if not pending:
            return
        holders = [d for d in devices if d.holding]
        await asyncio.gather(*(clients.supersede(context.api, d, context.ledger) for d in holders))
        await asyncio.wait(pending, timeout=2)
    for task in loops:
        task.cancel()
    await asyncio.gather(*loops, return_exceptions=True)


def crashed(loops: list[asyncio.Task]) -> list[str]:
    """Poll loops that died of an exception (a harness bug: say so, never hide it)."""
    return [
        repr(task.exception())
        for task in loops
        if task.done() and not task.cancelled() and task.exception() is not None
    ]


async def run_phase(
    context: Context,
    workload: Workload,
    devices: list[Device],
    conversation_ids: list[int],
    strategy: Strategy,
    number: int,
) -> dict[str, Any]:
    """Replay the workload's plan under one strategy; returns the phase's record."""
    settings, ledger, api = context.settings, context.ledger, context.api
    loop = asyncio.get_running_loop()
    phase = f"{workload.name}/{strategy.name}"
    prefix = f"{context.tag}p{number}"
    keys = [f"{prefix}-{planned.key}" for planned in workload.plan]
    ledger.begin_phase(
        phase,
        [
            (key, planned.sender, workload.members(planned.conversation))
            for key, planned in zip(keys, workload.plan, strict=True)
        ],
    )
    tally = ledger.phases[phase]
    api.traffic = Traffic()
    context.lag_s.clear()
    stop = asyncio.Event()
    context.sampler.mark()
    started = loop.time()
    poll_loop = _poll_loop(strategy)
    loops = [
        asyncio.create_task(
            clients.after(
                settings.ramp_s * n / len(devices),
                poll_loop(
                    api,
                    device,
                    ledger,
                    strategy.seconds,
                    stop,
                    random.Random(f"{settings.seed}-{device.index}"),
                ),
            )
        )
        for n, device in enumerate(devices)
    ]
    sender = asyncio.create_task(
        _play_plan(context, workload, devices, conversation_ids, keys, started + settings.lead_s)
    )
    measured_from, counted_from = started, Traffic()
    if settings.warm_up_s:
        await asyncio.sleep(settings.warm_up_s)
        context.sampler.mark()
        counted_from = api.traffic.copy()  # requests and bytes: the CPU's window
        context.lag_s.clear()
        measured_from = loop.time()
    window_s = settings.lead_s + workload.send_window_s + settings.tail_s
    while (left := started + window_s - loop.time()) > 0:
        context.bar.set_postfix_str(
            f"{phase}: {tally.received_pairs}/{tally.expected_pairs} received", refresh=True
        )
        await asyncio.sleep(min(left, 0.5))
    usage = context.sampler.mark()
    window = api.traffic.since(counted_from)
    lag = list(context.lag_s)
    window_ended = loop.time()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(tally.all_received.wait(), settings.drain_s)
    drained_s = loop.time() - window_ended
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(sender, 120)
    stop.set()
    await _wind_down(context, devices, loops)
    record = summarize(
        phase=phase,
        workload=workload,
        strategy=strategy,
        window_s=window_ended - measured_from,
        window=window,
        total=api.traffic.copy(),
        usage=usage,
        ledger=ledger,
        lag_s=lag,
        drained_s=drained_s,
    )
    record["crashed_loops"] = crashed(loops)
    missing_devices = sorted({device for _, device in ledger.missing(phase)})
    if missing_devices:  # evidence for whoever reads the record: the polls of a few of them
        record["lost_device_polls"] = {
            str(device): list(devices[device].history) for device in missing_devices[:5]
        }
    return record


def summarize(
    *,
    phase: str,
    workload: Workload,
    strategy: Strategy,
    window_s: float,
    window: Traffic,
    total: Traffic,
    usage: dict[str, GroupUsage],
    ledger: Ledger,
    lag_s: list[float],
    drained_s: float,
) -> dict[str, Any]:
    """The phase's record: latency, traffic per delivery, CPU and memory, correctness."""
    tally = ledger.phases[phase]
    missing = ledger.missing(phase)
    deliveries = tally.deliveries
    per = 1 / deliveries if deliveries else 0.0
    server_cpu_s = sum(usage[name].cpu_s for name in ("web", "postgres", "redis"))
    return {
        "workload": workload.name,
        "strategy": strategy.name,
        "kind": strategy.kind,
        "seconds": strategy.seconds,
        "window_s": round(window_s, 3),
        "devices": workload.devices,
        "messages": len(workload.plan),
        "deliveries": deliveries,
        "echoes": tally.echoes,
        "expected_pairs": tally.expected_pairs,
        "latency_s": percentiles(tally.latencies_s),
        "latency_quantiles_s": _quantile_curve(tally.latencies_s),
        "latency_from_201_s": percentiles(ledger.latencies_from_201(phase)),
        "send_duration_s": percentiles(tally.send_durations_s),
        "requests": window.requests,
        "polls": window.polls,
        "sends": window.sends,
        "requests_per_delivery": window.requests * per,
        "polls_per_delivery": window.polls * per,
        "empty_poll_share": window.empty_polls / window.polls if window.polls else 0.0,
        "bytes_per_delivery": (window.bytes_sent + window.bytes_received) * per,
        "bytes_sent": window.bytes_sent,
        "bytes_received": window.bytes_received,
        "cpu_s": {name: u.cpu_s for name, u in usage.items()},
        "busiest_processes_cpu_s": {name: u.top_cpu_s for name, u in usage.items()},
        "server_cpu_s": server_cpu_s,
        "server_cpu_ms_per_delivery": server_cpu_s * 1000 * per,
        "web_cpu_ms_per_delivery": usage["web"].cpu_s * 1000 * per,
        "client_cpu_share": usage["client"].cpu_s / window_s if window_s else 0.0,
        "peak_rss_bytes": {name: u.peak_rss_bytes for name, u in usage.items()},
        "peak_pss_bytes": {name: u.peak_pss_bytes for name, u in usage.items()},
        "errors": total.errors,
        "status": {str(k): v for k, v in sorted(total.status.items())},
        "exceptions": dict(total.exceptions),
        "failed_sends": tally.failed_sends,
        "replayed_sends": tally.replayed_sends,
        "missing_after_drain": len(missing),
        "lost": len(missing),  # final after final_check, which reads the inboxes to the end
        "late": 0,
        "lost_examples": [f"{key} -> device {device}" for key, device in missing[:10]],
        "duplicates": tally.duplicates,
        "redeliveries": tally.redeliveries,
        "seq_gaps": tally.seq_gaps,
        "out_of_order": tally.out_of_order,
        "cursor_mismatches": tally.cursor_mismatches,
        "stray_entries": tally.stray_entries,
        "drained_s": drained_s,
        "loop_lag_s": percentiles(lag_s),
    }


def _quantile_curve(values: list[float]) -> list[float]:
    """The 0th to 100th percentiles: enough to redraw the distribution from the JSON."""
    if not values:
        return []
    ordered = sorted(values)
    return [quantile(ordered, q / 100) for q in range(101)]


async def run_workload(
    context: Context, workload: Workload, first_phase: int
) -> tuple[list[dict[str, Any]], dict[str, Any] | None, dict[str, list[float]]]:
    """Set up, probe (``probe_workload`` only), then one phase per strategy. Returns the
    phase records, the hold probe, and each strategy's raw latencies (for plots)."""
    context.bar.set_postfix_str(f"{workload.name}: set-up", refresh=True)
    devices, conversation_ids = await set_up(context, workload)
    probe = None
    if context.settings.hold_probe and workload.name == context.settings.probe_workload:
        context.bar.set_postfix_str(f"{workload.name}: holding one long poll each", refresh=True)
        probe = await hold_probe(context, devices)
    records, latencies = [], {}
    for offset, strategy in enumerate(context.settings.strategies):
        with no_collector_pauses():
            record = await run_phase(
                context, workload, devices, conversation_ids, strategy, first_phase + offset
            )
        records.append(record)
        latencies[strategy.name] = context.ledger.phases[record_phase(record)].latencies_s
        context.bar.update()
    await final_check(context, devices, records)
    return records, probe, latencies


async def final_check(context: Context, devices: list[Device], records: list[dict]) -> None:
    """Deliveries still missing when their phase's drain ended may only be late:
    read the inboxes of the devices concerned to the end. What is still missing
    then is not in the inbox at all: lost."""
    ledger = context.ledger
    waiting = {device for r in records for _, device in ledger.missing(record_phase(r))}
    if not waiting:
        return
    context.bar.set_postfix_str(f"reading {len(waiting)} inboxes to the end", refresh=True)
    ledger.current = None  # what these polls bring belongs to no phase's counts
    await drain_inboxes(context, [devices[i] for i in sorted(waiting)])
    for record in records:
        phase = record_phase(record)
        missing = ledger.missing(phase)
        record["late"] = record["missing_after_drain"] - len(missing)
        record["lost"] = len(missing)
        record["lost_examples"] = [f"{key} -> device {device}" for key, device in missing[:10]]
        if not missing:
            record.pop("lost_device_polls", None)
        latencies = ledger.phases[phase].latencies_s
        record["latency_s"] = percentiles(latencies)
        record["latency_quantiles_s"] = _quantile_curve(latencies)


def record_phase(record: dict[str, Any]) -> str:
    return f"{record['workload']}/{record['strategy']}"


async def run_all(
    base_url: str,
    workloads: list[Workload],
    settings: RunSettings,
    sampler: Sampler,
    connections: int,
) -> dict[str, Any]:
    """Every workload under every strategy, on one client session."""
    api = Api(base_url, connections)
    total_phases = len(workloads) * len(settings.strategies)
    bar = tqdm(total=total_phases, desc="phases", unit="phase")
    context = Context(api, Ledger(), sampler, settings, bar)
    lag_task = asyncio.create_task(lag_monitor(context))
    results: dict[str, Any] = {"phases": [], "hold_probe": None, "latencies": {}}
    try:
        for number, workload in enumerate(workloads):
            records, probe, latencies = await run_workload(
                context, workload, number * len(settings.strategies)
            )
            results["phases"] += records
            results["latencies"][workload.name] = latencies
            results["hold_probe"] = results["hold_probe"] or probe
    finally:
        lag_task.cancel()
        bar.close()
        await api.close()
    return results
