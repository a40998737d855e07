"""The shapes of traffic compared: who talks to whom, and the plan of sends.

A workload is built once from a seed: its devices, its conversations and a
plan (every send with its time, sender, conversation and text). Every strategy
replays the same plan, so they are compared on the same message stream.

* ``watchers`` — a sale day scaled down. Production's shape is 10M watchers,
  1M buyers and 100k reviewers (100 : 10 : 1): most clients sit idle in big
  groups where a reviewer posts a rare announcement, buyers ask reviewers
  questions in 1:1 chats, reviewers answer. Groups are bigger than the
  server's presence limit (64), so a watcher's presence is not fanned out.
* ``chat`` — 1:1 pairs talking: each side sends at random (Poisson) times.
* ``group-burst`` — one full group where everyone sends at the same moment.
* ``fan-out`` (``python -m bench targets``) — a few senders keep a big group
  busy at a steady rate: deliveries per second.
"""

import random
from dataclasses import dataclass, field


@dataclass
class Conversation:
    kind: str  # "group" or "direct"
    members: list[int]  # device indices; the first one creates it


@dataclass
class PlannedSend:
    at: float  # seconds after the phase's sends begin
    sender: int  # device index
    conversation: int  # index into Workload.conversations
    text: str
    key: str  # unique in the plan; the client_msg_id is "<phase>-<key>"


@dataclass
class Workload:
    name: str
    summary: str
    devices: int
    roles: dict[str, int]  # role -> how many devices (for the report)
    conversations: list[Conversation]
    plan: list[PlannedSend]
    send_window_s: float
    params: dict[str, float | int] = field(default_factory=dict)

    def members(self, conversation: int) -> frozenset[int]:
        return frozenset(self.conversations[conversation].members)


def _poisson_times(rng: random.Random, mean_gap_s: float, until_s: float) -> list[float]:
    times, t = [], rng.expovariate(1 / mean_gap_s)
    while t < until_s:
        times.append(t)
        t += rng.expovariate(1 / mean_gap_s)
    return times


def _text(rng: random.Random, what: str) -> str:
    """A chat-sized text (20 to 200 characters), different for every send."""
    filler = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz     ", k=rng.randint(10, 190)))
    return f"{what}: {filler}".strip()


def watchers(
    seed: int,
    watchers: int = 1000,
    buyers: int = 100,
    reviewers: int = 10,
    group_size: int = 100,
    announce_every_s: float = 5.0,
    ask_every_s: float = 10.0,
    reply_after_s: float = 1.0,
    window_s: float = 8.0,
) -> Workload:
    """Idle watchers in big groups, a few buyers asking reviewers in 1:1 chats."""
    rng = random.Random(f"watchers-{seed}")
    reviewer_ids = list(range(reviewers))
    buyer_ids = list(range(reviewers, reviewers + buyers))
    watcher_ids = list(range(reviewers + buyers, reviewers + buyers + watchers))
    conversations: list[Conversation] = []
    plan: list[PlannedSend] = []
    for g, start in enumerate(range(0, watchers, group_size)):
        announcer = reviewer_ids[g % reviewers]
        members = [announcer, *watcher_ids[start : start + group_size]]
        conversations.append(Conversation("group", members))
        for n, at in enumerate(_poisson_times(rng, announce_every_s, window_s)):
            text = _text(rng, f"sale {g} news {n}")
            plan.append(PlannedSend(at, announcer, len(conversations) - 1, text, f"g{g}-{n}"))
    for b, buyer in enumerate(buyer_ids):
        reviewer = reviewer_ids[b % reviewers]
        conversations.append(Conversation("direct", [buyer, reviewer]))
        chat = len(conversations) - 1
        for n, at in enumerate(_poisson_times(rng, ask_every_s, window_s - reply_after_s)):
            plan.append(PlannedSend(at, buyer, chat, _text(rng, "question"), f"b{b}-{n}q"))
            answer = _text(rng, "answer")
            plan.append(PlannedSend(at + reply_after_s, reviewer, chat, answer, f"b{b}-{n}a"))
    return Workload(
        name="watchers",
        summary=(
            f"{watchers} idle watchers in groups of {group_size}, each group with a reviewer "
            f"announcing every ~{announce_every_s:g} s; {buyers} buyers in 1:1 chats with "
            f"{reviewers} reviewers, asking every ~{ask_every_s:g} s, answered "
            f"{reply_after_s:g} s later"
        ),
        devices=reviewers + buyers + watchers,
        roles={"reviewers": reviewers, "buyers": buyers, "watchers": watchers},
        conversations=conversations,
        plan=sorted(plan, key=lambda s: s.at),
        send_window_s=window_s,
        params={
            "watchers": watchers,
            "buyers": buyers,
            "reviewers": reviewers,
            "group_size": group_size,
            "announce_every_s": announce_every_s,
            "ask_every_s": ask_every_s,
            "window_s": window_s,
        },
    )


