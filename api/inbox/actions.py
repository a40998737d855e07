"""Writing inbox entries, confirming cursors, and the poll itself.

Writers (``do_append_entries``) bump each recipient's counter under the user
row's lock, taking the locks in user-id order so that two group sends cannot
deadlock. The lock is held until commit, so one user's entries commit in
sequence order: a reader who has seen ``seq <= c`` never later finds a new
entry at or below ``c``.

A poll (``polling`` and ``poll_inbox``) follows the waiter protocol: register
the waiter, re-check the inbox head, wait, read. The head check uses the cached
head, so a poll with nothing new costs no database query; the end of a long poll's wait
re-reads the database itself, so a lost wake-up or a stale cached head delays
an entry by one timeout at most and never hides it.
"""

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from functools import cache, partial
from typing import Any

from flask import Flask
from sqlalchemy import (
    ColumnElement,
    Executable,
    Insert,
    Row,
    Update,
    bindparam,
    case,
    insert,
    null,
    select,
    true,
    update,
)
from sqlalchemy.orm import Session

from api.accounts.models import Device, User
from api.admission import stepping_aside
from api.auth import Auth, TokenClaim
from api.context import this_app
from api.conversations.models import Conversation, Membership
from api.db import db, utcnow
from api.gathering import GATHERED_MAX, BoundRows, Gatherer
from api.hub import coordinator
from api.hub.hints import RAISED
from api.hub.trip import Trip
from api.hub.waiters import Waiter
from api.inbox.heads import head_key, remember_heads
from api.inbox.models import InboxEntry
from api.inbox.reading import Batch, carried_batch, read_inbox
from api.messages.models import Message
from api.metrics import WAKE_UP_SECONDS
from api.write_behind import WriteBehind

TIME_OUT_TICK_S = 0.25  # see _on_the_tick

# Core tables, not the ORM classes, in the poll's statements: an ORM-enabled
# UPDATE went through the ORM's bulk-update machinery on every poll that confirms.
users_table = User.__table__
devices_table = Device.__table__
inbox_table = InboxEntry.__table__
messages_table = Message.__table__
conversations_table = Conversation.__table__
memberships_table = Membership.__table__


def _cursor_key(device_id: int) -> str:
    return f"{coordinator().keys.prefix}cursor:{device_id}"


# The statements of every send, built once (building one costs about what its
# round trip does). FOR NO KEY UPDATE, not FOR UPDATE: rows other transactions
# insert (messages, devices) take KEY SHARE locks on their user through the
# foreign key, and FOR UPDATE would wait on those: two crossing group sends
# would deadlock.
_the_users = users_table.c.id.in_(bindparam("user_ids", expanding=True))
_LOCK_USERS = (
    select(users_table.c.id)
    .where(_the_users)
    .order_by(users_table.c.id)
    .with_for_update(key_share=True)
)


def lock_users(session: Session, user_ids: Iterable[int]) -> None:
    """Lock these user rows until commit, in id order (the one order every writer uses)."""
    session.execute(_LOCK_USERS, {"user_ids": sorted(set(user_ids))})


def _entries_from(users: Any, message_id: Any = None, joined: Any = None) -> Insert:
    """One entry per row of ``users`` (an id and its bumped ``inbox_seq``): every
    recipient's entry in one statement, whatever their number (a bulk insert of
    parameter rows ran one INSERT per recipient, each a round trip under the
    recipients' locks). Its values' names are not the users' columns': an UPDATE
    in the same statement would set those columns to them. ``message_id``: the
    new message's id, an expression (none for other entries); ``joined``: the
    WITH query it comes from, if any."""
    rows = select(
        users.c.id,
        users.c.inbox_seq,
        bindparam("entry_type", type_=inbox_table.c.type.type),
        bindparam("entry_conversation_id", type_=inbox_table.c.conversation_id.type),
        null() if message_id is None else message_id,
        bindparam("entry_payload", type_=inbox_table.c.payload.type),
        bindparam("entry_created_at", type_=inbox_table.c.created_at.type),
    )
    if joined is not None:
        rows = rows.select_from(users.join(joined, true()))
    return (
        insert(inbox_table)
        .from_select(
            ["user_id", "seq", "type", "conversation_id", "message_id", "payload", "created_at"],
            rows,
        )
        .returning(inbox_table.c.user_id, inbox_table.c.seq, inbox_table.c.message_id)
    )


