"""Many long polls held at once, from several client processes.

One process may open only as many files as its limit allows (20,000 on the
development machine, where it cannot be raised), and every held poll is an open
connection, so the holders are split over processes. Each process logs its
devices in (users of ``DEVICES_PER_USER`` devices each, so that set-up is mostly
cheap log-ins), then holds one long poll per device until the parent says to
let go, and ends them the documented way: a newer poll of the same device.
Like real clients, the devices come online over a ramp, poll again after each
answer and back off after an error.

    parent                         each holder process
      │  start ──────────────────▶  sign up, log in its devices
      │  ◀──────────────── ready
      │  hold ───────────────────▶  one long poll per device
      │  (counts the server's gauge, reads memory)
      │  release ────────────────▶  supersede every poll, wait for the answers
      │  ◀────── done (errors)
"""

import asyncio
import multiprocessing
import random
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from bench import clients
from bench.clients import Api
from bench.ledger import Ledger

DEVICES_PER_USER = 100
SETUP_CONCURRENCY = 32
CONNECTIONS_SPARE = 50  # for set-up and the superseding polls, beyond one per device
HELD_POLL_TIMEOUT_S = 25.0


@dataclass
class HolderReport:
    devices: int
    errors: int
    status: dict[int, int] = field(default_factory=dict)
    exceptions: dict[str, int] = field(default_factory=dict)


async def _bounded(limit: asyncio.Semaphore, work):
    async with limit:
        return await work


async def _hold(url: str, tag: str, devices: int, ramp_s: float, pipe: Connection) -> None:
    api = Api(url, devices + CONNECTIONS_SPARE)
    limit = asyncio.Semaphore(SETUP_CONCURRENCY)
    users = range(0, devices, DEVICES_PER_USER)
    firsts = await asyncio.gather(
        *(_bounded(limit, clients.sign_up(api, i, f"h{tag}u{i}")) for i in users)
    )
    others = await asyncio.gather(
        *(
            _bounded(limit, clients.log_in(api, i, first.username))
            for first in firsts
            for i in range(first.index + 1, min(first.index + DEVICES_PER_USER, devices))
        )
    )
    held = [*firsts, *others]
    ledger = Ledger()
    pipe.send("ready")
    await asyncio.to_thread(pipe.recv)  # "hold"
    api.traffic = clients.Traffic()
    stop = asyncio.Event()
    loops = [
        asyncio.create_task(
            clients.after(
                ramp_s * n / len(held),
                clients.long_poll_loop(
                    api, d, ledger, HELD_POLL_TIMEOUT_S, stop, random.Random(f"{tag}-{n}")
                ),
            )
        )
        for n, d in enumerate(held)
    ]
    await asyncio.to_thread(pipe.recv)  # "release"
    stop.set()
    # As many at a time as there are spare connections: queued for one, a
    # request's time runs out before it is even sent (the errors were ours).
    limit = asyncio.Semaphore(CONNECTIONS_SPARE)
    await asyncio.gather(
        *(_bounded(limit, clients.supersede(api, d, ledger)) for d in held if d.holding)
    )
    await asyncio.wait(loops, timeout=30)
    traffic = api.traffic
    pipe.send(
        HolderReport(len(held), traffic.errors, dict(traffic.status), dict(traffic.exceptions))
    )
    await api.close()


def _holder_main(url: str, tag: str, devices: int, ramp_s: float, pipe: Connection) -> None:
    asyncio.run(_hold(url, tag, devices, ramp_s, pipe))


class Holders:
    """``devices`` long polls spread over ``processes`` client processes."""

    def __init__(self, url: str, tag: str, devices: int, processes: int, ramp_s: float) -> None:
        shares = [devices // processes + (n < devices % processes) for n in range(processes)]
        context = multiprocessing.get_context("spawn")  # a fresh interpreter, no asyncio state
        self._pipes: list[Connection] = []
        self._processes = []
        for n, share in enumerate(shares):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_holder_main,
                args=(url, f"{tag}p{n}", share, ramp_s, theirs),
                daemon=True,
            )
            self._pipes.append(ours)
            self._processes.append(process)

    def _answers(self) -> list:
        try:
            return [pipe.recv() for pipe in self._pipes]
        except EOFError as exc:  # a holder died: its set-up failed (its traceback is above)
            raise clients.SetupError("a holder process died") from exc

    def set_up(self) -> None:
        """Start the holders; return once every device is logged in."""
        for process in self._processes:
            process.start()
        self._answers()

    def hold(self) -> None:
        for pipe in self._pipes:
            pipe.send("hold")

    def release(self) -> list[HolderReport]:
        for pipe in self._pipes:
            pipe.send("release")
        reports = self._answers()
        for process in self._processes:
            process.join(10)
        return reports

    def stop(self) -> None:
        for process in self._processes:
            if process.is_alive():
                process.kill()
