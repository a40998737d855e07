"""Reading inboxes: one statement for all the polls of a process that read at once
(see ``api.gathering``)."""

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from itertools import groupby
from types import SimpleNamespace
from typing import Any

from flask import Flask
from sqlalchemy import Row, Select, bindparam, case, func, select

from api.accounts.models import User
from api.context import this_app
from api.db import db
from api.errors import ApiError
from api.gathering import BoundRows, Gatherer
from api.hub.waiters import Carried
from api.inbox.heads import remember_heads
from api.inbox.models import MESSAGE, InboxEntry
from api.messages.models import Message

log = logging.getLogger(__name__)

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


# Every process hears every wake-up: a longer text goes only to the polls that
# read it, from the database.
CARRIED_TEXT_MAX = 2048

_WANTED = BoundRows("wanted", ("user_id", "after", "most"))
_text_length = func.coalesce(func.length(messages_table.c.text), 0)


@cache
def _entries_after(shape: int | None) -> Select:
    """The read of inboxes, built once per shape of its ``_WANTED`` rows (building
    a statement costs more than its round trip).

    Each inbox's user row always matches, so an answer with no entries still
    brings the floor and the head. Each entry comes ranked within its inbox and
    with the running total of message text up to it; its text comes only while
    that total stays within the batch budget (or for the inbox's first text): no
    text travels that the answer will not carry.
    """
    wanted = _WANTED.table(shape)
    in_inbox_order = {"partition_by": wanted.c.n, "order_by": inbox_table.c.seq}
    ranked = (
        select(
            wanted.c.n,
            wanted.c.most,
            users_table.c.inbox_floor,
            users_table.c.inbox_seq,
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
    progress); or the 410 to answer if entries it has not confirmed were pruned.

    The heads of the inboxes with nothing new are cached on the way: a long poll
    that runs out its time ends with this read, so a quiet user who keeps polling
    keeps a cached head, and the next poll's start finds it there instead of
    reading it from the database. (A send raised the others' heads just now.)"""
    # Asked for one more than the limit: it tells whether more wait.
    rows_wanted = [(read.user_id, read.after, read.limit + 1) for read in wanted]
    with db.statements() as session:
        shape = _WANTED.shape(session.get_bind().dialect.name, len(wanted))
        params = {"budget": budget, **_WANTED.values(shape, rows_wanted)}
        rows = session.execute(_entries_after(shape), params).all()
    by_inbox = {n: list(inbox_rows) for n, inbox_rows in groupby(rows, key=lambda r: r.n)}
    remember_heads(
        {
            wanted[n - 1].user_id: inbox_rows[0].inbox_seq
            for n, inbox_rows in by_inbox.items()
            if inbox_rows[0].seq is None  # no entry after `after`: no send raised it lately
        }
    )
    return [_answer(by_inbox.get(n, []), read, budget) for n, read in enumerate(wanted, 1)]


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


def _entry_view(entry: Any) -> dict[str, Any]:
    """An entry as a poll answers it, from a row of the read (or anything that has
    the row's names: ``carried_entry``)."""
    return {
        "seq": entry.seq,
        "type": entry.type,
        "conversation_id": entry.conversation_id,
        "created_at": entry.created_at,
        "message": _message_view(entry) if entry.message_id else None,
        **(entry.payload or {}),
    }


def _message_view(entry: Any) -> dict[str, Any]:
    return {
        "id": entry.message_id,
        "conversation_id": entry.conversation_id,
        "sender_id": entry.sender_id,
        "seq": entry.message_seq,
        "text": entry.text,
        "client_msg_id": entry.client_msg_id,
        "created_at": entry.message_created_at,
    }


def carried_entry(message: Message) -> dict[str, Any] | None:
    """A new message's inbox entry as its wake-up carries it to the polls it wakes
    (``carried_batch``): JSON, so dates in ISO 8601, and no ``seq`` (each inbox has
    its own). None for a text longer than ``CARRIED_TEXT_MAX``: its polls read it."""
    if len(message.text) > CARRIED_TEXT_MAX:
        return None
    created_at = message.created_at.astimezone(UTC).isoformat()
    as_read = SimpleNamespace(
        seq=None,
        type=MESSAGE,
        conversation_id=message.conversation_id,
        created_at=created_at,
        message_id=message.id,
        sender_id=message.sender_id,
        message_seq=message.seq,
        text=message.text,
        client_msg_id=message.client_msg_id,
        message_created_at=created_at,
        payload=None,
    )
    entry = _entry_view(as_read)
    del entry["seq"]
    return entry


def carried_batch(carried: list[Carried], after: int, limit: int) -> Batch | None:
    """A woken poll's answer from the entries its wake-ups carried, if they are the
    next ones after ``after`` (else None: the poll reads its inbox).

    Per-user sequence numbers have no gaps and a wake-up comes after its commit,
    so entry ``after + 1`` is that inbox's next entry, whoever carried it. The
    answer keeps to the poll's ``limit`` and the text budget as a read does, and
    carries what a read of the same entries would (``tests/test_carried_entries.py``
    compares them); its ``has_more`` says only whether the wake-ups carried more.
    An entry it cannot read (from a version of Parley that carries another shape)
    is left to the read.
    """
    by_seq = {item.seq: item.entry for item in carried}
    budget = this_app().config["INBOX_BATCH_MAX_CHARS"]
    entries: list[dict[str, Any]] = []
    chars = 0
    seq = after + 1
    try:
        while seq in by_seq and len(entries) < limit:
            entry = by_seq[seq]
            chars += len(entry["message"]["text"])
            if entries and chars > budget:
                break
            entries.append(_as_answered(entry, seq))
            seq += 1
    except (KeyError, TypeError, ValueError):
        log.warning("a carried entry unreadable, read instead: %r", by_seq.get(seq))
        return None
    if not entries:
        return None
    return Batch(entries=entries, cursor=seq - 1, has_more=max(by_seq) >= seq)


def _as_answered(entry: dict[str, Any], seq: int) -> dict[str, Any]:
    """A carried entry as a read answers it: its ``seq``, and dates, not text."""
    message = entry["message"]
    return {
        **entry,
        "seq": seq,
        "created_at": datetime.fromisoformat(entry["created_at"]),
        "message": {**message, "created_at": datetime.fromisoformat(message["created_at"])},
    }


def init_reading(app: Flask) -> None:
    budget = app.config["INBOX_BATCH_MAX_CHARS"]
    app.extensions["parley.reads"] = Gatherer(lambda wanted: read_inboxes(wanted, budget))


def read_inbox(user_id: int, after: int, limit: int) -> Batch:
    """One poll's read, in the statement of the polls that read with it."""
    return this_app().extensions["parley.reads"].ask(Wanted(user_id, after, limit))
