"""Simulated devices: one aiohttp session for thousands of them, and the poll loops.

Every device is a log-in of its own (its own token, cursor and inbox). The
loops follow the client loop documented in the README:

* poll with ``after=<cursor>`` (which confirms everything up to it);
* on an answer with ``has_more``, poll again at once; a long poll also polls
  again at once after every answer, a short poll waits for its next tick (every
  ``I`` seconds: re-polling at once after entries would only add an empty poll
  per delivery);
* on an error (any non-2xx, or no answer), wait with doubling backoff from 1 s
  to 60 s with jitter, honouring ``Retry-After``.

Traffic is counted as it goes: requests by kind and status, exceptions, and
bytes on the wire (request line, headers and body each way, as HTTP/1.1 sends
them; TCP/IP overhead is not counted).
"""

import asyncio
import contextlib
import json
import random
from collections import Counter, deque
from collections.abc import Awaitable
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

import aiohttp

from bench.ledger import Ledger

T = TypeVar("T")

PASSWORD = "bench horse battery staple"
POLL_GRACE_S = 15.0  # a long poll's client-side timeout is its wait plus this
REQUEST_TIMEOUT_S = 30.0
BACKOFF_S = (1.0, 60.0)  # the README's client loop: doubling from 1 s to 60 s
SEND_ATTEMPTS = 6
SUPERSEDE_TIMEOUT = "0.01"  # a long poll this short replaces a held one and returns at once
HISTORY_POLLS = 200  # enough to cover a phase and its drain at one poll a second


@dataclass
class Traffic:
    """What the clients sent and got, counted as it happens."""

    requests: int = 0
    polls: int = 0
    empty_polls: int = 0
    sends: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    status: Counter = field(default_factory=Counter)
    exceptions: Counter = field(default_factory=Counter)

    def copy(self) -> "Traffic":
        return replace(self, status=Counter(self.status), exceptions=Counter(self.exceptions))

    def since(self, earlier: "Traffic") -> "Traffic":
        """What was counted after ``earlier`` (a copy taken then)."""
        return Traffic(
            **{f.name: getattr(self, f.name) - getattr(earlier, f.name) for f in fields(self)}
        )

    @property
    def errors(self) -> int:
        bad = sum(n for code, n in self.status.items() if not 200 <= code < 300)
        return bad + sum(self.exceptions.values())


@dataclass
class Answer:
    status: int  # 0: no answer (connection error or timeout)
    body: Any
    arrived_at: float
    retry_after: float | None = None
    error: str | None = None


