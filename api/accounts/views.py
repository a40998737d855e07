from flask import Blueprint

from api.accounts import actions
from api.accounts.schemas import (
    devices_schema,
    log_in_schema,
    me_schema,
    me_update_schema,
    session_schema,
    user_lookup_schema,
    user_schema,
    users_schema,
)
from api.auth import authenticated, current_auth
from api.db import db
from api.validation import load_json, load_query

bp = Blueprint("accounts", __name__, url_prefix="/v1")


@bp.post("/users")
def sign_up():
    """Create an account."""
    data = load_json(user_schema)
    user = actions.do_sign_up(
        db.session, data["username"], data["password"], data.get("display_name")
    )
    return user_schema.dump(user), 201


@bp.post("/sessions")
def log_in():
    """Log in: a new device with its own bearer token and inbox cursor."""
    data = load_json(log_in_schema)
    device, token, user = actions.do_log_in(
        db.session, data["username"], data["password"], data["device_name"]
    )
    return session_schema.dump({"token": token, "device_id": device.id, "user": user}), 201


@bp.delete("/sessions/current")
@authenticated
def log_out():
    """Log this device out; its token stops working everywhere at once."""
    actions.do_log_out(db.session, current_auth())
    return "", 204


@bp.get("/sessions")
@authenticated
def list_sessions():
    """My devices (log-ins), oldest first, the one asking marked ``current``."""
    with db.statements() as session:
        return {"devices": devices_schema.dump(actions.list_devices(session, current_auth()))}


@bp.delete("/sessions/<id:device_id>")
@authenticated
def log_out_device(device_id: int):
    """Log one of my other devices out (a lost phone); its token stops working
    everywhere at once."""
    actions.do_log_out_device(db.session, current_auth(), device_id)
    return "", 204


@bp.get("/users/me")
@authenticated
def me():
    """The logged-in user's profile and settings."""
    with db.statements() as session:
        return me_schema.dump(actions.access_user(session, current_auth().user_id))


@bp.patch("/users/me")
@authenticated
def update_me():
    """Change my display name or whether others see my presence."""
    changes = load_json(me_update_schema)
    return me_schema.dump(actions.do_update_me(db.session, current_auth().user_id, changes))


@bp.get("/users/<id:user_id>")
@authenticated
def get_user(user_id: int):
    """A user's public profile."""
    with db.statements() as session:
        return user_schema.dump(actions.access_user(session, user_id))


@bp.get("/users")
@authenticated
def find_users():
    """Look a user up by username (a list: empty when nobody has it)."""
    query = load_query(user_lookup_schema)
    with db.statements() as session:
        return {
            "users": users_schema.dump(actions.find_users_by_username(session, query["username"]))
        }