def _bump_heads(users: ColumnElement[bool]) -> Update:
    return update(users_table).where(users).values(inbox_seq=users_table.c.inbox_seq + 1)


def _entries_bumping(
    users: ColumnElement[bool], dialect_name: str, message_id: Any = None, message: Any = None
) -> list[Executable]:
    """The statements that bump these users' counters and add their entries (the
    last returns them). PostgreSQL bumps them in the statement that reads them (a
    data-modifying WITH, next to ``message``'s if given); SQLite has no UPDATE
    inside WITH: it bumps them first, then reads them back."""
    if dialect_name == "postgresql":
        bumped = _bump_heads(users).returning(users_table.c.id, users_table.c.inbox_seq)
        with_queries = [bumped.cte("bumped"), *([message] if message is not None else [])]
        entries = _entries_from(with_queries[0], message_id, joined=message)
        return [entries.add_cte(*with_queries)]
    bumped = select(users_table.c.id, users_table.c.inbox_seq).where(users).subquery("bumped")
    return [_bump_heads(users), _entries_from(bumped, message_id)]


# Built once, so SQLAlchemy compiles each once per backend.
_BACKENDS = ("postgresql", "sqlite")
_APPEND_ENTRIES = {name: _entries_bumping(_the_users, name) for name in _BACKENDS}

# A send's message and its entries (see ``api.messages.actions``): they go out
# in the round trip of the statements that bump the conversation's counter and
# lock its members (``api.multi_statement``), so they take the members, the seq and
# the sender from the database, not from parameters. The sender only while a
# member, and sending from a device that still has its token: else it is NULL,
# and the NOT NULL column fails the whole transaction.
_the_members = users_table.c.id.in_(
    select(memberships_table.c.user_id).where(
        memberships_table.c.conversation_id == bindparam("conversation")
    )
)
_conversation_seq = (
    select(conversations_table.c.last_seq)
    .where(conversations_table.c.id == bindparam("conversation"))
    .scalar_subquery()
)
_INSERT_MESSAGE = insert(messages_table).values(
    conversation_id=bindparam("conversation"),
    seq=_conversation_seq,
    sender_id=select(memberships_table.c.user_id)
    .join(devices_table, devices_table.c.user_id == memberships_table.c.user_id)
    .where(
        memberships_table.c.conversation_id == bindparam("conversation"),
        memberships_table.c.user_id == bindparam("sender"),
        devices_table.c.id == bindparam("device"),
        devices_table.c.token_hash == bindparam("token_hash"),
    )
    .scalar_subquery(),
    text=bindparam("text"),
    client_msg_id=bindparam("client_msg_id"),
    created_at=bindparam("entry_created_at"),
)
_NEW_MESSAGE = _INSERT_MESSAGE.returning(messages_table.c.id).cte("new_message")
_MESSAGE_INTO_INBOXES = {
    "postgresql": _entries_bumping(_the_members, "postgresql", _NEW_MESSAGE.c.id, _NEW_MESSAGE),
    "sqlite": [
        _INSERT_MESSAGE,
        *_entries_bumping(
            _the_members,
            "sqlite",
            select(messages_table.c.id)
            .where(
                messages_table.c.conversation_id == bindparam("conversation"),
                messages_table.c.seq == _conversation_seq,
            )
            .scalar_subquery(),
        ),
    ],
}


