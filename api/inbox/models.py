"""The per-user inbox: an ordered log every poll reads from."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, BigId, UTCDateTime, utcnow

MESSAGE = "message"
MEMBER_JOINED = "member_joined"
MEMBER_LEFT = "member_left"
PRESENCE = "presence"


class InboxEntry(Base):
    __tablename__ = "inbox_entries"

    user_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    type: Mapped[str] = mapped_column(String(32))
    conversation_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("conversations.id", ondelete="CASCADE")
    )
    message_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("messages.id", ondelete="CASCADE")
    )
    # Event details for entries that are not messages (who joined, who acted).
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Indexed: the pruner finds expired entries by age.
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
