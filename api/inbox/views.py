from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

from flask import Blueprint, g
from marshmallow import ValidationError

from api.auth import authenticate, authenticated, claim_auth, current_auth
from api.context import this_app, this_request
from api.inbox import actions
from api.inbox.answered import Answered, answered_early
from api.inbox.schemas import ack_schema, batch_schema, poll_query_schema
from api.metrics import POLLS
from api.presence.actions import note_poll
from api.validation import load_json, load_query

bp = Blueprint("inbox", __name__, url_prefix="/v1/inbox")

# The counter of each (mode, outcome), found once: labels() takes a lock and
# builds its key on every call.
_POLLS = {
    (mode, outcome): POLLS.labels(mode, outcome)
    for mode, outcomes in (("short", ("entries", "empty")), ("long", ("entries", "timeout")))
    for outcome in outcomes
}


@contextmanager
def _confirmable(field: str) -> Iterator[None]:
    """A confirmation past the inbox's head is a mistake in the request's ``field``."""
    try:
        yield
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
    app = this_app()
    config = app.config
    timeout = min(query["timeout"], config["LONG_POLL_CAP_S"])
    # Confirming 0 confirms nothing (cursors only move forward), and a HEAD
    # request, which must be safe, nothing at all.
    confirming = query.get("after", 0) if this_request().method != "HEAD" else 0
    with actions.polling(auth, timeout, confirming, claim) as start:
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
            if confirming:
                with _confirmable("after"):
                    actions.confirm_later(auth, after, start)
        else:
            after = actions.stored_cursor(auth, position)
        limit = query.get("limit", config["INBOX_LIMIT_DEFAULT"])
        batch = actions.poll_inbox(start, after, limit)
        if start.waiter is not None and start.waiter.logged_out:
            authenticate(auth.token_hash)  # the 401 of a token logged out
    outcome = "entries" if batch.entries else ("timeout" if timeout else "empty")
    _POLLS["long" if timeout else "short", outcome].inc()
    answer = batch_schema.dump(batch)
    if start.waiter is not None and start.waiter.replaced and not batch.entries:
        answer["replaced"] = True  # the device polls in another loop too: this one may stop
    # Made here, not by Flask from the view's dict: its checks of what a view
    # may return cost more than the JSON itself.
    response = app.json.response(answer)
    if timeout and batch.entries:  # it ended before its time
        ended = Answered(auth, start.waiter, noted)
        response.call_on_close(partial(answered_early, app, ended))
    return response


@bp.post("/ack")
@authenticated
def ack():
    """Confirm everything up to ``seq`` without fetching."""
    seq = load_json(ack_schema)["seq"]
    auth = current_auth()
    with _confirmable("seq"):
        return {"cursor": actions.do_confirm(auth, seq, actions.read_position(auth))}
