"""One gunicorn instance started from the repository, the way production runs it."""

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from api.config import DEFAULTS

ROOT = Path(__file__).resolve().parents[2]
GUNICORN = [str(ROOT / ".venv/bin/gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"]
PRESENCE_SWEEPER = [str(ROOT / ".venv/bin/python"), "-m", "workers", "presence-sweeper"]
# Settings the test runner's own environment must not leak into a server.
SERVER_SETTINGS = {
    *DEFAULTS,
    "WEB_CONCURRENCY",
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
