"""Prometheus metrics, correct across gunicorn's worker processes.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``make run`` sets it), each process
writes its samples to files there and ``/metrics`` sums them; without it, the
process's own registry is served.
"""

import os
import time

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
)
from sqlalchemy import Engine, event

# Buckets for fast paths: a wake-up or a query should take about a millisecond.
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

POLLS = Counter("parley_polls_total", "Inbox polls answered", ["mode", "outcome"])
SENDS = Counter("parley_messages_sent_total", "Messages stored (replays not counted)")
ERRORS = Counter("parley_errors_total", "Error answers, by error code", ["code"])
WAITING = Gauge(
    "parley_long_polls_waiting", "Long polls waiting right now", multiprocess_mode="livesum"
)
ADMISSION_WAITING = Gauge(
    "parley_requests_waiting_for_a_turn",
    "API requests queued for a turn to work right now (see ADMITTED_REQUESTS)",
    multiprocess_mode="livesum",
)
WAKE_UP_SECONDS = Histogram(
    "parley_wake_up_seconds",
    "From an entry's commit to the answer of the long poll it woke",
    buckets=FAST_BUCKETS,
)
DB_QUERY_SECONDS = Histogram(
    "parley_db_query_seconds", "Database statement round trips", buckets=FAST_BUCKETS
)
REDIS_CALL_SECONDS = Histogram(
    "parley_redis_call_seconds",
    "Redis round trips, by operation",
    ["operation"],
    buckets=FAST_BUCKETS,
)


def redis_timer(operation: str):
    """Decorate a method that makes one Redis round trip, to time it."""
    return REDIS_CALL_SECONDS.labels(operation).time()


def time_queries(engine: Engine) -> None:
    @event.listens_for(engine, "before_cursor_execute")
    def _started(conn, cursor, statement, parameters, context, executemany):
        conn.info.setdefault("parley_query_started", []).append(time.perf_counter())

    @event.listens_for(engine, "after_cursor_execute")
    def _finished(conn, cursor, statement, parameters, context, executemany):
        DB_QUERY_SECONDS.observe(time.perf_counter() - conn.info["parley_query_started"].pop())


def registry() -> CollectorRegistry:
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    collected = CollectorRegistry()
    multiprocess.MultiProcessCollector(collected)
    return collected