def message_into_inboxes(dialect_name: str) -> list[Executable]:
    """The statements that insert a message into a conversation whose counter was
    bumped and whose members were locked by the statements before them, and its
    entry in every member's inbox; the last one returns the entries' ``user_id``,
    ``seq`` and ``message_id``. Their parameters: ``conversation``, ``sender``
    (sending from ``device`` with the token ``token_hash``), ``text``,
    ``client_msg_id`` and ``entry_values(MESSAGE, …)``."""
    return _MESSAGE_INTO_INBOXES[dialect_name]


def do_append_entries(
    session: Session,
    user_ids: Iterable[int],
    entry_type: str,
    conversation_id: int | None,
    payload: dict[str, Any] | None = None,
) -> dict[int, int]:
    """Add one entry to each user's inbox (uncommitted); returns ``{user_id: seq}``."""
    ids = sorted(set(user_ids))
    if not ids:
        return {}
    # Lock first, then bump: two statements. Locking in a subquery of the UPDATE
    # itself saved a round trip but deadlocked now and then (PostgreSQL re-checks
    # rows that changed while the statement waited, and took a row lock again
    # behind a transaction already queued for it).
    lock_users(session, ids)
    entries = {"user_ids": ids, **entry_values(entry_type, conversation_id, payload, utcnow())}
    for statement in _APPEND_ENTRIES[session.get_bind().dialect.name]:
        rows = session.execute(statement, entries)
    return heads_of(rows)


def entry_values(
    entry_type: str,
    conversation_id: int | None,
    payload: dict[str, Any] | None,
    created_at: datetime,
) -> dict[str, Any]:
    """The parameters of an entry statement but its users'."""
    return {
        "entry_type": entry_type,
        "entry_conversation_id": conversation_id,
        "entry_payload": payload,
        "entry_created_at": created_at,
    }


def heads_of(entries: Iterable[Row]) -> dict[int, int]:
    """``{user_id: seq}`` of the entries an entry statement returned."""
    return {entry.user_id: entry.seq for entry in entries}


def notify_inbox(
    heads: dict[int, int], by_device: int | None = None, entry: dict[str, Any] | None = None
) -> None:
    """After commit: raise the cached heads, then wake the waiters, in one round
    trip (Redis runs it in that order, so a poll that starts meanwhile and misses
    the wake-up finds the new head). The polls of ``by_device``, which made the
    entries, are not woken: they get them with their next answer. ``entry``
    (``api.inbox.reading.carried_entry``): the one entry each head is, carried
    by the wake-up."""
    coordinating = coordinator()
    trip = coordinating.trip()
    remember_heads(heads, trip)
    coordinating.hub.notify_users(heads, by_device, trip, entry)
    trip.send()


def _inbox_head(session: Session, user_id: int) -> int:
    head = session.scalar(select(users_table.c.inbox_seq).where(users_table.c.id == user_id)) or 0
    remember_heads({user_id: head})
    return head


@dataclass
class Position:
    """What the cache knows of a device's place in its inbox (either may be unknown),
    until the request reads the head from the database: then that one."""

    cursor: int | None
    head: int | None

    def read_head(self, user_id: int) -> int:
        """Read the inbox head from the database (and cache it): a poll that must
        check its ``after`` reads it once, not again to see whether anything is new."""
        with db.statements() as session:
            self.head = _inbox_head(session, user_id)
        return self.head

    @classmethod
    def cached(cls, values: list[str | None]) -> "Position":
        """From the cached values of ``position_keys``."""
        cursor, head = values
        return cls(int(cursor) if cursor else None, int(head) if head else None)


def position_keys(auth: Auth) -> list[str]:
    return [_cursor_key(auth.device_id), head_key(auth.user_id)]


def read_position(auth: Auth) -> Position:
    """The device's cached cursor and its user's cached inbox head, in one round trip."""
    return Position.cached(coordinator().hints.get_many(position_keys(auth)))


