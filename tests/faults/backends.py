"""Throwaway Redis and PostgreSQL servers that a fault test may stop, kill or restart.

The machine's shared servers (5432, 6379) are never touched: each of these runs
on a free port with its data in a temporary directory, and is gone after the tests.
"""

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis

from tests.scaled.servers import free_port
from tests.services import require

READY_WAIT_S = 30  # initdb and a first start take a few seconds on a busy 2-core box
STOP_WAIT_S = 10
PROBE_S = 0.05
DATABASE = "parley_faults"


class Restartable:
    """A server a test can take down for a while."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """Stopped for the block, then started again on the same port (even on failure)."""
        self.stop()
        try:
            yield
        finally:
            self.start()


@dataclass
class ThrowawayRedis(Restartable):
    """A redis-server without persistence: a restart empties it, as a crash would."""

    port: int
    log_path: Path
    process: subprocess.Popen | None = None

    @classmethod
    def in_directory(cls, directory: Path) -> "ThrowawayRedis":
        return cls(free_port(), directory / "redis.log")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if shutil.which("redis-server") is None:
            require("redis-server is not installed: the fault tests need their own Redis")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no"),  # a restart starts empty
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_until_it_answers()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(STOP_WAIT_S)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def _wait_until_it_answers(self) -> None:
        deadline = time.monotonic() + READY_WAIT_S
        with self.client() as client:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    log = self.log_path.read_text()
                    assert self.process.poll() is None, f"Redis exited:\n{log}"
                    assert time.monotonic() < deadline, f"Redis never answered:\n{log}"
                    time.sleep(PROBE_S)


def as_postgres_user(command: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: drop to the ``postgres`` user if we are root."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@dataclass
class ThrowawayPostgres(Restartable):
    """A PostgreSQL cluster of its own, with the project's schema migrated in."""

    data_dir: Path
    port: int

    @classmethod
    def in_new_directory(cls) -> "ThrowawayPostgres":
        # Not under pytest's tmp_path: its parents are private to root, and the
        # server runs as ``postgres``.
        data_dir = Path(tempfile.mkdtemp(prefix="parley-faults-pg-"))
        if os.geteuid() == 0:
            shutil.chown(data_dir, "postgres", "postgres")
        return cls(data_dir, free_port())

    def initialize(self) -> None:
        """Make the cluster, start it, and create the empty database."""
        self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust")
        self.start()
        with psycopg.connect(self.libpq_url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def libpq_url(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1"
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-o", options,
            "-l", str(self.data_dir / "server.log"), "-w", "-t", str(READY_WAIT_S), "start",
        )  # fmt: skip

    def stop(self) -> None:
        """Fast shutdown: open transactions are rolled back and clients cut off."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(AssertionError):  # already stopped
            self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def _run(self, *command: str) -> None:
        if shutil.which(command[0]) is None:
            require(f"{command[0]} is not installed: the fault tests need their own PostgreSQL")
        done = subprocess.run(
            as_postgres_user(list(command)),
            capture_output=True,
            text=True,
            timeout=READY_WAIT_S + STOP_WAIT_S,
        )
        assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}"
