from datetime import timedelta

from sqlalchemy import update

from api.db import db, utcnow
from api.inbox.models import InboxEntry
from tests.factories import log_in, message_texts, open_direct, poll, send, sign_up
from workers.inbox_pruner import InboxPruner


def age_entries(app, user_id: int, through_seq: int, days: int) -> None:
    with app.app_context():
        db.session.execute(
            update(InboxEntry)
            .where(InboxEntry.user_id == user_id, InboxEntry.seq <= through_seq)
            .values(created_at=utcnow() - timedelta(days=days))
        )
        db.session.commit()


def prune(app) -> int:
    with app.app_context():
        return InboxPruner(app).step()


def chat(client, messages: int):
    """Ann and Ben, and Ann's messages m1, m2, … in their direct chat."""
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    cid = open_direct(client, ann, ben)
    for i in range(1, messages + 1):
        send(client, ann, cid, f"m{i}")
    return ann, ben, cid


def test_entries_past_the_retention_are_pruned_and_a_stale_cursor_is_told(app, client):
    _, ben, cid = chat(client, messages=5)
    age_entries(app, ben.id, through_seq=3, days=31)

    assert prune(app) == 1  # only ben has expired entries
    stale = client.get("/v1/inbox", query_string={"after": 1}, headers=ben.auth)
    assert stale.status_code == 410
    assert stale.get_json()["error"]["details"] == {"oldest_cursor": 3}

    resumed = poll(client, ben, after=3)
    assert message_texts(resumed) == ["m4", "m5"]
    # History still has every message.
    history = client.get(f"/v1/conversations/{cid}/messages", headers=ben.auth).get_json()
    assert len(history["messages"]) == 5


def test_a_new_login_starts_at_the_oldest_kept_entry(app, client):
    _, ben, _ = chat(client, messages=3)
    age_entries(app, ben.id, through_seq=2, days=40)
    prune(app)
    tablet = log_in(client, "ben", device_name="tablet")
    assert message_texts(poll(client, tablet)) == ["m3"]


def test_entries_within_the_retention_stay(app, client):
    _, ben, _ = chat(client, messages=1)
    assert prune(app) == 0
    assert message_texts(poll(client, ben, after=0)) == ["m1"]
