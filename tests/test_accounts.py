from sqlalchemy import select

from api.accounts.models import Device, User
from tests.factories import (
    PASSWORD,
    log_in,
    message_texts,
    open_direct,
    poll,
    scaled_only,
    send,
    sign_up,
)


def test_sign_up_log_in_and_see_my_profile(client):
    created = client.post(
        "/v1/users", json={"username": "Alice", "password": PASSWORD, "display_name": "Alice A."}
    )
    assert created.status_code == 201
    assert created.get_json()["username"] == "alice"
    assert "password" not in created.get_json()

    alice = log_in(client, "ALICE")
    me = client.get("/v1/users/me", headers=alice.auth).get_json()
    assert me == {**created.get_json(), "show_presence": True}


def test_usernames_are_unique_whatever_their_case(client):
    sign_up(client, "bob")
    again = client.post("/v1/users", json={"username": "BOB", "password": PASSWORD})
    assert again.status_code == 409
    assert again.get_json()["error"]["code"] == "username_taken"


def test_wrong_password_and_unknown_user_get_the_same_answer(client):
    sign_up(client, "carol")
    wrong = client.post("/v1/sessions", json={"username": "carol", "password": "nope-nope"})
    unknown = client.post("/v1/sessions", json={"username": "nobody", "password": "nope-nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.get_json() == unknown.get_json()


def test_passwords_and_tokens_are_stored_hashed(app, client):
    dave = sign_up(client, "dave")
    with app.app_context():
        from api.db import db

        user = db.session.scalars(select(User).where(User.id == dave.id)).one()
        device = db.session.scalars(select(Device).where(Device.id == dave.device_id)).one()
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash
    assert device.token_hash != dave.token and dave.token not in device.token_hash


def test_each_login_is_a_device_and_logging_out_revokes_only_that_one(client):
    phone = sign_up(client, "erin")
    laptop = log_in(client, "erin", device_name="laptop")
    assert phone.device_id != laptop.device_id

    assert client.delete("/v1/sessions/current", headers=phone.auth).status_code == 204
    assert client.get("/v1/users/me", headers=phone.auth).status_code == 401
    assert client.get("/v1/users/me", headers=laptop.auth).status_code == 200


def test_list_my_devices_and_log_a_lost_one_out(client):
    """From the laptop, the lost phone is logged out (as its own log-out would, in
    every process); the laptop and other users' devices go on."""
    phone = sign_up(client, "erin")
    laptop = log_in(client, "erin", device_name="laptop")
    finn = sign_up(client, "finn")
    assert client.get("/v1/users/me", headers=phone.auth).status_code == 200  # token cached

    listed = client.get("/v1/sessions", headers=laptop.auth).get_json()["devices"]
    assert [(d["device_id"], d["name"], d["current"]) for d in listed] == [
        (phone.device_id, "phone", False),
        (laptop.device_id, "laptop", True),
    ]

    gone = client.delete(f"/v1/sessions/{phone.device_id}", headers=laptop.auth)
    assert gone.status_code == 204
    assert client.get("/v1/users/me", headers=phone.auth).status_code == 401
    assert client.get("/v1/users/me", headers=laptop.auth).status_code == 200
    listed = client.get("/v1/sessions", headers=laptop.auth).get_json()["devices"]
    assert [d["device_id"] for d in listed] == [laptop.device_id]

    for device_id in (phone.device_id, finn.device_id):  # gone, and not hers
        answer = client.delete(f"/v1/sessions/{device_id}", headers=laptop.auth)
        assert answer.status_code == 404
        assert answer.get_json()["error"]["code"] == "device_not_found"
    assert client.get("/v1/users/me", headers=finn.auth).status_code == 200


def test_a_lost_device_logged_out_through_a_post_with_method_override(client):
    gina = sign_up(client, "gina")
    tablet = log_in(client, "gina", device_name="tablet")
    response = client.post(
        f"/v1/sessions/{tablet.device_id}",
        headers={**gina.auth, "X-HTTP-Method-Override": "DELETE"},
    )
    assert response.status_code == 204
    assert client.get("/v1/users/me", headers=tablet.auth).status_code == 401


def test_a_logged_out_device_id_is_never_given_to_a_new_log_in(client, pair):
    """The newest device logs out: the next log-in, by anyone, gets a new id, and
    its first poll (from its stored cursor) has every entry waiting for it. With
    the id given again, the new device went on from the cursor its predecessor
    had confirmed, skipping as many of its own entries."""
    ann, ben, cid = pair
    for text in ("one", "two", "three"):
        send(client, ann, cid, text)
    cursor = poll(client, ben)["cursor"]
    poll(client, ben, after=cursor)  # confirmed
    assert client.delete("/v1/sessions/current", headers=ben.auth).status_code == 204

    cat = sign_up(client, "cat")
    assert cat.device_id > ben.device_id
    send(client, ann, open_direct(client, ann, cat), "welcome")
    assert message_texts(poll(client, cat)) == ["welcome"]


def test_a_new_device_goes_by_its_stored_cursor_whatever_its_id_had_cached(app, client, pair):
    """What a cache still holds under an id (a device deleted before its table
    stopped reusing ids, a Redis key outliving a database) does not move a new
    device's cursor."""
    ann, ben, cid = pair
    send(client, ann, cid, "one")
    next_device_id = ben.device_id + 1
    app.extensions["parley.hub"].hints.raise_to(
        {f"{app.extensions['parley.hub'].keys.prefix}cursor:{next_device_id}": 5}, ttl=60
    )
    tablet = log_in(client, "ben", device_name="tablet")
    assert tablet.device_id == next_device_id
    assert message_texts(poll(client, tablet)) == ["one"]


@scaled_only
def test_a_revoked_token_is_refused_by_every_process(make_app):
    first, second = make_app().test_client(), make_app().test_client()
    frank = sign_up(first, "frank")
    assert second.get("/v1/users/me", headers=frank.auth).status_code == 200  # cached there now
    assert first.delete("/v1/sessions/current", headers=frank.auth).status_code == 204
    assert second.get("/v1/users/me", headers=frank.auth).status_code == 401


def test_logout_through_a_post_with_method_override(client):
    gina = sign_up(client, "gina")
    response = client.post(
        "/v1/sessions/current", headers={**gina.auth, "X-HTTP-Method-Override": "DELETE"}
    )
    assert response.status_code == 204
    assert client.get("/v1/users/me", headers=gina.auth).status_code == 401


def test_look_users_up_by_id_and_username(client):
    hank = sign_up(client, "hank")
    ivy = sign_up(client, "ivy")
    by_id = client.get(f"/v1/users/{ivy.id}", headers=hank.auth)
    assert by_id.get_json()["username"] == "ivy"
    found = client.get("/v1/users", query_string={"username": "IVY"}, headers=hank.auth)
    assert [u["id"] for u in found.get_json()["users"]] == [ivy.id]
    none = client.get("/v1/users", query_string={"username": "zed"}, headers=hank.auth)
    assert none.get_json()["users"] == []
    near = client.get("/v1/users", query_string={"username": "ivy\n"}, headers=hank.auth)
    assert near.get_json()["users"] == []
    missing = client.get("/v1/users/999999", headers=hank.auth)
    assert missing.status_code == 404
