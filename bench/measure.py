"""Server cost read from /proc: CPU seconds and memory of the processes that serve.

A sampler thread reads ``/proc`` a few times a second and keeps, for every
process it has ever seen in a group (web, PostgreSQL, Redis, the harness), the
last CPU time it read. A phase's CPU is the difference between two marks; a
process that exits between marks keeps its last reading, and one that appears
counts from zero, so short-lived PostgreSQL backends are not lost (at most one
sampling period of their CPU is).

Memory is the peak, between two marks, of the group's summed RSS and PSS. RSS
counts a shared page once per process that maps it, so PostgreSQL (whose
backends all map the shared buffers) or forked gunicorn workers look bigger
than they are; PSS (proportional set size) splits each shared page among its
sharers, so the sum over processes is the honest total.
"""

import os
import platform
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
SAMPLE_EVERY_S = 0.25  # often enough to catch a short-lived backend's CPU
PSS_EVERY = 2  # smaps_rollup walks page tables: read it every other sample
# A PostgreSQL client backend's process title names its peer: "db 127.0.0.1(4242)" or "[local]".
BACKEND_TITLE = re.compile(r"\d+\.\d+\.\d+\.\d+\(\d+\)|\[local\]|\[[0-9a-f:]+\]\(\d+\)")


@dataclass
class ProcInfo:
    pid: int
    ppid: int
    comm: str
    cpu_ticks: int
    rss_bytes: int


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            return handle.read().decode(errors="replace")
    except OSError:  # the process is gone, or not ours to read
        return None


