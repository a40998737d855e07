"""Reading inboxes: one statement for all the polls of a process that read at once.

A send to a group wakes the polls of every member at the same moment, and each
would read its own inbox in a database round trip of its own. Instead a process
keeps at most two such statements in flight, and the reads asked for meanwhile
gather for the next: a wake-up of fifty polls costs three statements, and a
poll that reads alone waits for nothing (two, so that one slow read, of a
device far behind, holds up nobody). A read joins only a statement that
has not started, so it always reads after its poll was armed (the waiter
protocol holds). The polls waiting for a statement hold no database connection:
only the one that runs it takes one.
"""

import threading
from collections import deque
from dataclasses import dataclass, field
from functools import cache
from itertools import groupby
from typing import Any

from flask import Flask, current_app
from sqlalchemy import Integer, Row, Select, bindparam, case, func, literal, select, union_all

from api.accounts.models import User
from api.db import db
from api.errors import ApiError
from api.inbox.models import InboxEntry
from api.messages.models import Message

GATHERED_MAX = 64  # inboxes one statement reads; more polls start a new gathering
STATEMENTS_IN_FLIGHT = 2

users_table = User.__table__
inbox_table = InboxEntry.__table__
messages_table = Message.__table__


@dataclass
class Batch:
    entries: list[dict[str, Any]] = field(default_factory=list)
    cursor: int = 0
    has_more: bool = False


@dataclass(frozen=True)
class Wanted:
    """A poll's read: at most ``limit`` entries of ``user_id``'s inbox after ``after``."""

    user_id: int
    after: int
    limit: int


_text_length = func.coalesce(func.length(messages_table.c.text), 0)


@cache
def _entries_after(count: int) -> Select:
    """The read of ``count`` inboxes, built once per count (building a statement
    costs more than its round trip).

    Each inbox's user row always matches, so an answer with no entries still
    brings the floor. Each entry comes ranked within its inbox and with the
    running total of message text up to it; its text comes only while that total
    stays within the batch budget (or for the inbox's first text): no text
    travels that the answer will not carry.
    """
    # One SELECT of bound values per inbox: SQLAlchemy caches the compiled form
    # of a UNION ALL, and compiles a VALUES list again on every execution.
    wanted = union_all(
        *(
            select(
                literal(n, Integer).label("n"),
                bindparam(f"user_id_{n}", type_=Integer).label("user_id"),
                bindparam(f"after_{n}", type_=Integer).label("after"),
                bindparam(f"most_{n}", type_=Integer).label("most"),
            )
            for n in range(count)
        )
    ).cte("wanted")
    in_inbox_order = {"partition_by": wanted.c.n, "order_by": inbox_table.c.seq}
    ranked = (
        select(
            wanted.c.n,
            wanted.c.most,
            users_table.c.inbox_floor,
            inbox_table,
            _text_length.label("text_length"),
            func.sum(_text_length).over(**in_inbox_order, rows=(None, 0)).label("chars_through"),
            func.row_number().over(**in_inbox_order).label("rank"),
            messages_table.c.sender_id,
            messages_table.c.seq.label("message_seq"),
            messages_table.c.client_msg_id,
            messages_table.c.created_at.label("message_created_at"),
            messages_table.c.text,
        )
        .select_from(
            wanted.join(users_table, users_table.c.id == wanted.c.user_id)
            .outerjoin(
                inbox_table,
                (inbox_table.c.user_id == users_table.c.id) & (inbox_table.c.seq > wanted.c.after),
            )
            .outerjoin(messages_table, messages_table.c.id == inbox_table.c.message_id)
        )
        .subquery("ranked")
    )
    within_budget = (ranked.c.chars_through <= bindparam("budget")) | (
        ranked.c.chars_through == ranked.c.text_length
    )
    carried = [c for c in ranked.c if c.name not in ("text", "most", "rank")]
    return (
        select(*carried, case((within_budget, ranked.c.text)).label("text"))
        .where(ranked.c.rank <= ranked.c.most)
        .order_by(ranked.c.n, ranked.c.seq)
    )


def read_inboxes(wanted: list[Wanted], budget: int) -> list[Batch | ApiError]:
    """Each inbox's entries after its ``after``: at most its ``limit``, and no more
    text than ``budget`` (always at least one entry, so a client always makes
    progress); or the 410 to answer if entries it has not confirmed were pruned."""
    params: dict[str, int] = {"budget": budget}
    for n, read in enumerate(wanted):
        params |= {f"user_id_{n}": read.user_id, f"after_{n}": read.after}
        params[f"most_{n}"] = read.limit + 1  # one more tells whether more wait
    with db.statements() as session:
        rows = session.execute(_entries_after(len(wanted)), params).all()
    by_inbox = {n: list(inbox_rows) for n, inbox_rows in groupby(rows, key=lambda r: r.n)}
    return [_answer(by_inbox.get(n, []), read, budget) for n, read in enumerate(wanted)]


