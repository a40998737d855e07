from concurrent.futures import ThreadPoolExecutor

from tests.factories import create_group, of_type, open_direct, poll, scaled_only, sign_up


def test_a_direct_chat_is_opened_once_whoever_opens_it(client):
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    first = client.post(
        "/v1/conversations", json={"kind": "direct", "member_ids": [ben.id]}, headers=ann.auth
    )
    assert first.status_code == 201
    assert first.get_json()["title"] is None
    back = client.post(
        "/v1/conversations", json={"kind": "direct", "member_ids": [ann.id]}, headers=ben.auth
    )
    assert back.status_code == 200
    assert back.get_json()["id"] == first.get_json()["id"]
    assert {m["id"] for m in back.get_json()["members"]} == {ann.id, ben.id}


@scaled_only
def test_concurrent_opens_of_one_pair_make_one_conversation(make_app):
    clients = [make_app().test_client() for _ in range(4)]
    ann, ben = sign_up(clients[0], "ann"), sign_up(clients[0], "ben")
    with ThreadPoolExecutor(8) as pool:
        ids = set(
            pool.map(
                lambda i: open_direct(clients[i % 4], (ann, ben)[i % 2], (ben, ann)[i % 2]),
                range(16),
            )
        )
    assert len(ids) == 1


def test_a_direct_chat_needs_one_existing_other_user(client):
    ann = sign_up(client, "ann")
    for member_ids, status in (([ann.id], 422), ([424242], 422), ([], 422)):
        response = client.post(
            "/v1/conversations", json={"kind": "direct", "member_ids": member_ids}, headers=ann.auth
        )
        assert response.status_code == status, member_ids


def test_a_group_tells_its_members_they_joined(client):
    ann, ben, cid = sign_up(client, "ann"), sign_up(client, "ben"), None
    cid = create_group(client, ann, [ben], title="Book club")
    (entry,) = of_type(poll(client, ben), "member_joined")
    assert entry["conversation_id"] == cid
    assert sorted(entry["user_ids"]) == sorted([ann.id, ben.id])
    assert entry["actor_id"] == ann.id

    detail = client.get(f"/v1/conversations/{cid}", headers=ben.auth).get_json()
    assert detail["title"] == "Book club" and detail["kind"] == "group"
    listed = client.get("/v1/conversations", headers=ben.auth).get_json()["conversations"]
    assert [c["id"] for c in listed] == [cid]


def create_group_with_key(client, owner, members, key: str, title: str = "Book club"):
    body = {"kind": "group", "title": title, "member_ids": [m.id for m in members]}
    return client.post(
        "/v1/conversations", json=body, headers={**owner.auth, "Idempotency-Key": key}
    )


def test_a_group_creation_retried_with_its_key_makes_one_group(client):
    """The first answer was lost on the way: the retry gets the same group (200),
    and the members are told of one group."""
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    first = create_group_with_key(client, ann, [ben], "club-1")
    retry = create_group_with_key(client, ann, [ben], "club-1")
    assert (first.status_code, retry.status_code) == (201, 200)
    assert retry.get_json() == first.get_json()
    listed = client.get("/v1/conversations", headers=ben.auth).get_json()["conversations"]
    assert [c["id"] for c in listed] == [first.get_json()["id"]]
    assert len(of_type(poll(client, ben), "member_joined")) == 1

    other = create_group_with_key(client, ann, [ben], "club-2")  # a new key, a new group
    assert other.status_code == 201 and other.get_json()["id"] != first.get_json()["id"]


def test_a_group_key_reused_for_another_group_is_a_conflict(client):
    ann, ben, cat = (sign_up(client, name) for name in ("ann", "ben", "cat"))
    first = create_group_with_key(client, ann, [ben], "k").get_json()
    for title, members in (("Chess club", [ben]), ("Book club", [ben, cat])):
        answer = create_group_with_key(client, ann, members, "k", title=title)
        assert answer.status_code == 409
        error = answer.get_json()["error"]
        assert (error["code"], error["details"]) == (
            "idempotency_key_reused",
            {"conversation_id": first["id"]},
        )
    # Keys belong to their user: Ben's "k" is his own.
    assert create_group_with_key(client, ben, [cat], "k").status_code == 201


