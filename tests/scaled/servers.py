"""One gunicorn instance started from the repository, the way production runs it,
and haproxy to balance several."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from api.config import DEFAULTS
from tests.services import TEST_SETTINGS, apt_install, require

ROOT = Path(__file__).resolve().parents[2]
GUNICORN = [str(ROOT / ".venv/bin/gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"]
PRESENCE_SWEEPER = [str(ROOT / ".venv/bin/python"), "-m", "workers", "presence-sweeper"]
# Settings the test runner's own environment must not leak into a server.
SERVER_SETTINGS = {
    *DEFAULTS,
    "WEB_CONCURRENCY",
    "KEEPALIVE_S",
    "HOST",
    "PORT",
    "ACCESS_LOG",
    "PROMETHEUS_MULTIPROC_DIR",
}
READY_WAIT_S = 30  # booting imports the app in every worker; a few seconds on a busy 2-core box
STOP_WAIT_S = 10  # graceful shutdown first; past this the process group is killed
READINESS_PROBE_S = 0.1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_env(**settings: str) -> dict[str, str]:
    """The runner's environment (PATH and the like) without app settings, plus ``settings``."""
    env = {key: value for key, value in os.environ.items() if key not in SERVER_SETTINGS}
    return {**env, "HOST": "127.0.0.1", **settings}


@dataclass
class Instance:
    """A gunicorn master, its workers (one process group), and the log they write."""

    name: str
    url: str
    process: subprocess.Popen
    log_path: Path

    @classmethod
    def start(
        cls, name: str, log_dir: Path, command: list[str] = GUNICORN, **settings: str
    ) -> "Instance":
        port = settings.setdefault("PORT", str(free_port()))
        log_path = log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=server_env(**settings),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so teardown can end the workers
            )
        return cls(name, f"http://127.0.0.1:{port}", process, log_path)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + READY_WAIT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(
                    f"gunicorn {self.name} exited with {self.process.returncode} "
                    f"before it was ready:\n{self.log()}"
                )
            if self._answers_ready():
                return
            time.sleep(READINESS_PROBE_S)
        pytest.fail(
            f"gunicorn {self.name} did not answer GET /readyz with 200 "
            f"within {READY_WAIT_S} s:\n{self.log()}"
        )

    def _answers_ready(self) -> bool:
        try:
            with requests.get(f"{self.url}/readyz", timeout=2) as response:
                return response.status_code == 200
        except (requests.ConnectionError, requests.Timeout):
            return False

    def wait_for_exit(self, bound_s: float) -> int:
        """The exit status; fails (and stops the process) if it still runs after ``bound_s``."""
        try:
            return self.process.wait(bound_s)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"gunicorn {self.name} still runs after {bound_s} s:\n{self.log()}")

    def stop(self) -> None:
        """SIGTERM (graceful), then SIGKILL to the whole group past ``STOP_WAIT_S``."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(STOP_WAIT_S)


HAPROXY_CONFIG = """\
defaults
    mode http
    balance roundrobin
    timeout connect 2s
    # Above the longest long poll (LONG_POLL_CAP_S, 25 s): the balancer never cuts one.
    timeout client 60s
    timeout server 60s
    # A refused connection (a worker restarting) is tried again, on another server.
    retries 2
    option redispatch

frontend parley
    bind 127.0.0.1:{port}
    default_backend instances

backend instances
    option httpchk
    http-check send meth GET uri /healthz
    default-server check inter 200ms fall 2 rise 1
    # Which instance answered, so a test can tell that both take turns.
    http-response set-header {served_by_header} %s
{servers}
"""
SERVED_BY_HEADER = "X-Served-By"


@contextlib.contextmanager
def embedded_instance(
    name: str, sqlite_template: str, run_dir: Path, **settings: str
) -> Iterator[Instance]:
    """What ``make run`` serves (one gevent worker, a SQLite file, no Redis), on a
    copy of the suite's migrated database; ready for the block, stopped after it."""
    database = run_dir / "parley.db"
    shutil.copy(sqlite_template, database)
    instance = Instance.start(
        name,
        run_dir,
        DATABASE_URL=f"sqlite:///{database}",
        WEB_CONCURRENCY="1",
        **{key: str(value) for key, value in TEST_SETTINGS.items()},
        **settings,
    )
    try:
        instance.wait_until_ready()
        yield instance
    finally:
        instance.stop()


def haproxy_binary() -> str:
    """haproxy's path; installs Debian's package when it is missing (this needs root)."""
    found = _which_haproxy()
    if found is None and apt_install("haproxy"):
        found = _which_haproxy()
    if found is None:
        require("haproxy is not installed and `apt-get install -y haproxy` did not install it")
    return found


def _which_haproxy() -> str | None:
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")


@dataclass
class Balancer:
    """haproxy in front of instances: round robin, health checks on GET /healthz."""

    url: str
    process: subprocess.Popen
    log_path: Path

    @classmethod
    def start(cls, run_dir: Path, instances: list[Instance]) -> "Balancer":
        port = free_port()
        config_path = run_dir / "haproxy.cfg"
        config_path.write_text(haproxy_config(port, instances))
        log_path = run_dir / "haproxy.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [haproxy_binary(), "-f", str(config_path), "-db"],  # -db: in the foreground
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        balancer = cls(f"http://127.0.0.1:{port}", process, log_path)
        try:
            balancer.wait_until_serving({instance.name for instance in instances})
        except BaseException:  # pytest.fail too: stop it before giving up
            balancer.stop()
            raise
        return balancer

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until_serving(self, names: set[str]) -> None:
        """Return once each of ``names`` has answered through the balancer."""
        deadline = time.monotonic() + READY_WAIT_S
        seen: set[str] = set()
        while not names <= seen:
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"haproxy never served {names - seen}:\n{self.log()}")
            seen.add(self._served_by())
            time.sleep(READINESS_PROBE_S)

    def _served_by(self) -> str:
        try:
            with requests.get(f"{self.url}/healthz", timeout=2) as response:
                return response.headers.get(SERVED_BY_HEADER, "") if response.ok else ""
        except (requests.ConnectionError, requests.Timeout):
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(STOP_WAIT_S)


def haproxy_config(port: int, instances: list[Instance]) -> str:
    servers = "\n".join(
        f"    server {instance.name} {instance.url.removeprefix('http://')}"
        for instance in instances
    )
    return HAPROXY_CONFIG.format(port=port, servers=servers, served_by_header=SERVED_BY_HEADER)
