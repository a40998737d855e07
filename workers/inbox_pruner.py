"""Drop inbox entries older than the retention period.

The inbox is a delivery log, not the history (messages stay): without pruning
it would grow forever. Each user's floor records what was dropped, so a device
that polls from behind it is answered 410 with the oldest valid cursor instead
of silently skipping entries, and a new login starts at the floor.
"""

from datetime import timedelta

from sqlalchemy import delete, func, select, update

from api.accounts.models import User
from api.db import db, utcnow
from api.inbox.models import InboxEntry
from workers.base import Worker

USERS_PER_STEP = 500  # bounds one transaction; the next step takes the next users


class InboxPruner(Worker):
    name = "inbox-pruner"
    interval_s = 60.0

    def step(self) -> int:
        session = db.session
        cutoff = utcnow() - timedelta(days=self.app.config["INBOX_RETENTION_DAYS"])
        expired = session.execute(
            select(InboxEntry.user_id, func.max(InboxEntry.seq))
            .where(InboxEntry.created_at < cutoff)
            .group_by(InboxEntry.user_id)
            .limit(USERS_PER_STEP)
        ).all()
        for user_id, through in expired:
            # Entries commit in seq order, so everything up to the newest expired
            # entry is at least as old: the floor moves over a gap-free prefix.
            session.execute(
                delete(InboxEntry).where(InboxEntry.user_id == user_id, InboxEntry.seq <= through)
            )
            session.execute(
                update(User)
                .where(User.id == user_id, User.inbox_floor < through)
                .values(inbox_floor=through)
            )
        session.commit()
        return len(expired)