def chat(seed: int, pairs: int = 100, every_s: float = 2.0, window_s: float = 5.0) -> Workload:
    """1:1 pairs, each side sending at random times (every ``every_s`` on average)."""
    rng = random.Random(f"chat-{seed}")
    conversations, plan = [], []
    for p in range(pairs):
        a, b = 2 * p, 2 * p + 1
        conversations.append(Conversation("direct", [a, b]))
        for side in (a, b):
            for n, at in enumerate(_poisson_times(rng, every_s, window_s)):
                plan.append(PlannedSend(at, side, p, _text(rng, "hi"), f"c{side}-{n}"))
    return Workload(
        name="chat",
        summary=f"{pairs} 1:1 pairs, each person sending every ~{every_s:g} s",
        devices=2 * pairs,
        roles={"people": 2 * pairs},
        conversations=conversations,
        plan=sorted(plan, key=lambda s: s.at),
        send_window_s=window_s,
        params={"pairs": pairs, "every_s": every_s, "window_s": window_s},
    )


def group_burst(seed: int, size: int = 100, bursts: int = 1, gap_s: float = 4.0) -> Workload:
    """One group of ``size``; at each burst every member sends at the same moment."""
    rng = random.Random(f"group-burst-{seed}")
    members = list(range(size))
    plan = [
        PlannedSend(burst * gap_s, member, 0, _text(rng, "me too"), f"u{member}-{burst}")
        for burst in range(bursts)
        for member in members
    ]
    return Workload(
        name="group-burst",
        summary=f"one group of {size}; everyone sends at the same moment"
        + (f", {bursts} times, {gap_s:g} s apart" if bursts > 1 else ""),
        devices=size,
        roles={"members": size},
        conversations=[Conversation("group", members)],
        plan=plan,
        send_window_s=max(bursts - 1, 0) * gap_s + 1.0,
        params={"size": size, "bursts": bursts, "gap_s": gap_s},
    )


def fan_out(
    seed: int, senders: int = 16, receivers: int = 100, rate: float = 10.0, window_s: float = 10.0
) -> Workload:
    """One group of ``senders + receivers``; the senders take turns sending ``rate``
    messages a second in all, evenly spaced, so every message reaches everyone else."""
    rng = random.Random(f"fan-out-{seed}")
    count = max(1, round(rate * window_s))
    plan = [
        PlannedSend(n / rate, n % senders, 0, _text(rng, "update"), f"s{n % senders}-{n}")
        for n in range(count)
    ]
    return Workload(
        name="fan-out",
        summary=f"{senders} senders and {receivers} receivers in one group; "
        f"{rate:g} messages a second for {window_s:g} s",
        devices=senders + receivers,
        roles={"senders": senders, "receivers": receivers},
        conversations=[Conversation("group", list(range(senders + receivers)))],
        plan=plan,
        send_window_s=count / rate,
        params={"senders": senders, "receivers": receivers, "rate": rate, "window_s": window_s},
    )


NAMES = ("watchers", "chat", "group-burst")
