"""Migrations keep the data they find (SQLite alters a table by copying it)."""

import sqlite3

import pytest
from alembic import command
from alembic.config import Config

from tests.conftest import ROOT

NOW = "2026-01-01 00:00:00"
TABLES = ("users", "devices", "conversations", "memberships", "messages", "inbox_entries")


def alembic_config(path) -> Config:
    config = Config(f"{ROOT}/alembic.ini")
    config.attributes["database_url"] = f"sqlite:///{path}"
    config.attributes["configure_logger"] = False
    return config


def fill(path) -> None:
    """Two users with a device each, a group of both, a message and its entry."""
    with sqlite3.connect(path) as db:
        for user_id in (1, 2):
            db.execute(
                "INSERT INTO users (id, username, display_name, password_hash, inbox_seq,"
                " inbox_floor, created_at) VALUES (?, ?, ?, 'x', 1, 0, ?)",
                (user_id, f"u{user_id}", f"u{user_id}", NOW),
            )
            db.execute(
                "INSERT INTO devices (id, user_id, name, token_hash, cursor, created_at)"
                " VALUES (?, ?, 'phone', ?, 0, ?)",
                (user_id, user_id, f"hash{user_id}", NOW),
            )
        db.execute(
            "INSERT INTO conversations (id, kind, title, created_by, last_seq, created_at)"
            " VALUES (1, 'group', 'Book club', 1, 1, ?)",
            (NOW,),
        )
        db.execute("INSERT INTO memberships VALUES (1, 1, ?), (1, 2, ?)", (NOW, NOW))
        db.execute(
            "INSERT INTO messages (id, conversation_id, seq, sender_id, text, created_at)"
            " VALUES (1, 1, 1, 1, 'hi', ?)",
            (NOW,),
        )
        db.execute(
            "INSERT INTO inbox_entries (user_id, seq, type, conversation_id, message_id,"
            " created_at) VALUES (2, 1, 'message', 1, 1, ?)",
            (NOW,),
        )


def counts(path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        return {
            table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in TABLES
        }


@pytest.mark.parametrize("start", ["0001", "0002", "0003"])
def test_sqlite_migrations_up_and_down_keep_every_row(tmp_path, start):
    """Recreating a table is a DROP TABLE: with foreign keys enforced, that
    deleted every row referring to it (ON DELETE CASCADE) — 0004 emptied
    memberships, messages and inbox entries, 0002 every device."""
    path = tmp_path / "parley.db"
    config = alembic_config(path)
    command.upgrade(config, start)
    fill(path)
    before = counts(path)
    assert before == {
        table: 1 if table in ("conversations", "messages") else 2 for table in TABLES
    } | {"inbox_entries": 1}

    command.upgrade(config, "head")
    assert counts(path) == before
    command.downgrade(config, start)
    assert counts(path) == before
    command.upgrade(config, "head")
    assert counts(path) == before
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        indexes = {
            row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='index'")
        }
    assert {"ix_devices_user_id", "ix_memberships_user_id"} <= indexes
