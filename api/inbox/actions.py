"""Writing inbox entries, confirming cursors, and the poll itself.

Writers (``do_append_entries``) bump each recipient's counter under the user
row's lock, taking the locks in user-id order so that two group sends cannot
deadlock. The lock is held until commit, so one user's entries commit in
sequence order: a reader who has seen ``seq <= c`` never later finds a new
entry at or below ``c``.

A poll (``poll_inbox``) follows the waiter protocol: register the waiter,
re-check the inbox head, wait, read. The head check uses the cached head, so a
poll with nothing new costs no database query; the end of a long poll's wait
re-reads the database itself, so a lost wake-up or a stale cached head delays
an entry by one timeout at most and never hides it.
"""

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from flask import current_app
from sqlalchemy import Select, case, func, insert, select, update
from sqlalchemy.orm import Session

from api.accounts.models import Device, User
from api.admission import stepping_aside
from api.auth import Auth
from api.db import db
from api.errors import ApiError
from api.hub import coordinator
from api.inbox.models import InboxEntry
from api.messages.models import Message
from api.metrics import WAKE_UP_SECONDS

users_table = User.__table__


@dataclass
class Batch:
    entries: list[dict[str, Any]] = field(default_factory=list)
    cursor: int = 0
    has_more: bool = False


def _head_key(user_id: int) -> str:
    return f"{coordinator().prefix}head:{user_id}"


def _cursor_key(device_id: int) -> str:
    return f"{coordinator().prefix}cursor:{device_id}"


def _locked_in_id_order(user_ids: Iterable[int]) -> Select:
    """The users' ids, locking their rows until commit in id order (the one order
    every writer uses).

    FOR NO KEY UPDATE, not FOR UPDATE: rows other transactions insert (messages,
    devices) take KEY SHARE locks on their user through the foreign key, and FOR
    UPDATE would wait on those: two crossing group sends would deadlock.
    """
    return (
        select(users_table.c.id)
        .where(users_table.c.id.in_(sorted(set(user_ids))))
        .order_by(users_table.c.id)
        .with_for_update(key_share=True)
    )


def lock_users(session: Session, user_ids: Iterable[int]) -> None:
    """Lock these user rows until commit, in id order."""
    session.execute(_locked_in_id_order(user_ids))


def do_append_entries(
    session: Session,
    user_ids: Iterable[int],
    entry_type: str,
    conversation_id: int | None,
    message_id: int | None = None,
    payload: dict[str, Any] | None = None,
) -> dict[int, int]:
    """Add one entry to each user's inbox (uncommitted); returns ``{user_id: seq}``."""
    ids = sorted(set(user_ids))
    if not ids:
        return {}
    # Lock (in id order, in the subquery) and bump in one round trip.
    heads = dict(
        session.execute(
            update(users_table)
            .where(users_table.c.id.in_(_locked_in_id_order(ids)))
            .values(inbox_seq=users_table.c.inbox_seq + 1)
            .returning(users_table.c.id, users_table.c.inbox_seq)
        ).all()
    )
    session.execute(
        insert(InboxEntry),
        [
            {
                "user_id": uid,
                "seq": seq,
                "type": entry_type,
                "conversation_id": conversation_id,
                "message_id": message_id,
                "payload": payload,
            }
            for uid, seq in heads.items()
        ],
    )
    return heads


def notify_inbox(heads: dict[int, int], by_device: int | None = None) -> None:
    """After commit: raise the cached heads, then wake the waiters (in that order,
    so a woken waiter always finds the new head). The polls of ``by_device``, which
    made the entries, are not woken: they get them with their next answer."""
    hub = coordinator()
    hub.hints.raise_to(
        {_head_key(uid): seq for uid, seq in heads.items()}, current_app.config["HEAD_CACHE_TTL_S"]
    )
    hub.hub.notify_users(heads, by_device)


def _inbox_head(session: Session, user_id: int) -> int:
    head = session.scalar(select(User.inbox_seq).where(User.id == user_id)) or 0
    coordinator().hints.raise_to({_head_key(user_id): head}, current_app.config["HEAD_CACHE_TTL_S"])
    return head


@dataclass(frozen=True)
class Position:
    """What the cache knows of a device's place in its inbox (either may be unknown)."""

    cursor: int | None
    head: int | None


def read_position(auth: Auth) -> Position:
    """The device's cached cursor and its user's cached inbox head, in one round trip."""
    cursor, head = coordinator().hints.get_many(
        [_cursor_key(auth.device_id), _head_key(auth.user_id)]
    )
    return Position(int(cursor) if cursor else None, int(head) if head else None)


def stored_cursor(auth: Auth, position: Position) -> int:
    if position.cursor is not None:
        return position.cursor
    with db.statements() as session:
        cursor = session.scalar(select(Device.cursor).where(Device.id == auth.device_id)) or 0
    coordinator().hints.raise_to(
        {_cursor_key(auth.device_id): cursor}, current_app.config["HEAD_CACHE_TTL_S"]
    )
    return cursor


class CursorOutOfRange(ValueError):
    """A client confirmed entries that do not exist."""


