"""After the database is restored from a backup: ``python -m workers after-restore``.

A backup is older than what clients keep. Devices confirmed inbox entries past
the backup's, and clients hold message, user and conversation ids and
conversation seqs that the restored database would hand out again: a device
polling from its cursor would silently skip new entries numbered below it, a
client paging history from its last seq would skip new messages, and one that
deduplicates by message id would drop a new message bearing a lost one's id.

Run once, after the restore and before the servers take traffic. Every inbox,
conversation and id sequence jumps ``RESTORE_GAP`` ahead, past anything a
client could have seen, and every inbox's floor moves to its new head: each
device's next poll from an older cursor answers 410 (with that floor as the
oldest cursor), so it reloads history and goes on from there, as after pruning.
"""

from sqlalchemy import text, update
from sqlalchemy.orm import Session

from api.accounts.models import User
from api.conversations.models import Conversation

# Past any number of entries or messages made between a backup and its restore,
# and far below 2^53 (where JavaScript clients' numbers lose precision) for
# millions of restores.
RESTORE_GAP = 2**32

_ID_TABLES = ("users", "devices", "conversations", "messages")


def renumber_after_restore(session: Session) -> None:
    """Move every counter clients keep ``RESTORE_GAP`` ahead, in one transaction.

    In the embedded mode SQLite hands out the next id of most tables as the
    largest one plus one: only devices' ids (and every seq) move there."""
    users = User.__table__
    conversations = Conversation.__table__
    moved_head = users.c.inbox_seq + RESTORE_GAP  # SET reads the row as it was
    session.execute(update(users).values(inbox_seq=moved_head, inbox_floor=moved_head))
    session.execute(update(conversations).values(last_seq=conversations.c.last_seq + RESTORE_GAP))
    if session.get_bind().dialect.name == "postgresql":
        for table in _ID_TABLES:
            session.execute(
                text(
                    "SELECT setval(pg_get_serial_sequence(:table, 'id'),"
                    " nextval(pg_get_serial_sequence(:table, 'id')) + :gap)"
                ),
                {"table": table, "gap": RESTORE_GAP},
            )
    else:
        session.execute(text("UPDATE sqlite_sequence SET seq = seq + :gap"), {"gap": RESTORE_GAP})
    session.commit()
