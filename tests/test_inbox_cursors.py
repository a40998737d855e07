"""Confirmations that come at once share one statement: each device's cursor in it
moves as its confirmation alone would move it, forward only."""

from sqlalchemy import event

from api.db import db
from api.inbox.actions import Confirm, write_cursors
from tests.factories import log_in, message_texts, open_direct, poll, send, sign_up


def write(app, confirms: list[Confirm]) -> tuple[list[int], int]:
    """The cursors answered, and how many statements wrote them."""
    statements: list[str] = []

    def note(_conn, _cursor, statement, _params, _context, _many) -> None:
        statements.append(statement)

    engine = db.engine(app)
    event.listen(engine, "after_cursor_execute", note)
    try:
        with app.app_context():
            cursors = write_cursors(confirms)
    finally:
        event.remove(engine, "after_cursor_execute", note)
    return cursors, len([s for s in statements if "UPDATE devices" in s])


def test_confirmations_written_together_move_each_cursor_as_alone(app, client):
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    laptop = log_in(client, "ann", device_name="laptop")
    direct = open_direct(client, ann, ben)
    for text in ("m1", "m2", "m3"):
        send(client, ben, direct, text)

    cursors, statements = write(
        app,
        [
            Confirm(ann.device_id, 2),
            Confirm(ben.device_id, 3),
            Confirm(ann.device_id, 1),  # the same phone again, behind: it keeps 2
            Confirm(laptop.device_id, 3),
        ],
    )

    assert cursors == [2, 3, 2, 3]
    assert statements == 1
    # Each device resumes from its own stored cursor.
    assert message_texts(poll(client, ann)) == ["m3"]
    assert message_texts(poll(client, laptop)) == []
    assert message_texts(poll(client, ben)) == []


def test_a_cursor_never_moves_back(app, client):
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    direct = open_direct(client, ann, ben)
    for text in ("m1", "m2"):
        send(client, ben, direct, text)
    write(app, [Confirm(ann.device_id, 2)])

    cursors, _ = write(app, [Confirm(ann.device_id, 1)])

    assert cursors == [2]
    assert message_texts(poll(client, ann)) == []