def stored_cursor(auth: Auth, position: Position) -> int:
    """Where a poll without ``after`` starts: the device's cursor, cached or stored."""
    if position.cursor is not None:
        return position.cursor
    with db.statements() as session:
        cursor = (
            session.scalar(
                select(devices_table.c.cursor).where(devices_table.c.id == auth.device_id)
            )
            or 0
        )
    remember_cursor(auth, cursor)
    return max(cursor, _confirmed_behind(auth) or 0)


def remember_cursor(auth: Auth, cursor: int, trip: Trip | None = None) -> None:
    """Cache the device's confirmed cursor (now or in ``trip``); it only moves forward."""
    _remember_cursors({auth.device_id: cursor}, trip)


def remember_new_cursor(auth: Auth, cursor: int, trip: Trip) -> None:
    """Cache a new device's cursor as stored, in ``trip``: set, not raised, so that
    nothing cached under its id before (see migration 0003) speaks for it."""
    coordinator().hints.set(
        _cursor_key(auth.device_id), str(cursor), this_app().config["CURSOR_CACHE_TTL_S"], trip=trip
    )


def _remember_cursors(cursors: dict[int, int], trip: Trip | None = None) -> None:
    coordinator().hints.raise_to(
        {_cursor_key(device_id): cursor for device_id, cursor in cursors.items()},
        this_app().config["CURSOR_CACHE_TTL_S"],
        trip,
    )


class CursorOutOfRange(ValueError):
    """A client confirmed entries that do not exist."""


@dataclass(frozen=True)
class Confirm:
    """A device confirms its inbox up to ``seq``."""

    device_id: int
    seq: int


_CONFIRMED = BoundRows("confirmed", ("device_id", "seq"))


@cache
def _cursors_raised(shape: int | None) -> Update:
    """Raise the cursors of devices, built once per shape of its ``_CONFIRMED`` rows."""
    confirmed = _CONFIRMED.table(shape)
    cursor = devices_table.c.cursor
    return (
        update(devices_table)
        .where(devices_table.c.id == confirmed.c.device_id)
        .values(cursor=case((cursor < confirmed.c.seq, confirmed.c.seq), else_=cursor))
        .returning(devices_table.c.id, cursor)
    )


def store_cursors(highest: dict[int, int]) -> dict[int, int]:
    """Raise these devices' stored cursors (``{device_id: seq}``), ``GATHERED_MAX``
    a statement; returns the cursors of the devices that still exist."""
    cursors: dict[int, int] = {}
    confirmed = list(highest.items())
    with db.statements() as session:
        dialect_name = session.get_bind().dialect.name
        for start in range(0, len(confirmed), GATHERED_MAX):
            batch = confirmed[start : start + GATHERED_MAX]
            shape = _CONFIRMED.shape(dialect_name, len(batch))
            rows = session.execute(_cursors_raised(shape), _CONFIRMED.values(shape, batch))
            cursors.update(rows.all())  # a device deleted meanwhile (logged out) has none
            session.commit()
    return cursors


def write_cursors(confirms: list[Confirm]) -> list[int]:
    """Store these confirmations in one statement, then cache them in one round
    trip; returns each one's device cursor (cursors only move forward)."""
    highest: dict[int, int] = {}
    for confirm in confirms:  # a device asks twice: its second poll superseded the first
        highest[confirm.device_id] = max(confirm.seq, highest.get(confirm.device_id, 0))
    cursors = store_cursors(highest)
    _remember_cursors(cursors)
    return [cursors.get(confirm.device_id, confirm.seq) for confirm in confirms]


def init_cursors(app: Flask) -> None:
    """Confirmations of a process that come at once share one statement (see
    ``api.gathering``): every poll woken by a group send confirms what it got.
    A poll's own are written behind (``api.write_behind``)."""
    app.extensions["parley.cursors"] = Gatherer(write_cursors)
    app.extensions["parley.cursors.behind"] = WriteBehind(
        app, store_cursors, app.config["CURSOR_WRITE_DELAY_S"]
    )


def _confirmed_behind(auth: Auth) -> int | None:
    """What this device confirmed in this process and is not stored yet."""
    return this_app().extensions["parley.cursors.behind"].pending(auth.device_id)


