from flask import Blueprint

from api.accounts.actions import check_users_exist
from api.auth import authenticated
from api.db import db
from api.presence.actions import presence_of
from api.presence.schemas import presence_list_schema, presence_query_schema
from api.validation import load_query

bp = Blueprint("presence", __name__, url_prefix="/v1/presence")


@bp.get("")
@authenticated
def presence():
    """Whether each user is online, and when they were last seen (if they show it)."""
    user_ids = load_query(presence_query_schema)["user_ids"]
    with db.statements() as session:
        check_users_exist(session, set(user_ids), field="user_ids")
        states = presence_of(session, user_ids)
    return presence_list_schema.dump(
        {"presence": [{"user_id": uid, **states[uid]} for uid in user_ids]}
    )
