from flask import Blueprint
from marshmallow import ValidationError

from api.admission import goes_ahead
from api.auth import authenticated, claimed, confirm_claim, current_auth
from api.context import this_app
from api.conversations.actions import access_conversation
from api.db import db
from api.messages import actions
from api.messages.schemas import (
    history_page_schema,
    history_query_schema,
    message_schema,
)
from api.metrics import SENDS
from api.validation import idempotency_key_header, load_json, load_query

bp = Blueprint("messages", __name__, url_prefix="/v1/conversations/<id:conversation_id>")


def _client_msg_id(body: dict) -> str | None:
    """The idempotency key, from the body or the ``Idempotency-Key`` header (same if both)."""
    in_body = body.get("client_msg_id")
    header = idempotency_key_header()
    if header is None:
        return in_body
    if in_body not in (None, header):
        raise ValidationError({"client_msg_id": ["Differs from the Idempotency-Key header."]})
    return header


@bp.post("/messages")
@goes_ahead
@claimed
def send_message(conversation_id: int):
    """Send a message; a retry with the same client_msg_id returns the original (200).

    Stored only if the token is still the device's (the send's statement checks
    it); a replay checks it apart."""
    body = load_json(message_schema)
    message, created = actions.do_send_message(
        conversation_id, current_auth(), body["text"], _client_msg_id(body)
    )
    if created:
        SENDS.inc()
    else:
        confirm_claim()
    return message_schema.dump(message), 201 if created else 200


@bp.get("/messages")
@authenticated
def history(conversation_id: int):
    """A page of the conversation's history, oldest first."""
    query = load_query(history_query_schema)
    limit = query.get("limit", this_app().config["HISTORY_LIMIT_DEFAULT"])
    with db.statements() as session:
        access_conversation(session, conversation_id, current_auth().user_id)
        messages, has_more = actions.list_messages(
            session, conversation_id, query.get("before"), query.get("after"), limit
        )
        return history_page_schema.dump({"messages": messages, "has_more": has_more})