def do_confirm(auth: Auth, seq: int, position: Position) -> int:
    """Store a confirmation of everything up to ``seq`` before answering (an ack),
    with what this process's polls confirmed before it; returns the stored cursor
    (cursors only move forward)."""
    seq = max(seq, _confirmed_behind(auth) or 0)
    _check_confirmable(auth, seq, position)
    return this_app().extensions["parley.cursors"].ask(Confirm(auth.device_id, seq))


def confirm_later(auth: Auth, seq: int, start: "PollStart") -> None:
    """A poll's confirmation of everything up to ``seq`` (its start, sent, was
    ``confirming`` it): cached now, so that every process goes on from it, and
    stored up to ``CURSOR_WRITE_DELAY_S`` later with the process's others
    meanwhile (its client is told nothing of the write).

    Nothing at all when the cached cursor is there already, so repeating the
    same ``after`` on empty polls writes nothing. The start's round trip raised
    the cached cursor if the cached head allowed it, and its store was queued
    then (``PollStart``); if it could not tell, the head is checked here (read
    if need be), and the cursor raised in a round trip of its own.
    """
    raised, position = start.cursor_raised, start.position
    if raised is not None or (position.cursor is not None and position.cursor >= seq):
        return
    _check_confirmable(auth, seq, position)
    trip = coordinator().trip()
    remember_cursor(auth, seq, trip)
    trip.send()
    _store_later(auth, seq)


def _store_later(auth: Auth, seq: int) -> None:
    this_app().extensions["parley.cursors.behind"].raise_to(auth.device_id, seq)


def _check_confirmable(auth: Auth, seq: int, position: Position) -> None:
    """Refuse to confirm past the inbox's head (cached, or else read)."""
    if (position.head is None or position.head < seq) and position.read_head(auth.user_id) < seq:
        raise CursorOutOfRange(seq)


def _read_if_new(auth: Auth, after: int, limit: int, position: Position) -> Batch:
    """Entries after ``after`` unless the head (cached, or else read) says there are none."""
    head = position.head if position.head is not None else position.read_head(auth.user_id)
    if head <= after:
        return Batch(cursor=after)
    return read_inbox(auth.user_id, after, limit)


class PollStart:
    """A poll that has begun: its waiter (a long poll's), and the Redis commands of
    its start, queued on ``trip`` until ``send``."""

    def __init__(
        self, auth: Auth, trip: Trip, waiter: Waiter | None, deadline: float, read_at: float
    ) -> None:
        self.auth = auth
        self.trip = trip
        self.waiter = waiter
        # A long poll's, on the monotonic clock: when it ends, and when it reads
        # its inbox once more before that (see ``_on_the_tick``).
        self.deadline = deadline
        self.read_at = read_at
        self.position = Position(None, None)
        self.cursor_raised: bool | None = None  # see ``polling``

    def send(self) -> Position:
        """Send the start's commands; returns the cached cursor and head they read."""
        self.trip.send()
        return self.position

    def _found(self, values: list[str | None]) -> None:
        self.position = Position.cached(values)

    def _found_and_raised(self, seq: int, values: list[str | None], raised: bool | None) -> None:
        """The start's read, and whether it raised the cached cursor to ``seq``: if
        it did, the store is queued at once, so that nothing failing later in the
        request leaves the cache ahead of the database."""
        self._found(values)
        self.cursor_raised = raised
        if raised is RAISED:
            _store_later(self.auth, seq)


