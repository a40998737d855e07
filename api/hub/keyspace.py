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
database's keys as it reconnects to it. A request keeps the keys it first used,
and is refused a connection to another database (503): one that found its
token's owner under the old keys must not act as them in the new one. A copy
of the whole cluster's files started as a new server (a storage snapshot, a
clone, a base backup restored without recovery to a new timeline) keeps the
identity, and behind a pooler such as PgBouncer the processes never reconnect:
empty the prefix, or take a new one, after starting on such a copy. The wake-up
channel stays on the bare prefix: a wake-up is no fact, only a reason to look
again. One that carries an entry (``api.hub.redis_hub``) names its database,
and a process on another one takes it as a plain wake-up.
"""

import hashlib
import logging

from flask import has_app_context
from sqlalchemy import Engine, event

from api.context import this_g

log = logging.getLogger(__name__)

REQUEST_KEY = "parley_keys"  # on flask.g: the prefix this request (or worker step) used
CONNECTION_KEY = "parley.keys"  # in a pooled connection's info: its database's prefix

# The timeline is the current WAL file's: a promoted server writes on its new
# timeline at once, where pg_control_checkpoint() tells it only after the next
# checkpoint, minutes later.
IDENTITY_QUERY = (
    "SELECT s.system_identifier, d.oid, substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"
    " FROM pg_control_system() s, pg_database d"
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
            event.listen(engine, "checkout", self._refuse_another_database)

    @property
    def prefix(self) -> str:
        """This request's prefix (the process's when it first asks)."""
        if self._prefix is None:
            # The first connection reads the identity as it is made.
            with self._engine.connect():
                pass
        if not has_app_context():
            return self._prefix
        return this_g().setdefault(REQUEST_KEY, self._prefix)

    @property
    def database(self) -> str:
        """This request's database, as its prefix names it ('' in the embedded mode)."""
        return self.prefix[len(self.base) :].rstrip(":")

    def process_database(self) -> str | None:
        """The database this process uses now, named as ``database`` names it; None
        before its first connection (it has made none: it needs none to know)."""
        return None if self._prefix is None else self._prefix[len(self.base) :].rstrip(":")

    def _read_identity(self, dbapi_connection, record) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(IDENTITY_QUERY)
            identity = "-".join(str(part) for part in cursor.fetchone())
        dbapi_connection.rollback()  # leave it as new: no transaction open
        digest = hashlib.blake2b(identity.encode(), digest_size=5).hexdigest()
        prefix = f"{self.base}{digest}:"
        if self._prefix not in (None, prefix):
            log.warning("connected to another database (%s): cached facts start afresh", identity)
        self._prefix = record.info[CONNECTION_KEY] = prefix

    def _refuse_another_database(self, _dbapi_connection, record, _proxy) -> None:
        used = this_g().get(REQUEST_KEY) if has_app_context() else None
        if used is not None and used != record.info[CONNECTION_KEY]:
            raise self._engine.dialect.loaded_dbapi.OperationalError(
                "the database changed while this request ran; it may be tried again"
            )
