"""Conversations (direct or group) and who belongs to them."""

from sqlalchemy import BigInteger, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, BigId, created_at, id_pk

DIRECT = "direct"
GROUP = "group"


def direct_key(user_a: int, user_b: int) -> str:
    """The one key a pair of users shares, whoever opens the chat."""
    low, high = sorted((user_a, user_b))
    return f"{low}:{high}"


class Conversation(Base):
    __tablename__ = "conversations"
    # A group's creation retried with the same Idempotency-Key finds the first.
    __table_args__ = (
        UniqueConstraint(
            "created_by", "creation_key", name="uq_conversations_created_by_creation_key"
        ),
    )

    id: Mapped[id_pk]
    kind: Mapped[str] = mapped_column(String(8))
    title: Mapped[str | None] = mapped_column(String(128))
    # Unique, so two concurrent "open a chat with Bob" requests meet at one row.
    direct_key: Mapped[str | None] = mapped_column(String(41), unique=True)
    created_by: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"))
    # The conversation order: bumped under this row's lock for every message.
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[created_at]
    # A group's: the Idempotency-Key it was created with, and a digest of what
    # the creation asked (a retry must ask the same).
    creation_key: Mapped[str | None] = mapped_column(String(64))
    creation_digest: Mapped[str | None] = mapped_column(String(64))


class Membership(Base):
    __tablename__ = "memberships"

    conversation_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    joined_at: Mapped[created_at]