class Api:
    """JSON over one aiohttp session; every call counted into ``self.traffic``."""

    def __init__(self, base_url: str, connections: int) -> None:
        self.base_url = base_url.rstrip("/")
        self.traffic = Traffic()
        trace = aiohttp.TraceConfig()
        trace.on_request_headers_sent.append(self._count_request_head)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections, keepalive_timeout=60),
            trace_configs=[trace],
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        self.loop = asyncio.get_running_loop()

    async def close(self) -> None:
        await self.session.close()

    async def _count_request_head(self, session, context, params) -> None:
        line = f"{params.method} {params.url.raw_path_qs} HTTP/1.1\r\n"
        head = sum(len(k) + len(v) + 4 for k, v in params.headers.items()) + 2
        self.traffic.bytes_sent += len(line) + head

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: Any = None,
        params: dict[str, str] | None = None,
        timeout: float = REQUEST_TIMEOUT_S,
    ) -> Answer:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        traffic = self.traffic
        traffic.requests += 1
        traffic.bytes_sent += len(data or b"")
        try:
            async with self.session.request(
                method,
                self.base_url + path,
                params=params,
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                raw = await response.read()
                arrived = self.loop.time()
                traffic.bytes_received += _response_size(response, raw)
                traffic.status[response.status] += 1
                return Answer(
                    response.status,
                    _json_or_none(raw),
                    arrived,
                    retry_after=_seconds(response.headers.get("Retry-After")),
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            traffic.exceptions[type(exc).__name__] += 1
            return Answer(0, None, self.loop.time(), error=repr(exc))


def _response_size(response: aiohttp.ClientResponse, raw: bytes) -> int:
    version = response.version
    line = f"HTTP/{version.major}.{version.minor} {response.status} {response.reason}\r\n"
    head = sum(len(k) + len(v) + 4 for k, v in response.raw_headers) + 2
    return len(line) + head + len(raw)


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


@dataclass
class Device:
    """One simulated log-in: a user's token, its inbox cursor, and what the server confirmed."""

    index: int
    username: str
    user_id: int
    device_id: int
    token: str
    cursor: int = 0  # the last seq processed: the next poll's ``after``
    confirmed: int = 0  # the last ``after`` the server answered with 200
    holding: bool = False  # a long poll is in flight
    # The last polls, for the report when one of this device's deliveries is lost:
    # (sent at, after, timeout, status, entries, first seq, last seq, answered cursor).
    history: deque = field(default_factory=lambda: deque(maxlen=HISTORY_POLLS))


class Backoff:
    """Doubling waits with jitter (the README's client loop); reset after a success."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._next = BACKOFF_S[0]

    def reset(self) -> None:
        self._next = BACKOFF_S[0]

    def delay(self, retry_after: float | None) -> float:
        pause = self._next * (0.5 + self._rng.random())
        self._next = min(self._next * 2, BACKOFF_S[1])
        return max(pause, retry_after or 0.0)


async def after(seconds: float, work: Awaitable[T]) -> T:
    """``work``, begun ``seconds`` from now: spreads the first polls of thousands of
    devices, as real clients coming online over a while would."""
    await asyncio.sleep(seconds)
    return await work


async def sleep_or_stop(seconds: float, stop: asyncio.Event) -> None:
    if seconds > 0 and not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)


# Set-up: through the API, like any client.


class SetupError(RuntimeError):
    """A set-up request kept failing: the run cannot start."""


async def _must(api: Api, method: str, path: str, ok: tuple[int, ...], **kwargs: Any) -> Answer:
    """A set-up call, retried on server errors and lost answers."""
    answer = Answer(0, None, 0.0)
    for attempt in range(5):
        answer = await api.call(method, path, **kwargs)
        if answer.status in ok:
            return answer
        if answer.status and answer.status < 500 and answer.status != 429:
            break
        await asyncio.sleep(0.5 * 2**attempt)
    raise SetupError(f"{method} {path} answered {answer.status}: {answer.body or answer.error}")


async def sign_up(api: Api, index: int, username: str) -> Device:
    # 409: a retried sign-up whose first answer was lost already made the user.
    await _must(
        api, "POST", "/v1/users", (201, 409), body={"username": username, "password": PASSWORD}
    )
    return await log_in(api, index, username)


async def log_in(api: Api, index: int, username: str) -> Device:
    """One more device of the user: a log-in of its own."""
    answer = await _must(
        api,
        "POST",
        "/v1/sessions",
        (201,),
        body={"username": username, "password": PASSWORD, "device_name": "bench"},
    )
    body = answer.body
    return Device(index, username, body["user"]["id"], body["device_id"], body["token"])


async def create_conversation(api: Api, owner: Device, kind: str, members: list[Device]) -> int:
    others = [m.user_id for m in members if m.index != owner.index]
    body: dict[str, Any] = {"kind": kind, "member_ids": others}
    if kind == "group":
        body["title"] = f"bench group of {owner.username}"
    answer = await _must(api, "POST", "/v1/conversations", (200, 201), token=owner.token, body=body)
    return answer.body["id"]


# Polling and sending.


async def poll_once(api: Api, device: Device, ledger: Ledger, timeout: str) -> Answer:
    """One poll from the device's cursor; records what it brings and moves the cursor."""
    after = device.cursor
    confirmed_before = device.confirmed
    sent_at = api.loop.time()
    answer = await api.call(
        "GET",
        "/v1/inbox",
        token=device.token,
        params={"after": str(after), "timeout": timeout},
        timeout=float(timeout) + POLL_GRACE_S,
    )
    api.traffic.polls += 1
    entries: list[dict[str, Any]] = []
    cursor = None
    if answer.status == 200 and isinstance(answer.body, dict):
        device.confirmed = max(device.confirmed, after)
        entries = answer.body.get("entries", [])
        if not entries:
            api.traffic.empty_polls += 1
        cursor = int(answer.body.get("cursor", after))
        ledger.receive(device.index, after, confirmed_before, entries, cursor, answer.arrived_at)
        device.cursor = max(device.cursor, cursor)
    device.history.append(
        (
            round(sent_at, 3),
            after,
            timeout,
            answer.status or answer.error,
            len(entries),
            entries[0]["seq"] if entries else None,
            entries[-1]["seq"] if entries else None,
            cursor,
        )
    )
    return answer


async def short_poll_loop(
    api: Api,
    device: Device,
    ledger: Ledger,
    interval: float,
    stop: asyncio.Event,
    rng: random.Random,
) -> None:
    """Poll every ``interval`` seconds (at once again on ``has_more``), from a
    random phase so that devices do not poll in step."""
    loop = asyncio.get_running_loop()
    backoff = Backoff(rng)
    next_at = loop.time() + rng.uniform(0, interval)
    while not stop.is_set():
        await sleep_or_stop(next_at - loop.time(), stop)
        if stop.is_set():
            return
        started = loop.time()
        answer = await poll_once(api, device, ledger, "0")
        if answer.status != 200:
            next_at = loop.time() + backoff.delay(answer.retry_after)
            continue
        backoff.reset()
        next_at = loop.time() if answer.body.get("has_more") else started + interval


async def long_poll_loop(
    api: Api,
    device: Device,
    ledger: Ledger,
    timeout: float,
    stop: asyncio.Event,
    rng: random.Random,
) -> None:
    """Hold a poll of up to ``timeout`` seconds; poll again at once after every answer."""
    backoff = Backoff(rng)
    wait = f"{timeout:g}"
    while not stop.is_set():
        device.holding = True
        try:
            answer = await poll_once(api, device, ledger, wait)
        finally:
            device.holding = False
        if answer.status != 200:
            await sleep_or_stop(backoff.delay(answer.retry_after), stop)
            continue
        backoff.reset()


async def supersede(api: Api, device: Device, ledger: Ledger) -> None:
    """End the device's held long poll the documented way: a newer poll of the
    same device ends the older one with an empty 200 (this one returns at once)."""
    await poll_once(api, device, ledger, SUPERSEDE_TIMEOUT)


async def send(
    api: Api,
    sender: Device,
    conversation_id: int,
    text: str,
    key: str,
    ledger: Ledger,
    rng: random.Random,
) -> None:
    """Send one planned message, retrying with the same ``client_msg_id`` (so a
    retry can never make a second message) until it is stored."""
    loop = asyncio.get_running_loop()
    backoff = Backoff(rng)
    ledger.send_started(key, loop.time())
    for _ in range(SEND_ATTEMPTS):
        api.traffic.sends += 1
        answer = await api.call(
            "POST",
            f"/v1/conversations/{conversation_id}/messages",
            token=sender.token,
            body={"text": text, "client_msg_id": key},
        )
        if answer.status in (200, 201) and isinstance(answer.body, dict):
            ledger.send_answered(key, answer.arrived_at, answer.body["id"], answer.status == 200)
            return
        if answer.status and answer.status < 500 and answer.status not in (408, 429):
            break  # the request itself is wrong: a retry answers the same
        await asyncio.sleep(backoff.delay(answer.retry_after))
    ledger.send_failed(key)
