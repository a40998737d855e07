"""Sending messages (idempotently) and reading a conversation's history.

A send bumps the conversation's counter, which locks its row (the
conversation order: one writer at a time per conversation), locks the members
under that lock, then writes the message and every member's inbox entry, in one
transaction. Only after the commit are the members woken: a 201 means it is
durable for everyone.
"""

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.auth import Auth
from api.conversations.actions import SEND_LOCKS, access_conversation
from api.db import db, utcnow
from api.errors import ApiError
from api.inbox.actions import entry_values, heads_of, message_into_inboxes, notify_inbox
from api.inbox.models import MESSAGE
from api.inbox.reading import carried_entry
from api.messages.models import Message
from api.multi_statement import run_together


def _replay(
    session: Session, sender_id: int, client_msg_id: str, conversation_id: int, text: str
) -> Message | None:
    """The message this ``client_msg_id`` already made, if any (409 if made for another)."""
    original = session.scalars(
        select(Message).where(
            Message.sender_id == sender_id, Message.client_msg_id == client_msg_id
        )
    ).first()
    if original is not None and (
        original.conversation_id != conversation_id or original.text != text
    ):
        raise ApiError(
            409,
            "idempotency_key_reused",
            "This client_msg_id was already used for a different message.",
            {"message_id": original.id, "conversation_id": original.conversation_id},
        )
    return original


def do_send_message(
    conversation_id: int, sender: Auth, text: str, client_msg_id: str | None
) -> tuple[Message, bool]:
    """Store and deliver a message; returns it and whether it is new (False: a replay).

    Every member's inbox gets it, the sender's too (their other devices need it),
    but the sending device's own held poll is not woken for it: the 201 carries it.

    One transaction in one round trip (``api.multi_statement``): the conversation's
    counter bumped (its row locked), the members' rows locked in id order, the
    message and its entries inserted. Locks held only while PostgreSQL works, so
    the sends of a busy group do not queue behind each other's round trips.

    A retry is not looked for up front: the unique (sender, client_msg_id) fails
    the insert, nothing is stored, and the original is returned. Retries are
    rare; every send saves the round trip. A sender who is not a member (or a
    conversation that does not exist) fails it too, and gets the 404, and so
    does a device that no longer has the sender's token (logged out): the
    statement checks it, so a token the process verified before needs no
    check of its own (``api.auth.claimed``).
    """
    sender_id = sender.user_id
    created_at = utcnow()
    params = {
        "conversation": conversation_id,
        "sender": sender_id,
        "device": sender.device_id,
        "token_hash": sender.token_hash,
        "text": text,
        "client_msg_id": client_msg_id,
        **entry_values(MESSAGE, conversation_id, None, created_at),
    }
    statements = [*SEND_LOCKS, *message_into_inboxes(db.engine().dialect.name)]
    try:
        results = run_together(statements, params)
    except IntegrityError:
        with db.statements() as session:
            original = client_msg_id and _replay(
                session, sender_id, client_msg_id, conversation_id, text
            )
            if original:
                return original, False
            access_conversation(session, conversation_id, sender_id)  # else the 404
        raise
    entries = results[-1]
    message = Message(
        id=entries[0].message_id,
        conversation_id=conversation_id,
        seq=results[0][0].last_seq,
        sender_id=sender_id,
        text=text,
        client_msg_id=client_msg_id,
        created_at=created_at,
    )
    notify_inbox(heads_of(entries), by_device=sender.device_id, entry=carried_entry(message))
    return message, True


def list_messages(
    session: Session, conversation_id: int, before: int | None, after: int | None, limit: int
) -> tuple[list[Message], bool]:
    """A page of history in conversation order, and whether more lies in the paging direction.

    With ``after`` the page starts just after it (paging forward); otherwise it
    ends just before ``before`` (or at the newest message), paging back.
    """
    query = select(Message).where(Message.conversation_id == conversation_id)
    if after is not None:
        query = query.where(Message.seq > after)
    if before is not None:
        query = query.where(Message.seq < before)
    forward = after is not None
    order = Message.seq.asc() if forward else Message.seq.desc()
    page = list(session.scalars(query.order_by(order).limit(limit + 1)))
    has_more = len(page) > limit
    page = page[:limit]
    return (page if forward else page[::-1]), has_more