def test_a_group_creation_retried_after_leaving_the_group_shows_nothing_of_it(client):
    """Not who is in it now: the retry is 404, as the group itself is to her."""
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    first = create_group_with_key(client, ann, [ben], "k").get_json()
    left = client.delete(f"/v1/conversations/{first['id']}/members/{ann.id}", headers=ann.auth)
    assert left.status_code == 204

    retry = create_group_with_key(client, ann, [ben], "k")
    assert retry.status_code == 404
    assert retry.get_json()["error"]["code"] == "conversation_not_found"


def test_a_bad_idempotency_key_is_refused_with_nothing_created(client):
    ann, ben = sign_up(client, "ann"), sign_up(client, "ben")
    answer = create_group_with_key(client, ann, [ben], "x" * 65)
    assert answer.status_code == 422
    assert "Idempotency-Key" in answer.get_json()["error"]["details"]
    assert client.get("/v1/conversations", headers=ann.auth).get_json()["conversations"] == []


def test_concurrent_retries_of_a_group_creation_make_one_group(make_app):
    clients = [make_app().test_client() for _ in range(4)]
    ann, ben = sign_up(clients[0], "ann"), sign_up(clients[0], "ben")
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda i: create_group_with_key(clients[i % 4], ann, [ben], "once"), range(8))
        )
    assert sorted(a.status_code for a in answers) == [200] * 7 + [201]
    assert len({a.get_json()["id"] for a in answers}) == 1


def test_groups_stop_at_the_size_limit(make_app):
    client = make_app(GROUP_SIZE_LIMIT=3).test_client()
    people = [sign_up(client, f"user{i}") for i in range(5)]
    owner = people[0]
    too_big = client.post(
        "/v1/conversations",
        json={"kind": "group", "title": "big", "member_ids": [p.id for p in people[1:4]]},
        headers=owner.auth,
    )
    assert too_big.status_code == 409
    assert too_big.get_json()["error"]["code"] == "group_full"

    cid = create_group(client, owner, people[1:2])
    added = client.post(
        f"/v1/conversations/{cid}/members", json={"member_ids": [people[2].id]}, headers=owner.auth
    )
    assert added.status_code == 200 and len(added.get_json()["members"]) == 3
    full = client.post(
        f"/v1/conversations/{cid}/members", json={"member_ids": [people[3].id]}, headers=owner.auth
    )
    assert full.status_code == 409


@scaled_only
def test_concurrent_adds_never_pass_the_size_limit(make_app):
    clients = [make_app(GROUP_SIZE_LIMIT=4).test_client() for _ in range(3)]
    people = [sign_up(clients[0], f"user{i}") for i in range(10)]
    owner = people[0]
    cid = create_group(clients[0], owner, [])

    def add(i):
        return (
            clients[i % 3]
            .post(
                f"/v1/conversations/{cid}/members",
                json={"member_ids": [people[i].id]},
                headers=owner.auth,
            )
            .status_code
        )

    with ThreadPoolExecutor(9) as pool:
        statuses = list(pool.map(add, range(1, 10)))
    assert statuses.count(200) == 3 and statuses.count(409) == 6
    members = clients[0].get(f"/v1/conversations/{cid}", headers=owner.auth).get_json()["members"]
    assert len(members) == 4


def test_members_leave_and_the_creator_removes(client):
    ann, ben, cat = (sign_up(client, n) for n in ("ann", "ben", "cat"))
    cid = create_group(client, ann, [ben, cat])
    refused = client.delete(f"/v1/conversations/{cid}/members/{cat.id}", headers=ben.auth)
    assert refused.status_code == 403
    assert (
        client.delete(f"/v1/conversations/{cid}/members/{ben.id}", headers=ben.auth).status_code
        == 204
    )
    assert (
        client.delete(f"/v1/conversations/{cid}/members/{cat.id}", headers=ann.auth).status_code
        == 204
    )

    assert client.get(f"/v1/conversations/{cid}", headers=cat.auth).status_code == 404
    left = [e for e in poll(client, cat)["entries"] if e["type"] == "member_left"]
    assert [e["user_ids"] for e in left] == [[ben.id], [cat.id]]
    again = client.delete(f"/v1/conversations/{cid}/members/{cat.id}", headers=ann.auth)
    assert again.status_code == 404


def test_direct_chats_have_fixed_members(client):
    ann, ben, cat = (sign_up(client, n) for n in ("ann", "ben", "cat"))
    cid = open_direct(client, ann, ben)
    response = client.post(
        f"/v1/conversations/{cid}/members", json={"member_ids": [cat.id]}, headers=ann.auth
    )
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "not_a_group"
