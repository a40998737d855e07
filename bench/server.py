"""Starting and stopping the Parley under test, the way production runs it.

The scaled mode: gunicorn (gevent workers) from the repository root, a fresh
PostgreSQL database migrated with Alembic, and Redis under a prefix of its own.
Everything started here is stopped by ``ScaledServer.stop`` (the process group
of gunicorn is killed if it does not stop gracefully), which the CLI calls in a
``finally`` so that Ctrl-C and errors clean up too.
"""

import contextlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.measure import (
    Sampler,
    listening_root,
    postgres_selector,
    redis_selector,
    repo_root,
    self_selector,
    web_selector,
)

DATABASE = "parley_bench"
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"
READY_WAIT_S = 60  # every worker imports the app; slow on a busy 2-core machine
STOP_WAIT_S = 15  # gunicorn answers held long polls on SIGTERM, then exits
# Settings of the harness's own environment that must not leak into the server.
LEAKY_SETTINGS = ("DATABASE_URL", "REDIS_URL", "REDIS_PREFIX", "PORT", "HOST", "ACCESS_LOG")


class ServerError(RuntimeError):
    """The server could not be started (its log says why)."""


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one (inherited by the server we
    start): every simulated device holds a connection, and so does the server."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_ready(url: str, bound_s: float, process: subprocess.Popen | None = None) -> None:
    """Return once ``GET /readyz`` answers 200; ServerError past ``bound_s``."""
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServerError(f"gunicorn exited with {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise ServerError(f"{url}/readyz did not answer 200 within {bound_s:.0f} s")


@dataclass
class ExternalServer:
    """A Parley someone else runs (``--url``): nothing to start or stop."""

    url: str
    database: str | None = None  # for /proc: PostgreSQL backends of this database only
    web_pid: int | None = None
    redis_prefix: str | None = None

    def start(self) -> None:
        """Check it answers, and find its gunicorn master (for /proc) if it runs here."""
        wait_ready(self.url, 10)
        port = urllib.parse.urlsplit(self.url).port or 80
        self.web_pid = listening_root(port)

    def stop(self) -> None:
        pass

    def describe(self) -> dict[str, str]:
        found = f"pid {self.web_pid} and its children" if self.web_pid else "not found here"
        return {"mode": "external", "url": self.url, "web processes": found}


@dataclass
class ScaledServer:
    """gunicorn + PostgreSQL (database ``parley_bench``, recreated) + Redis (own prefix)."""

    workers: int = 2
    # 0: a free one, found as it starts. Found earlier (the server for the empty
    # polls was made when the run began), the port could be some client
    # connection's by then: they come from the same range.
    port: int = 0
    database: str = DATABASE
    redis_prefix: str = field(default_factory=lambda: f"parley-bench-{uuid.uuid4().hex[:10]}:")
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    run_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="parley-bench-")))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def web_pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def database_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.database}"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "gunicorn.log"

    def env(self) -> dict[str, str]:
        metrics_dir = self.run_dir / "metrics"
        metrics_dir.mkdir(exist_ok=True)
        base = {k: v for k, v in os.environ.items() if k not in LEAKY_SETTINGS}
        return {
            **base,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "WEB_CONCURRENCY": str(self.workers),
            "DATABASE_URL": self.database_url,
            "REDIS_URL": REDIS_URL,
            "REDIS_PREFIX": self.redis_prefix,
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            # One address sends everything here: per-address limits would refuse it.
            "RATE_LIMITS_ENABLED": "false",
            # Sign-ups are set-up, not the measured path: cheap hashes.
            "ARGON2_TIME_COST": "1",
            "ARGON2_MEMORY_KIB": "1024",
            **self.extra_env,
        }

    def start(self) -> None:
        self.recreate_database()
        root = repo_root()
        self.port = self.port or free_port()
        env = self.env()
        subprocess.run(
            [str(root / ".venv/bin/alembic"), "upgrade", "head"],
            cwd=root,
            env=env,
            check=True,
            capture_output=True,
        )
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(root / ".venv/bin/gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
                cwd=root,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends the workers too
            )
        try:
            wait_ready(self.url, READY_WAIT_S, self.process)
        except ServerError as exc:
            raise ServerError(f"{exc}\n--- {self.log_path} ---\n{self.log_tail()}") from exc

    def recreate_database(self) -> None:
        import psycopg

        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.database}"')

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM to gunicorn (graceful), SIGKILL to its group past ``STOP_WAIT_S``;
        then remove the Redis keys of this run's prefix. The database stays for
        inspection until the next run recreates it."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(STOP_WAIT_S)
        self._forget_redis_keys()

    def _forget_redis_keys(self) -> None:
        import redis

        with contextlib.suppress(redis.RedisError):
            client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
            keys = list(client.scan_iter(match=f"{self.redis_prefix}*", count=1000))
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start : start + 1000])
            client.close()

    def describe(self) -> dict[str, str]:
        return {
            "mode": "scaled (started by the harness)",
            "url": self.url,
            "workers": str(self.workers),
            "database": self.database_url,
            "redis": f"{REDIS_URL} prefix {self.redis_prefix}",
            "log": str(self.log_path),
        }


Server = ScaledServer | ExternalServer


@contextlib.contextmanager
def running(server: "ScaledServer | ExternalServer") -> Iterator[Sampler]:
    """Start ``server`` and a sampler of its processes' CPU and memory; stop both
    after the block, on errors and Ctrl-C too."""
    sampler: Sampler | None = None
    try:
        print(f"starting: {server.describe()['mode']} …", file=sys.stderr)
        server.start()
        sampler = Sampler(
            {
                "web": web_selector(server.web_pid),
                "postgres": postgres_selector(server.database),
                "redis": redis_selector(),
                "client": self_selector(),
            }
        )
        sampler.start()
        yield sampler
    finally:
        if sampler is not None:
            sampler.stop()
        server.stop()
