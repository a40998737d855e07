"""group creation keys

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08

A group's creation takes an Idempotency-Key: a retry (its answer lost on the
way) finds the group the first attempt made instead of making a twin.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("creation_key", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("creation_digest", sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint(
            "uq_conversations_created_by_creation_key", ["created_by", "creation_key"]
        )


def downgrade() -> None:
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_constraint("uq_conversations_created_by_creation_key", type_="unique")
        batch_op.drop_column("creation_digest")
        batch_op.drop_column("creation_key")
