"""devices never reuse ids

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07

A device's id keys what is cached about it (its confirmed cursor, its pending
confirmations), and a log-out deletes the device. SQLite without AUTOINCREMENT
hands the id of a deleted last row to the next insert: the next log-in, by
anyone, took over the cached cursor and skipped that many of its entries.
PostgreSQL's sequences never go back. Ids deleted above the highest one kept
before this migration cannot be known; a new device's cursor hint is set at
log-in, not raised, for that reason too.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _recreate_devices(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table(
        "devices", recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
    ):
        pass


def upgrade() -> None:
    _recreate_devices(autoincrement=True)


def downgrade() -> None:
    _recreate_devices(autoincrement=False)
