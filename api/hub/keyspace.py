"""Where cached facts live in Redis: under ``REDIS_PREFIX`` and the database's identity.

Cached cursors, inbox heads, tokens, presence and held-poll marks name users
and devices by their ids in one database. Another database behind the same
prefix (dropped and created again, restored from a dump, a replica promoted
after a failover) hands the same ids to other users and devices; had it met
those facts, a token of the old database would have let its holder in as
someone else, and a cursor cached ahead would have hidden new entries from a
device. So keys live under the prefix and a digest of the database's identity:
the cluster's system identifier, the database's oid and the timeline (bumped
by every promotion and point-in-time recovery).

Each new database connection reads the identity, so a process moves to a new
database's keys as it reconnects to it. A backup restored in place over the
same cluster and timeline keeps its identity: empty the prefix after that.
The wake-up channel stays on the bare prefix: a wake-up is no fact, only a
reason to look again.
"""

import hashlib
import logging

from sqlalchemy import Engine, event

log = logging.getLogger(__name__)

IDENTITY_QUERY = (
    "SELECT s.system_identifier, d.oid, c.timeline_id"
    " FROM pg_control_system() s, pg_control_checkpoint() c, pg_database d"
    " WHERE d.datname = current_database()"
)


class KeySpace:
    """The prefix of every cached fact's key: ``base`` alone in the embedded mode
    (the facts live in the process), else ``base`` and the database's identity."""

    def __init__(self, base: str, engine: Engine | None = None) -> None:
        self.base = base
        self._engine = engine
        self._prefix = base if engine is None else None
        if engine is not None:
            event.listen(engine, "connect", self._read_identity)

    @property
    def prefix(self) -> str:
        if self._prefix is None:
            # The first connection reads the identity as it is made.
            with self._engine.connect():
                pass
        return self._prefix

    def _read_identity(self, dbapi_connection, _record) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(IDENTITY_QUERY)
            identity = "-".join(str(part) for part in cursor.fetchone())
        dbapi_connection.rollback()  # leave it as new: no transaction open
        digest = hashlib.blake2b(identity.encode(), digest_size=5).hexdigest()
        prefix = f"{self.base}{digest}:"
        if self._prefix not in (None, prefix):
            log.warning("connected to another database (%s): cached facts start afresh", identity)
        self._prefix = prefix
