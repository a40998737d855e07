import logging
from functools import partial

from flask import Blueprint, Flask, current_app, g, make_response
from marshmallow import ValidationError

from api.auth import Auth, authenticate, authenticated, claim_auth, current_auth
from api.inbox import actions
from api.inbox.schemas import ack_schema, batch_schema, poll_query_schema
from api.metrics import POLLS
from api.presence.actions import note_poll
from api.validation import load_json, load_query

log = logging.getLogger(__name__)
bp = Blueprint("inbox", __name__, url_prefix="/v1/inbox")


def _confirm(seq: int, field: str, position: actions.Position) -> int:
    try:
        return actions.do_confirm(current_auth(), seq, position)
    except actions.CursorOutOfRange as exc:
        raise ValidationError({field: ["Beyond the newest entry of your inbox."]}) from exc


@bp.get("")
def poll():
    """Entries after ``after`` (default: this device's stored cursor); waits up to ``timeout``.

    A token this process verified before is confirmed in the start's round trip
    (by the presence note), not in one of its own.
    """
    auth, claim = claim_auth()
    g.auth = auth  # for current_auth()
    try:
        query = load_query(poll_query_schema)
    except ValidationError:
        if claim is not None:  # not confirmed yet: a logged-out token answers 401, not 422
            authenticate(auth.token_hash)
        raise
    config = current_app.config
    timeout = min(query["timeout"], config["LONG_POLL_CAP_S"])
    with actions.polling(auth, timeout) as start:
        # Noted as held to its end: a short poll, or a long one that runs out its time.
        noted = note_poll(auth, holds_for=timeout, trip=start.trip, claim=claim)
        position = start.send()
        if claim is not None and not claim.confirmed:
            # Logged out, expired from the cache, or Redis failed: check it as any
            # request would (401, or the same device), then note the poll.
            authenticate(auth.token_hash)
            noted = note_poll(auth, holds_for=timeout)
        if "after" in query:
            after = query["after"]
            if after:  # confirming 0 confirms nothing (cursors only move forward)
                _confirm(after, "after", position)
        else:
            after = actions.stored_cursor(auth, position)
        limit = query.get("limit", config["INBOX_LIMIT_DEFAULT"])
        batch = actions.poll_inbox(start, after, timeout, limit)
    outcome = "entries" if batch.entries else ("timeout" if timeout else "empty")
    POLLS.labels("long" if timeout else "short", outcome).inc()
    response = make_response(batch_schema.dump(batch))
    if timeout and batch.entries:  # it ended before its time
        answered = partial(_note_answered, current_app._get_current_object(), auth, noted)
        response.call_on_close(answered)
    return response


def _note_answered(app: Flask, auth: Auth, noted: float) -> None:
    """A long poll answered before its time: its device is last seen now, not at
    the end of the time its start ``noted``. Noted once the answer is out: the
    Redis round trip (and its wait for a turn of the worker) is not the
    delivery's. By then the client may have polled again: the note then leaves
    that newer poll's deadline alone."""
    with app.app_context():
        try:
            note_poll(auth, holds_for=0, replacing=noted)
        except Exception:  # the answer is out: nothing to do but say so
            log.exception("a long poll's early end was not noted")


@bp.post("/ack")
@authenticated
def ack():
    """Confirm everything up to ``seq`` without fetching."""
    seq = load_json(ack_schema)["seq"]
    return {"cursor": _confirm(seq, "seq", actions.read_position(current_auth()))}
