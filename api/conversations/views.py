from flask import Blueprint
from sqlalchemy.orm import Session

from api.accounts.schemas import user_schema
from api.auth import authenticated, current_auth
from api.conversations import actions
from api.conversations.models import DIRECT, Conversation
from api.conversations.schemas import (
    conversation_detail_schema,
    conversation_schema,
    conversations_schema,
    new_conversation_schema,
    new_members_schema,
)
from api.db import db
from api.presence.actions import presence_of
from api.validation import idempotency_key_header, load_json

bp = Blueprint("conversations", __name__, url_prefix="/v1/conversations")


def _with_members(session: Session, conversations) -> list[dict]:
    members = actions.members_by_conversation(session, [c.id for c in conversations])
    columns = Conversation.__table__.columns.keys()
    return [
        {**{name: getattr(c, name) for name in columns}, "members": members[c.id]}
        for c in conversations
    ]


@bp.post("")
@authenticated
def create_conversation():
    """Open the direct chat with someone (200 if it exists) or create a group (201;
    200 for a retry with the same Idempotency-Key)."""
    data = load_json(new_conversation_schema)
    key = idempotency_key_header()  # a direct chat's opening needs none: it is get-or-create
    user_id = current_auth().user_id
    if data["kind"] == DIRECT:
        conversation, created = actions.do_open_direct(db.session, user_id, data["member_ids"][0])
    else:
        conversation, created = actions.do_create_group(
            db.session, user_id, data["title"], set(data["member_ids"]), key
        )
    with db.statements() as session:
        answer = conversation_schema.dump(_with_members(session, [conversation])[0])
    return answer, 201 if created else 200


@bp.get("")
@authenticated
def my_conversations():
    """The conversations I belong to, newest first, with their members."""
    with db.statements() as session:
        conversations = actions.list_conversations(session, current_auth().user_id)
        return {"conversations": conversations_schema.dump(_with_members(session, conversations))}


@bp.get("/<id:conversation_id>")
@authenticated
def get_conversation(conversation_id: int):
    """One conversation of mine with its members and their presence."""
    with db.statements() as session:
        conversation = actions.access_conversation(session, conversation_id, current_auth().user_id)
        detail = _with_members(session, [conversation])[0]
        states = presence_of(session, [member.id for member in detail["members"]])
    detail["members"] = [
        {
            **{name: getattr(member, name) for name in user_schema.dump_fields},
            "presence": states[member.id],
        }
        for member in detail["members"]
    ]
    return conversation_detail_schema.dump(detail)


@bp.post("/<id:conversation_id>/members")
@authenticated
def add_members(conversation_id: int):
    """Add people to a group, within the group size limit."""
    data = load_json(new_members_schema)
    conversation = actions.do_add_members(
        db.session, conversation_id, current_auth().user_id, set(data["member_ids"])
    )
    with db.statements() as session:
        return conversation_schema.dump(_with_members(session, [conversation])[0])


@bp.delete("/<id:conversation_id>/members/<id:user_id>")
@authenticated
def remove_member(conversation_id: int, user_id: int):
    """Leave a group, or remove someone from a group you created."""
    actions.do_remove_member(db.session, conversation_id, current_auth().user_id, user_id)
    return "", 204