def do_confirm(auth: Auth, seq: int, position: Position) -> int:
    """Confirm everything up to ``seq`` (cursors only move forward); returns the cursor.

    Skips the database when the cached cursor is already there, so repeating
    the same ``after`` on empty polls writes nothing.
    """
    if position.cursor is not None and position.cursor >= seq:
        return position.cursor
    with db.statements() as session:
        head_known = position.head is not None and position.head >= seq
        if not head_known and _inbox_head(session, auth.user_id) < seq:
            raise CursorOutOfRange(seq)
        cursor = session.scalar(
            update(Device)
            .where(Device.id == auth.device_id)
            .values(cursor=case((Device.cursor < seq, seq), else_=Device.cursor))
            .returning(Device.cursor)
        )
        session.commit()
    coordinator().hints.raise_to(
        {_cursor_key(auth.device_id): cursor}, current_app.config["HEAD_CACHE_TTL_S"]
    )
    return cursor


def read_entries(session: Session, user_id: int, after: int, limit: int) -> Batch:
    """Entries after ``after``: at most ``limit``, and no more text than the batch
    budget (always at least one entry, so a client always makes progress)."""
    budget = current_app.config["INBOX_BATCH_MAX_CHARS"]
    rows = session.execute(
        select(InboxEntry, func.coalesce(func.length(Message.text), 0))
        .outerjoin(Message, Message.id == InboxEntry.message_id)
        .where(InboxEntry.user_id == user_id, InboxEntry.seq > after)
        .order_by(InboxEntry.seq)
        .limit(limit + 1)
    ).all()
    if (rows and rows[0][0].seq > after + 1) or (
        not rows and after < _inbox_floor(session, user_id)
    ):
        raise _pruned(session, user_id)
    chosen: list[InboxEntry] = []
    spent = 0
    for entry, text_length in rows[:limit]:
        if chosen and spent + text_length > budget:
            break
        chosen.append(entry)
        spent += text_length
    messages = _messages_by_id(session, [e.message_id for e in chosen if e.message_id])
    return Batch(
        entries=[_entry_view(entry, messages) for entry in chosen],
        cursor=chosen[-1].seq if chosen else after,
        has_more=len(chosen) < len(rows),
    )


def _inbox_floor(session: Session, user_id: int) -> int:
    return session.scalar(select(User.inbox_floor).where(User.id == user_id)) or 0


def _pruned(session: Session, user_id: int) -> ApiError:
    """Entries behind the cursor were pruned: say so, never skip them silently."""
    floor = _inbox_floor(session, user_id)
    return ApiError(
        410,
        "cursor_pruned",
        "Entries after this cursor were pruned; reload history and poll from oldest_cursor.",
        {"oldest_cursor": floor},
    )


def _messages_by_id(session: Session, ids: list[int]) -> dict[int, Message]:
    if not ids:
        return {}
    return {m.id: m for m in session.scalars(select(Message).where(Message.id.in_(ids)))}


def _entry_view(entry: InboxEntry, messages: dict[int, Message]) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "type": entry.type,
        "conversation_id": entry.conversation_id,
        "created_at": entry.created_at,
        "message": messages.get(entry.message_id) if entry.message_id else None,
        **(entry.payload or {}),
    }


def _read_if_new(auth: Auth, after: int, limit: int, known_head: int | None = None) -> Batch:
    """Entries after ``after`` if the cached head says there are any (``known_head``
    saves the round trip when the caller just read it)."""
    cached_head = known_head
    if cached_head is None:
        cached_head = coordinator().hints.get_many([_head_key(auth.user_id)])[0]
    if cached_head is not None and int(cached_head) <= after:
        return Batch(cursor=after)
    with db.statements() as session:
        if cached_head is None and _inbox_head(session, auth.user_id) <= after:
            return Batch(cursor=after)
        return read_entries(session, auth.user_id, after, limit)


def poll_inbox(auth: Auth, position: Position, after: int, timeout: float, limit: int) -> Batch:
    """Entries after ``after``, waiting up to ``timeout`` seconds for the first."""
    if timeout <= 0:
        return _read_if_new(auth, after, limit, known_head=position.head)
    hub = coordinator().hub
    deadline = time.monotonic() + timeout
    waited = False
    with hub.waiting(auth.user_id, auth.device_id) as waiter:
        while True:
            waiter.arm()
            batch = _read_if_new(auth, after, limit)
            if batch.entries and waited:
                _observe_wake_up(batch)
            if batch.entries or waiter.ended:
                return batch
            db.release()  # hold no connection while waiting, nor a turn to work
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with stepping_aside():
                woken = waiter.wait(remaining)
            if not woken:
                break
            waited = True
            if waiter.ended:
                return Batch(cursor=after)
    with db.statements() as session:
        return read_entries(session, auth.user_id, after, limit)


def _observe_wake_up(batch: Batch) -> None:
    """Time from the commit of the entry that woke the poll to its answer."""
    committed = batch.entries[0]["created_at"].timestamp()
    WAKE_UP_SECONDS.observe(max(0.0, time.time() - committed))