def _answer(rows: list[Row], read: Wanted, budget: int) -> Batch | ApiError:
    floor = rows[0].inbox_floor if rows else 0
    found = [row for row in rows if row.seq is not None]
    if (found and found[0].seq > read.after + 1) or (not found and read.after < floor):
        return _pruned(floor)
    chosen = [
        entry
        for n, entry in enumerate(found[: read.limit])
        if n == 0 or entry.chars_through <= budget
    ]
    return Batch(
        entries=[_entry_view(entry) for entry in chosen],
        cursor=chosen[-1].seq if chosen else read.after,
        has_more=len(chosen) < len(found),
    )


def _pruned(floor: int) -> ApiError:
    """Entries behind the cursor were pruned: say so, never skip them silently."""
    return ApiError(
        410,
        "cursor_pruned",
        "Entries after this cursor were pruned; reload history and poll from oldest_cursor.",
        {"oldest_cursor": floor},
    )


def _entry_view(entry: Row) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "type": entry.type,
        "conversation_id": entry.conversation_id,
        "created_at": entry.created_at,
        "message": _message_view(entry) if entry.message_id else None,
        **(entry.payload or {}),
    }


def _message_view(entry: Row) -> dict[str, Any]:
    return {
        "id": entry.message_id,
        "conversation_id": entry.conversation_id,
        "sender_id": entry.sender_id,
        "seq": entry.message_seq,
        "text": entry.text,
        "client_msg_id": entry.client_msg_id,
        "created_at": entry.message_created_at,
    }


class _Gathering:
    """Reads gathered for one statement; the first to join runs it on its turn."""

    def __init__(self) -> None:
        self.wanted: list[Wanted] = []
        self.answers: list[Batch | ApiError] = []
        self.failure: BaseException | None = None
        self.turn = threading.Event()  # set when it may run
        self.done = threading.Event()


class ReadGatherer:
    """At most ``STATEMENTS_IN_FLIGHT`` statements at a time; the reads that come
    meanwhile gather for the next (at most ``GATHERED_MAX`` to a statement)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self._queued: deque[_Gathering] = deque()  # the last one still gathers

    def read(self, wanted: Wanted) -> Batch:
        """The poll's answer (raises the 410 of a pruned cursor, or the statement's error)."""
        while True:
            gathering, index = self._join(wanted)
            if index == 0:
                self._lead(gathering)
            else:
                gathering.done.wait()
            failure = gathering.failure
            if failure is None:
                break
            if isinstance(failure, Exception):
                raise failure
            # Its leader was killed (its client or its process went away): read again.
        answer = gathering.answers[index]
        if isinstance(answer, ApiError):
            raise answer
        return answer

    def _join(self, wanted: Wanted) -> tuple[_Gathering, int]:
        with self._lock:
            if self._in_flight < STATEMENTS_IN_FLIGHT:
                self._in_flight += 1
                gathering = _Gathering()
                gathering.turn.set()
            elif self._queued and len(self._queued[-1].wanted) < GATHERED_MAX:
                gathering = self._queued[-1]
            else:
                gathering = _Gathering()
                self._queued.append(gathering)
            gathering.wanted.append(wanted)
            return gathering, len(gathering.wanted) - 1

    def _lead(self, gathering: _Gathering) -> None:
        try:
            gathering.turn.wait()
            budget = current_app.config["INBOX_BATCH_MAX_CHARS"]
            gathering.answers = read_inboxes(gathering.wanted, budget)
        except BaseException as exc:
            gathering.failure = exc
            raise
        finally:
            gathering.done.set()
            self._pass_turn(gathering)

    def _pass_turn(self, gathering: _Gathering) -> None:
        with self._lock:
            if not gathering.turn.is_set():  # it never ran: take it out of the queue
                self._queued.remove(gathering)
            elif self._queued:
                self._queued.popleft().turn.set()
            else:
                self._in_flight -= 1


def init_reading(app: Flask) -> None:
    app.extensions["parley.reads"] = ReadGatherer()


def read_inbox(user_id: int, after: int, limit: int) -> Batch:
    """One poll's read, in the statement of the polls that read with it."""
    return current_app.extensions["parley.reads"].read(Wanted(user_id, after, limit))
