"""Users and their devices (one device per login, each with its own token and cursor)."""

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, String, false, true
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, BigId, UTCDateTime, created_at, id_pk


class User(Base):
    __tablename__ = "users"

    id: Mapped[id_pk]
    username: Mapped[str] = mapped_column(String(32), unique=True)
    display_name: Mapped[str] = mapped_column(String(64))
    password_hash: Mapped[str] = mapped_column(String(255))
    # The last inbox sequence number handed out to this user. Bumped under this
    # row's lock inside the transaction that writes the entry, so entries commit
    # in sequence order and a reader never finds a gap filled in behind it.
    inbox_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    # Entries up to here were pruned (older than the retention); a poll from
    # behind it is answered 410 with this as the oldest cursor still valid.
    inbox_floor: Mapped[int] = mapped_column(BigInteger, default=0)
    # Presence: whether others may see it, what they were last told (so each
    # change is announced once), and when the user was last seen (kept here so a
    # Redis restart does not forget it).
    show_presence: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    presence_announced: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[created_at]


class Device(Base):
    __tablename__ = "devices"
    # A log-out deletes the device, and what is cached about it is keyed by its
    # id: SQLite must not hand that id to the next log-in (see migration 0003).
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[id_pk]
    user_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Everything in the user's inbox up to here is confirmed by this device.
    cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[created_at]