def read_proc(pid: int) -> ProcInfo | None:
    """utime + stime and RSS of one process from ``/proc/<pid>/stat``; None if it is gone."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    # The command name is in parentheses and may hold spaces: split after the last ')'.
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    rest = stat[stat.rindex(")") + 2 :].split()
    return ProcInfo(
        pid=pid,
        ppid=int(rest[1]),
        comm=comm,
        cpu_ticks=int(rest[11]) + int(rest[12]),
        rss_bytes=int(rest[21]) * PAGE_BYTES,
    )


def read_pss(pid: int) -> int:
    text = _read(f"/proc/{pid}/smaps_rollup") or ""
    match = re.search(r"^Pss:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def cmdline(pid: int) -> str:
    return (_read(f"/proc/{pid}/cmdline") or "").replace("\0", " ").strip()


def all_processes() -> list[ProcInfo]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and (info := read_proc(int(name))) is not None:
            found.append(info)
    return found


def machine_busy_ticks() -> int:
    """CPU ticks every core spent not idle since boot (first line of /proc/stat)."""
    fields = (_read("/proc/stat") or "cpu 0").splitlines()[0].split()[1:]
    values = [int(v) for v in fields[:8]] + [0] * 8
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return user + nice + system + irq + softirq + steal


def busy_cores(over_s: float = 1.0) -> float:
    """How many cores the machine kept busy over the next ``over_s`` seconds."""
    before = machine_busy_ticks()
    time.sleep(over_s)
    return (machine_busy_ticks() - before) / CLOCK_TICKS / over_s


def descendants(root: int, processes: Iterable[ProcInfo]) -> set[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for proc in processes:
        children.setdefault(proc.ppid, []).append(proc.pid)
    found, stack = set(), [root]
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.add(pid)
            stack.extend(children.get(pid, ()))
    return found


Selector = Callable[[list[ProcInfo]], set[int]]


def listening_root(port: int) -> int | None:
    """The process that listens on local TCP ``port`` and is not the child of
    another holder of that socket: for gunicorn, the master (its workers inherit
    the listening socket). None if no process here listens there."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in (_read(table) or "").splitlines()[1:]:
            fields = line.split()
            if (
                len(fields) > 9
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    holders = {}
    for proc in all_processes():
        if proc.pid == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{proc.pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{proc.pid}/fd/{fd}") in inodes:
                    holders[proc.pid] = proc.ppid
                    break
            except OSError:
                continue
    roots = [pid for pid, ppid in holders.items() if ppid not in holders]
    return min(roots) if roots else None


def web_selector(root_pid: int | None) -> Selector:
    """The gunicorn master and its workers: the tree under ``root_pid`` (the
    master the harness started, or the one listening on ``--url``'s port), else
    every process whose command line names gunicorn."""
    if root_pid is not None:
        return lambda procs: descendants(root_pid, procs)
    return lambda procs: {p.pid for p in procs if "gunicorn" in cmdline(p.pid)}


def postgres_selector(database: str | None) -> Selector:
    """The postmaster, its background processes (WAL writer, checkpointer, …) and
    the client backends of ``database`` only (other databases' backends, such as
    a test suite running beside the harness, are left out). Every backend when
    ``database`` is None."""

    def select(procs: list[ProcInfo]) -> set[int]:
        chosen = set()
        for proc in procs:
            if proc.comm != "postgres":
                continue
            title = cmdline(proc.pid)
            ours = database is None or f" {database} " in f" {title} "
            if ours or not BACKEND_TITLE.search(title):
                chosen.add(proc.pid)
        return chosen

    return select


def redis_selector() -> Selector:
    return lambda procs: {p.pid for p in procs if p.comm.startswith("redis-server")}


def self_selector() -> Selector:
    own = os.getpid()
    return lambda procs: {own}


@dataclass
class GroupUsage:
    """One group's cost between two marks."""

    cpu_s: float = 0.0
    peak_rss_bytes: int = 0
    peak_pss_bytes: int = 0
    processes: int = 0
    # The busiest processes' CPU seconds, highest first: shows whether the
    # gunicorn workers share the load (a keep-alive connection stays with the
    # worker that accepted it).
    top_cpu_s: list[float] = field(default_factory=list)


@dataclass
class _Group:
    select: Selector
    ticks: dict[int, int] = field(default_factory=dict)  # every pid ever seen: last reading
    peak_rss: int = 0
    peak_pss: int = 0
    last_pss: int = 0
    live: set[int] = field(default_factory=set)


class Sampler:
    """Samples the groups in a background thread; ``mark()`` returns the usage since the last."""

    def __init__(self, selectors: dict[str, Selector]) -> None:
        self._groups = {name: _Group(select) for name, select in selectors.items()}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._marked: dict[str, dict[int, int]] = {}
        self._marked_busy = 0
        self._count = 0

    def start(self) -> None:
        self.sample()
        self._marked = self._snapshot()
        self._marked_busy = machine_busy_ticks()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            self.sample()

    def sample(self) -> None:
        procs = all_processes()
        by_pid = {p.pid: p for p in procs}
        read_pss_now = self._count % PSS_EVERY == 0
        self._count += 1
        with self._lock:
            for group in self._groups.values():
                live = group.select(procs)
                group.live = live
                rss = 0
                pss = 0
                for pid in live:
                    proc = by_pid.get(pid)
                    if proc is None:
                        continue
                    group.ticks[pid] = proc.cpu_ticks
                    rss += proc.rss_bytes
                    if read_pss_now:
                        pss += read_pss(pid)
                group.peak_rss = max(group.peak_rss, rss)
                if read_pss_now:
                    group.last_pss = pss
                group.peak_pss = max(group.peak_pss, group.last_pss)

    def _snapshot(self) -> dict[str, dict[int, int]]:
        return {name: dict(group.ticks) for name, group in self._groups.items()}

    def mark(self) -> dict[str, GroupUsage]:
        """Usage of every group since the previous mark (or ``start``); resets the peaks.

        One more entry, ``others``, is the CPU every other process on the machine
        used meanwhile (a test suite running beside the harness, say): the
        numbers of a phase where it is high were measured on a shared machine."""
        self.sample()
        busy = machine_busy_ticks()
        with self._lock:
            now = self._snapshot()
            usage = {}
            for name, group in self._groups.items():
                before = self._marked.get(name, {})
                deltas = [t - before.get(pid, 0) for pid, t in now[name].items()]
                usage[name] = GroupUsage(
                    cpu_s=sum(deltas) / CLOCK_TICKS,
                    peak_rss_bytes=group.peak_rss,
                    peak_pss_bytes=group.peak_pss,
                    processes=len(group.live),
                    top_cpu_s=[d / CLOCK_TICKS for d in sorted(deltas, reverse=True)[:4] if d],
                )
                group.peak_rss = 0
                group.peak_pss = group.last_pss
            self._marked = now
        ours = sum(u.cpu_s for u in usage.values())
        usage["others"] = GroupUsage(cpu_s=max((busy - self._marked_busy) / CLOCK_TICKS - ours, 0))
        self._marked_busy = busy
        return usage

    def pss_now(self, name: str) -> int:
        """The group's summed PSS right now (read fresh, not from the last sample)."""
        with self._lock:
            live = set(self._groups[name].live)
        return sum(read_pss(pid) for pid in live)


def machine_info() -> dict[str, str]:
    """What the numbers ran on: cores, CPU model, memory, kernel, Python."""
    cpuinfo = _read("/proc/cpuinfo") or ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    meminfo = _read("/proc/meminfo") or ""
    mem = re.search(r"^MemTotal:\s+(\d+) kB", meminfo, re.MULTILINE)
    return {
        "cores": str(os.cpu_count()),
        "cpu": model.group(1).strip() if model else platform.processor() or "unknown",
        "memory_gib": f"{int(mem.group(1)) / 1024 / 1024:.1f}" if mem else "unknown",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": _version(["psql", "--version"]),
        "redis": _version(["redis-server", "--version"]),
        "load_average_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def _version(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=5, check=False)
    except OSError:
        return "unknown"
    return done.stdout.strip() or "unknown"


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]
