"""Polls that read at once share one statement: each inbox's answer in it is what
reading that inbox alone gives, with its own limit, cursor and text budget."""

from sqlalchemy import event
from sqlalchemy.engine.default import CACHE_HIT

from api.db import db
from api.errors import ApiError
from api.inbox.reading import Batch, Wanted, read_inboxes
from tests.factories import create_group, open_direct, send, sign_up
from tests.test_inbox_pruning import age_entries, prune

BUDGET = 300_000


def read(app, wanted: list[Wanted], budget: int = BUDGET) -> list[Batch | ApiError]:
    with app.app_context():
        return read_inboxes(wanted, budget)


def texts(answer: Batch) -> list[str]:
    return [entry["message"]["text"] for entry in answer.entries if entry["message"]]


def test_one_statement_answers_each_inbox_as_if_read_alone(app, client):
    ann, ben, cat, dan = (sign_up(client, name) for name in ("ann", "ben", "cat", "dan"))
    direct = open_direct(client, ann, ben)
    group = create_group(client, ann, [ben, cat])
    for text in ("d1", "d2", "d3"):
        send(client, ann, direct, text)
    send(client, cat, group, "g1")
    wanted = [
        Wanted(ben.id, 0, 100),
        Wanted(ben.id, 3, 1),  # the same inbox for another device, further on
        Wanted(cat.id, 0, 100),
        Wanted(dan.id, 0, 100),  # nothing to read
    ]

    together = read(app, wanted)

    assert together == [read(app, [one])[0] for one in wanted]
    whole, further, cats, dans = together
    assert texts(whole) == ["d1", "d2", "d3", "g1"] and not whole.has_more
    assert len(further.entries) == 1 and further.has_more
    assert further.entries[0]["seq"] == 4 and further.cursor == 4
    assert texts(cats) == ["g1"]
    assert dans == Batch(cursor=0)


def test_each_inbox_has_its_own_text_budget(app, client):
    """Every inbox's first text comes, whatever came before it in the statement."""
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    direct = open_direct(client, ann, ben)
    send(client, ann, direct, "twelve chars")
    send(client, ann, direct, "and some more")

    answers = read(app, [Wanted(ann.id, 0, 100), Wanted(ben.id, 0, 100)], budget=20)

    assert [texts(answer) for answer in answers] == [["twelve chars"], ["twelve chars"]]
    assert all(answer.has_more for answer in answers)


def test_a_pruned_cursor_is_told_to_its_poll_alone(app, client):
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    direct = open_direct(client, ann, ben)
    for text in ("m1", "m2", "m3"):
        send(client, ann, direct, text)
    age_entries(app, ben.id, through_seq=2, days=40)
    prune(app)

    stale, resumed, anns = read(
        app, [Wanted(ben.id, 1, 100), Wanted(ben.id, 2, 100), Wanted(ann.id, 0, 100)]
    )

    assert isinstance(stale, ApiError) and stale.status == 410
    assert stale.details == {"oldest_cursor": 2}
    assert texts(resumed) == ["m3"]
    assert texts(anns) == ["m1", "m2", "m3"]


def test_the_read_is_compiled_once_for_any_number_of_inboxes(app, client):
    """Compiling the statement costs several times what running it does. On
    PostgreSQL one statement reads any number of inboxes (arrays of values); on
    SQLite one is compiled for each number."""
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    compiled: list[object] = []

    def note_compiling(_conn, _cursor, statement, _params, context, _many) -> None:
        if "inbox_floor" in statement:
            compiled.append(context.cache_hit)

    engine = db.engine(app)
    event.listen(engine, "after_cursor_execute", note_compiling)
    try:
        for _ in range(2):
            read(app, [Wanted(ann.id, 0, 100)])
            read(app, [Wanted(ann.id, 0, 100), Wanted(ben.id, 0, 100)])
    finally:
        event.remove(engine, "after_cursor_execute", note_compiling)

    assert len(compiled) == 4
    if engine.dialect.name == "postgresql":
        assert compiled[1:] == [CACHE_HIT] * 3
    else:
        assert compiled[1] != CACHE_HIT
        assert compiled[2:] == [CACHE_HIT, CACHE_HIT]