@contextmanager
def polling(
    auth: Auth, timeout: float, confirming: int = 0, claim: TokenClaim | None = None
) -> Iterator[PollStart]:
    """Begin a poll (a long one if ``timeout``) for the block.

    A long poll's waiter is registered first, so no wake-up from then on is
    missed; the head read afterwards is the waiter protocol's re-check. That read
    (with the cached cursor) and the waiter's announcement to other processes are
    queued on ``start.trip``; the caller adds its own commands and sends them all
    in one round trip with ``start.send()``.

    A poll ``confirming`` its entries up to a seq raises the cached cursor in that
    read, if the cached head vouches for the seq (and the ``claim``, if any,
    holds); ``confirm_later`` does the rest.
    """
    coordinating = coordinator()
    trip = coordinating.trip()
    started = time.monotonic()
    deadline = started + timeout
    waiting = (
        coordinating.hub.waiting(auth.user_id, auth.device_id, trip, timeout)
        if timeout > 0
        else nullcontext()
    )
    with waiting as waiter:
        start = PollStart(auth, trip, waiter, deadline, _on_the_tick(deadline))
        if confirming:
            coordinating.hints.get_and_raise_within_then(
                trip,
                *position_keys(auth),
                confirming,
                this_app().config["CURSOR_CACHE_TTL_S"],
                partial(start._found_and_raised, confirming),
                guard=(claim.key, claim.value) if claim else None,
            )
        else:
            coordinating.hints.get_many_then(trip, position_keys(auth), start._found)
        yield start


def poll_inbox(start: PollStart, after: int, limit: int) -> Batch:
    """Entries after ``after``; a long poll waits for the first until its deadline
    (the start must have been sent)."""
    auth, waiter = start.auth, start.waiter
    batch = _read_if_new(auth, after, limit, start.position)
    if waiter is None or batch.entries or waiter.ended:
        return batch
    read_at: float | None = start.read_at  # None once its closing read is done
    # No turn to work while it waits, nor for its reads: the polls woken together
    # read together (at most two statements of a process in flight), however few
    # turns are free. It takes one again to answer.
    with stepping_aside() as aside:
        while True:
            db.release()  # nor a connection
            woken = waiter.wait(max(0.0, (read_at or start.deadline) - time.monotonic()))
            if waiter.ended or not (woken or read_at):
                aside.answer_without_a_turn()
                return Batch(cursor=after)
            waiter.arm()  # before the re-read, never after
            # What the wake-ups carried, if it is the next entry; else straight to
            # the database: a wake-up means news, and the closing read is what makes
            # a lost wake-up or a stale cached head cost one timeout at most.
            batch = carried_batch(waiter.take_carried(), after, limit)
            if batch is None:
                batch = read_inbox(auth.user_id, after, limit)
                db.release()  # SQLite reads in the request's transaction: not held while queued
            if batch.entries:
                if woken:
                    _observe_wake_up(batch)
                return batch
            if not woken:
                read_at = None  # the rest of its time, it waits for a wake-up only


def _on_the_tick(deadline: float) -> float:
    """When a long poll ending at ``deadline`` reads its inbox once more: on the
    last tick of ``TIME_OUT_TICK_S`` before it, unless that has passed.

    A long poll that runs out its time reads its inbox once more (what makes a
    lost wake-up cost one timeout at most), and the polls of a process that
    read at once share one statement (``api.gathering``). Their time-outs come
    spread out, each at its own instant, so each read was a statement of its
    own; reading on shared ticks gathers them. At 200 time-outs a second on
    one worker, a timed-out poll cost 3.2 ms of server CPU (web, PostgreSQL and
    Redis), and 1.5 ms on ticks of a quarter second. The polls are answered at
    their own deadlines, not on the tick: answered all at once, a tick's polls
    kept a worker busy for tens of milliseconds, and the sends that came then
    waited behind them (29 to 32 ms at p50 in the first 25 ms after a tick, 8 to
    9 ms later in it). Between the read and the answer the poll still waits for
    a wake-up, and reads again if one comes.
    """
    on_the_tick = deadline - deadline % TIME_OUT_TICK_S
    return on_the_tick if on_the_tick > time.monotonic() else deadline


def _observe_wake_up(batch: Batch) -> None:
    """Time from the commit of the entry that woke the poll to its answer."""
    committed = batch.entries[0]["created_at"].timestamp()
    WAKE_UP_SECONDS.observe(max(0.0, time.time() - committed))
