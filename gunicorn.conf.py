"""gunicorn settings: gevent workers, sized by the environment.

Never ``preload_app``: the app (and psycopg) must be imported in each worker
after gevent has patched it, or database calls block the whole worker.
"""

import gc
import os

from api.config import check_process_model

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
# Each waiting long poll is one connection; thousands per process is the point.
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "10000"))
# Above the longest long poll (25 s by default) so gunicorn never kills one.
timeout = 60
# Long polls still open when a worker stops get this long to answer.
graceful_timeout = 30
# Longer than the idle timeout of the load balancer in front (60 s on AWS ELB),
# so the balancer, not gunicorn, closes idle keep-alive connections.
keepalive = int(os.environ.get("KEEPALIVE_S", "75"))
if keepalive < 1:  # 0 would close every connection before its first request
    raise ValueError(f"KEEPALIVE_S must be at least 1 second, not {keepalive}")


# gevent's WSGI server under gunicorn's gevent worker, made stricter: see the module.
worker_class = "api.serving.PyWSGIWorker"
preload_app = False
# gunicorn's runtime control socket lives at one path per user: several
# instances on one host (tests, blue/green) would fight over it, and we do not use it.
control_socket_disable = True
accesslog = os.environ.get("ACCESS_LOG") or None


def on_starting(server) -> None:
    check_process_model(server.cfg.workers, os.environ.get("REDIS_URL", ""))


def post_worker_init(worker) -> None:
    # Imported in the worker, after gevent's monkey-patching.
    from api.lifecycle import close_connections_when_shutting_down, end_long_polls_on_sigterm

    end_long_polls_on_sigterm(worker.wsgi)
    worker.wsgi = close_connections_when_shutting_down(worker.wsgi)
    _collect_garbage_seldom()


def worker_exit(server, worker) -> None:
    app = worker.app.callable  # None if the worker never loaded it
    if app is not None:
        from api.lifecycle import store_what_is_behind

        store_what_is_behind(app)


# Young-generation collections between two full ones (CPython's default: 10).
FULL_COLLECTION_EVERY = 1000


def _collect_garbage_seldom() -> None:
    """A full garbage collection stops the worker, and every poll it holds: with
    thousands held it scans half a million objects, 0.3 to 0.9 s on a small VM,
    and such pauses showed in the long tail of delivery latency. The app leaves
    little cyclic garbage (with 5,000 polls held, a full collection a minute
    found 150 to 250 objects), so full collections run a hundredth as often
    (about every ten minutes under that load; the young generations as usual),
    and never scan what the worker imported."""
    gc.collect()
    gc.freeze()
    young, middle, _full = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


def child_exit(server, worker) -> None:
    """Drop a dead worker's live gauges (waiting polls) from the shared metrics."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
