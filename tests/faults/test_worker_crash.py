"""kill -9 of a gunicorn worker while sends and long polls are in flight: clients
retry sends with the same client_msg_id and re-poll, and nothing is lost or doubled."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.faults.raw_http import address_of, raw_long_poll
from tests.faults.traffic import (
    SOAK_SCALE,
    Fault,
    Progress,
    check_delivery,
    figures,
    plan_sends,
    run_traffic,
)
from tests.figures import show
from tests.scaled.client import ApiClient, sign_up, wait_for_waiting_polls, waiting_polls
from tests.scaled.conftest import WORKERS_PER_INSTANCE
from tests.scaled.servers import Instance
from tests.scaled.test_delivery import start_chats

pytestmark = pytest.mark.scaled

PEOPLE = 8
SENDER_THREADS = 6
SENDS_PER_THREAD = 25 * SOAK_SCALE
RECEIVER_POLL_S = 5
KILL_AT = (0.25, 0.5)  # share of the sends done when each instance loses a worker
RESPAWN_WAIT_S = 30
LONG_POLL_S = 20
TCP_ESTABLISHED = "01"


def test_killing_workers_mid_stream_loses_and_doubles_nothing(topology):
    with ApiClient(topology.balancer.url) as client:
        people = [sign_up(client, f"crash{i}") for i in range(PEOPLE)]
        chats = start_chats(client, people)
    plans = plan_sends(chats, topology.urls, SENDER_THREADS, SENDS_PER_THREAD)
    # Receivers long-poll through the balancer and straight into each instance.
    receivers = [(p, topology.urls[i % len(topology.urls)]) for i, p in enumerate(people)]

    killed: list[tuple[Instance, int]] = []

    def kill_a_worker_of_each_instance(progress: Progress) -> list[Fault]:
        for instance, share in zip(topology.instances, KILL_AT, strict=True):
            progress.wait_for(share)
            killed.append((instance, kill_busiest_worker(instance)))
        now = time.monotonic()  # the kills are instants: started == ended
        return [Fault(f"kill -9 worker {pid} of {i.name}", now, now) for i, pid in killed]

    try:
        outcome = run_traffic(
            topology.balancer.url, receivers, plans, RECEIVER_POLL_S, kill_a_worker_of_each_instance
        )
    finally:  # the next tests need whole instances
        for instance, victim in killed:
            wait_for_replacement(instance, victim)
    counted = figures(outcome, chats)
    cut_off = sum(attempt.status is None for attempt in outcome.attempts())
    show("worker kill -9", {**counted, "requests cut off": cut_off})

    assert cut_off > 0, "the killed workers had nothing in flight: the test proved nothing"
    assert {a.status for a in outcome.attempts()} <= {200, 201, 503, None}
    check_delivery(outcome, chats, counted, topology.balancer.url)


def test_a_killed_worker_leaves_no_phantom_long_poll_in_the_metrics(topology):
    """/metrics sums every worker's gauge files; a dead worker's must go with it."""
    a, _ = topology.instances
    with ApiClient(a.url) as through_a:
        ben = sign_up(through_a, "ben")
        before = waiting_polls(through_a)
        with socket.create_connection(address_of(a.url)) as held:
            held.sendall(raw_long_poll(a.url, ben, LONG_POLL_S))
            wait_for_waiting_polls(a.url, before + 1)
            connection = established_connections(a, client_port=held.getsockname()[1])
            victim = worker_holding(a, connection)
            os.kill(victim, signal.SIGKILL)
            wait_for_replacement(a, victim)
        after = waiting_polls(through_a)

    assert after == before, f"/metrics counts {after - before} long polls of a dead worker"


def kill_busiest_worker(instance: Instance) -> int:
    """kill -9 the worker holding the most client connections (so that some sends
    and long polls are surely in flight on it); returns its pid."""
    victim = worker_holding(instance, established_connections(instance))
    os.kill(victim, signal.SIGKILL)
    return victim


def worker_holding(instance: Instance, connections: set[str]) -> int:
    """The worker that has the most of these connections (socket inodes) open."""
    return max(worker_pids(instance), key=lambda pid: len(socket_inodes(pid) & connections))


def worker_pids(instance: Instance) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-P", str(instance.process.pid)], capture_output=True, text=True, check=False
    )
    return [int(pid) for pid in found.stdout.split()]


def wait_for_replacement(instance: Instance, victim: int) -> None:
    """Wait until the master has reaped the killed worker and started another."""
    deadline = time.monotonic() + RESPAWN_WAIT_S
    while victim in (pids := worker_pids(instance)) or len(pids) < WORKERS_PER_INSTANCE:
        assert time.monotonic() < deadline, f"{instance.name} never replaced worker {victim}"
        time.sleep(0.1)


def established_connections(instance: Instance, client_port: int | None = None) -> set[str]:
    """Socket inodes of the instance's end of its established TCP connections
    (only the one from ``client_port``, if given)."""
    port = address_of(instance.url)[1]
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port, remote_port = (int(f.rsplit(":", 1)[1], 16) for f in fields[1:3])
        ours = local_port == port and client_port in (None, remote_port)
        if ours and fields[3] == TCP_ESTABLISHED:
            inodes.add(fields[9])
    return inodes


def socket_inodes(pid: int) -> set[str]:
    """Inodes of the sockets process ``pid`` has open."""
    links = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            links.append(os.readlink(fd))
        except OSError:  # closed meanwhile
            continue
    return {link[len("socket:[") : -1] for link in links if link.startswith("socket:[")}
