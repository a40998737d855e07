import re

from tests.factories import (
    create_group,
    message_texts,
    open_direct,
    poll,
    postgres_protocol,
    redis_round_trips,
    scaled_only,
    send,
    sign_up,
)


def test_send_and_read_history_in_conversation_order(client):
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    cid = open_direct(client, ann, ben)
    sent = [send(client, (ann, ben)[i % 2], cid, f"message {i}") for i in range(5)]
    assert all(r.status_code == 201 for r in sent)
    assert [r.get_json()["seq"] for r in sent] == [1, 2, 3, 4, 5]
    assert sent[1].get_json()["sender_id"] == ben.id

    history = client.get(f"/v1/conversations/{cid}/messages", headers=ben.auth).get_json()
    assert [m["text"] for m in history["messages"]] == [f"message {i}" for i in range(5)]
    assert history["has_more"] is False


@scaled_only
def test_a_send_waits_for_postgresql_once_holding_its_locks(app, client):
    """A send bumps the conversation's counter (locking it), locks the members and
    writes the message and every entry in one transaction whose statements go out
    together: the locks are not held across the app's round trips, and the one
    answer finds the transaction committed."""
    ann, ben, cy = sign_up(client, "ann"), sign_up(client, "ben"), sign_up(client, "cyd")
    gid = create_group(client, ann, [ben, cy])
    with postgres_protocol(app) as traced:
        assert send(client, ann, gid, "hello").status_code == 201
    protocol = executed_as_prepared(traced)
    bump = next(
        n
        for n, (direction, _, text) in enumerate(protocol)
        if direction == "F" and "UPDATE conversations" in text
    )
    answered = next(
        n for n, (direction, *_) in enumerate(protocol) if n > bump and direction == "B"
    )
    sent_before_an_answer = " ".join(text for _, _, text in protocol[bump:answered])
    assert "FOR NO KEY UPDATE" in sent_before_an_answer
    assert "INSERT INTO messages" in sent_before_an_answer
    assert "INSERT INTO inbox_entries" in sent_before_an_answer
    ready = [text for _, kind, text in protocol[answered:] if kind == "ReadyForQuery"]
    assert ready[0] == "I"  # idle: committed, no transaction left open
    assert [message_texts(poll(client, member)) for member in (ben, cy)] == [["hello"], ["hello"]]


