"""Prometheus metrics, correct across gunicorn's worker processes.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``make run`` sets it), each process
writes its samples to files there and ``/metrics`` sums them; without it, the
process's own registry is served.
"""

import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, multiprocess

POLLS = Counter("parley_polls_total", "Inbox polls answered", ["mode", "outcome"])
SENDS = Counter("parley_messages_sent_total", "Messages stored (replays not counted)")
WAITING = Gauge(
    "parley_long_polls_waiting", "Long polls waiting right now", multiprocess_mode="livesum"
)


def registry() -> CollectorRegistry:
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    collected = CollectorRegistry()
    multiprocess.MultiProcessCollector(collected)
    return collected
