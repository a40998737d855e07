"""After a restore from backup, nothing new is skipped by a client whose state is
newer than the backup: ``python -m workers after-restore`` moves every counter past it."""

from datetime import datetime

from sqlalchemy import delete, func, select, text, update

from api.accounts.models import Device, User
from api.conversations.models import Conversation
from api.db import db, utcnow
from api.inbox.models import InboxEntry
from api.messages.models import Message
from tests.factories import message_texts, poll, send
from workers.after_restore import renumber_after_restore


def restore_to(app, moment: datetime) -> None:
    """What restoring a backup taken at ``moment`` undoes of messages and inbox
    entries made since, and of the counters they moved; in PostgreSQL also the
    messages' id sequence, which a backup keeps as it was."""
    with app.app_context():
        session = db.session
        session.execute(delete(InboxEntry).where(InboxEntry.created_at > moment))
        session.execute(delete(Message).where(Message.created_at > moment))
        last_entry = select(func.max(InboxEntry.seq)).where(InboxEntry.user_id == User.id)
        session.execute(
            update(User).values(
                inbox_seq=func.coalesce(last_entry.scalar_subquery(), User.inbox_floor)
            )
        )
        last_message = select(func.max(Message.seq)).where(
            Message.conversation_id == Conversation.id
        )
        session.execute(
            update(Conversation).values(last_seq=func.coalesce(last_message.scalar_subquery(), 0))
        )
        head = select(User.inbox_seq).where(User.id == Device.user_id).scalar_subquery()
        session.execute(update(Device).where(Device.cursor > head).values(cursor=head))
        if session.get_bind().dialect.name == "postgresql":
            session.execute(
                text(
                    "SELECT setval(pg_get_serial_sequence('messages', 'id'),"
                    " (SELECT coalesce(max(id), 0) + 1 FROM messages), false)"
                )
            )
        session.commit()


def chat_past_a_backup(client, pair) -> tuple[int, datetime, int]:
    """Ann writes "one" and "two"; a backup is taken; she writes "three", and
    Ben's client confirms all three. Returns his cursor, the backup's moment and
    the id of "three"."""
    ann, ben, cid = pair
    for text_ in ("one", "two"):
        send(client, ann, cid, text_)
    backup = utcnow()
    three = send(client, ann, cid, "three").get_json()
    cursor = poll(client, ben)["cursor"]
    poll(client, ben, after=cursor)
    return cursor, backup, three["id"]


def test_a_restore_without_renumbering_hides_new_messages(app, client, pair):
    """Why the command exists: Ben's client confirmed a message the backup lacks,
    and the next message takes its number."""
    ann, ben, cid = pair
    cursor, backup, _ = chat_past_a_backup(client, pair)
    restore_to(app, backup)

    send(client, ann, cid, "four")
    assert poll(client, ben, after=cursor)["entries"] == []  # "four" is skipped


def test_after_renumbering_a_client_newer_than_the_backup_resyncs_and_misses_nothing(
    app, client, pair, backend
):
    ann, ben, cid = pair
    cursor, backup, three_id = chat_past_a_backup(client, pair)
    history = client.get(f"/v1/conversations/{cid}/messages", headers=ben.auth).get_json()
    last_seq_seen = history["messages"][-1]["seq"]
    restore_to(app, backup)
    with app.app_context():
        renumber_after_restore(db.session)

    four = send(client, ann, cid, "four").get_json()

    # Ben's cursor is from after the backup: he is told to resync, not skipped past.
    refused = client.get("/v1/inbox", query_string={"after": cursor}, headers=ben.auth)
    assert refused.status_code == 410
    oldest = refused.get_json()["error"]["details"]["oldest_cursor"]
    assert message_texts(poll(client, ben, after=oldest)) == ["four"]
    # Paging history from the last seq he saw finds the new message too.
    newer = client.get(
        f"/v1/conversations/{cid}/messages",
        query_string={"after": last_seq_seen},
        headers=ben.auth,
    ).get_json()
    assert [m["text"] for m in newer["messages"]] == ["four"]
    if backend == "postgres":  # SQLite gives messages the largest id plus one
        assert four["id"] != three_id