def executed_as_prepared(protocol: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """``protocol`` without the round trips that prepare statements, and with each
    ``EXECUTE`` of a statement prepared there shown as that statement."""
    statements: dict[str, str] = {}
    shown, preparing = [], False
    for direction, kind, text in protocol:
        if direction == "F" and text.startswith('"PREPARE '):
            statements.update(re.findall(r"PREPARE (\w+) AS (.*?)(?=;\s*PREPARE |\"$)", text, re.S))
            preparing = True
        elif preparing:
            preparing = kind != "ReadyForQuery"
        else:
            executed = re.sub(r"EXECUTE (\w+)\(", lambda m: f"{statements[m[1]]} (", text)
            shown.append((direction, kind, executed))
    return shown


def test_history_pages_back_and_forward(client):
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    cid = open_direct(client, ann, ben)
    for i in range(1, 8):
        send(client, ann, cid, f"m{i}")

    def page(**query):
        response = client.get(
            f"/v1/conversations/{cid}/messages", query_string=query, headers=ann.auth
        )
        body = response.get_json()
        return [m["seq"] for m in body["messages"]], body["has_more"]

    assert page(limit=3) == ([5, 6, 7], True)
    assert page(limit=3, before=5) == ([2, 3, 4], True)
    assert page(limit=3, before=2) == ([1], False)
    assert page(limit=3, after=0) == ([1, 2, 3], True)
    assert page(limit=3, after=5) == ([6, 7], False)
    assert page(after=2, before=5) == ([3, 4], False)


def test_a_retry_returns_the_original_message_never_a_twin(client):
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    cid = open_direct(client, ann, ben)
    first = send(client, ann, cid, "once", client_msg_id="c-1")
    again = send(client, ann, cid, "once", client_msg_id="c-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.get_json() == first.get_json()

    by_header = client.post(
        f"/v1/conversations/{cid}/messages",
        json={"text": "once"},
        headers={**ann.auth, "Idempotency-Key": "c-1"},
    )
    assert by_header.status_code == 200 and by_header.get_json()["id"] == first.get_json()["id"]
    assert [e["message"]["text"] for e in poll(client, ben)["entries"]] == ["once"]


def test_an_idempotency_key_header_is_read_as_utf8(client):
    """A WSGI server hands the header's bytes over as Latin-1; the key is the
    UTF-8 text the client sent, the same as in the body."""
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    cid = open_direct(client, ann, ben)
    as_wsgi = "ключ-2".encode().decode("latin-1")
    by_header = client.post(
        f"/v1/conversations/{cid}/messages",
        json={"text": "once"},
        headers={**ann.auth, "Idempotency-Key": as_wsgi},
    )
    assert by_header.status_code == 201
    assert by_header.get_json()["client_msg_id"] == "ключ-2"
    in_both = client.post(
        f"/v1/conversations/{cid}/messages",
        json={"text": "once", "client_msg_id": "ключ-2"},
        headers={**ann.auth, "Idempotency-Key": as_wsgi},
    )
    assert in_both.status_code == 200 and in_both.get_json() == by_header.get_json()


def test_reusing_a_client_msg_id_for_other_text_is_a_conflict(client):
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    cid = open_direct(client, ann, ben)
    send(client, ann, cid, "first", client_msg_id="c-1")
    clash = send(client, ann, cid, "second", client_msg_id="c-1")
    assert clash.status_code == 409
    assert clash.get_json()["error"]["code"] == "idempotency_key_reused"


def test_client_msg_ids_belong_to_their_sender(client):
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    cid = open_direct(client, ann, ben)
    assert send(client, ann, cid, "hi", client_msg_id="same").status_code == 201
    assert send(client, ben, cid, "hi", client_msg_id="same").status_code == 201


def test_every_member_and_the_senders_other_devices_receive(client):
    from tests.factories import log_in

    ann, ben, cat = (sign_up(client, n) for n in ("ann", "ben", "cat"))
    ann_laptop = log_in(client, "ann", device_name="laptop")
    cid = create_group(client, ann, [ben, cat])
    send(client, ann, cid, "hello all")
    for device in (ann, ann_laptop, ben, cat):
        texts = [e["message"]["text"] for e in poll(client, device)["entries"] if e["message"]]
        assert texts == ["hello all"]


def test_text_is_stored_and_returned_exactly(client):
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    cid = open_direct(client, ann, ben)
    texts = [
        "👋🏽 família",
        "  spaced  ",
        "line\nbreak\ttab",
        "\u202eRTL",
        "x" * 100_000,
        "😀" * 100_000,
    ]
    for text in texts:
        response = send(client, ann, cid, text)
        assert response.status_code == 201
        assert response.get_json()["text"] == text
    history = client.get(
        f"/v1/conversations/{cid}/messages", query_string={"limit": 10}, headers=ben.auth
    ).get_json()
    assert [m["text"] for m in history["messages"]] == texts


@scaled_only
def test_a_send_from_a_device_this_process_knows_checks_its_token_in_its_statement(
    app, client, monkeypatch
):
    """The token of a device the process verified before is checked by the send's
    own statement (the device must still have it): the send's one Redis round
    trip raises the heads and wakes the members."""
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    chat = open_direct(client, ann, ben)
    assert send(client, ann, chat, "first").status_code == 201  # verified here
    with redis_round_trips(app, monkeypatch) as trips:
        assert send(client, ann, chat, "second").status_code == 201
    assert len(trips) == 1
    assert message_texts(poll(client, ben)) == ["first", "second"]
