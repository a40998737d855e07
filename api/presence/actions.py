"""Noting polls, reading presence, and announcing changes to contacts."""

import logging
import time
from datetime import UTC, datetime
from functools import partial
from typing import Any

import redis
from flask import Flask
from sqlalchemy import Select, bindparam, func, select
from sqlalchemy.orm import Session, aliased

from api.accounts.models import User
from api.auth import Auth, TokenClaim
from api.context import this_app
from api.conversations.models import DIRECT, Conversation, Membership
from api.db import db
from api.hub import Coordinator, coordinator
from api.hub.trip import Trip
from api.inbox.actions import do_append_entries, lock_users, notify_inbox
from api.inbox.models import PRESENCE
from api.presence.store import LocalPresenceStore, RedisPresenceStore

log = logging.getLogger(__name__)

SWEEP_BATCH = 500  # users turned offline per sweep step; the next step takes the rest


def init_presence(app: Flask, coordinator: Coordinator) -> None:
    """The presence store: in Redis when there is one, else in this process."""
    window_s = app.config["PRESENCE_WINDOW_S"]
    if coordinator.client is None:
        store = LocalPresenceStore(window_s)
    else:
        # A device's deadline matters for one long poll plus the window at most.
        ttl = int(app.config["LONG_POLL_CAP_S"] + window_s) + 60
        store = RedisPresenceStore(coordinator.client, coordinator.keys, window_s, ttl)
    app.extensions["parley.presence"] = store
    app.extensions.setdefault("parley.clock", time.time)


def _store() -> LocalPresenceStore | RedisPresenceStore:
    return this_app().extensions["parley.presence"]


def now() -> float:
    """Seconds since the epoch, from the app's clock (tests move it by hand)."""
    return this_app().extensions["parley.clock"]()


def note_poll(
    auth: Auth,
    holds_for: float,
    trip: Trip | None = None,
    claim: TokenClaim | None = None,
    replacing: float | None = None,
) -> float:
    """Note that this device polls: it counts as online until ``holds_for`` seconds
    from now plus the window, and was last seen then; returns that deadline.
    Called when a poll starts, and when a long poll answers before its time (with
    ``replacing``, the deadline its start noted: a newer poll of the device,
    noted meanwhile, is not cut short). No database write unless the user just
    came online. With ``trip``, the note goes in it and takes effect once the
    trip is sent (else at once); with a ``claim`` too, the note is made only if
    the token is still the device's, and being made confirms the claim."""
    moment = now()
    deadline = moment + holds_for + this_app().config["PRESENCE_WINDOW_S"]
    touch = (auth.user_id, auth.device_id, deadline, moment)
    guard = (claim.key, claim.value) if claim else None
    then = partial(_noted, auth, claim)
    own_trip = trip if trip is not None else coordinator().trip()
    _store().touch_then(own_trip, then, _not_noted, *touch, guard=guard, replacing=replacing)
    if trip is None:
        own_trip.send()
    return deadline


def _noted(auth: Auth, claim: TokenClaim | None, came_online: bool | None) -> None:
    if came_online is None:  # the guard failed: the claim stays unconfirmed
        return
    if claim is not None:
        claim.confirmed = True
    if came_online:
        try:
            do_sync_presence(db.session, auth.user_id)
        except redis.RedisError as exc:
            db.session.rollback()  # and its locks: the poll goes on
            _not_noted(exc)


def _not_noted(exc: redis.RedisError) -> None:
    log.warning("presence not noted: %s", exc)  # soft state: the poll goes on


def do_sweep() -> int:
    """Turn users whose window has passed offline, announcing it; returns how many."""
    gone = _store().expire(now(), SWEEP_BATCH)
    for user_id in gone:
        do_sync_presence(db.session, user_id)
    return len(gone)


def _contacts_query() -> Select:
    """Built once: building it (two aliases of a mapped class) cost about what
    running it does, and left cyclic garbage behind for the collector."""
    mine, theirs = aliased(Membership), aliased(Membership)
    group_size = (
        select(func.count()).where(Membership.conversation_id == Conversation.id).scalar_subquery()
    )
    return (
        select(theirs.user_id)
        .join(mine, mine.conversation_id == theirs.conversation_id)
        .join(Conversation, Conversation.id == mine.conversation_id)
        .where(mine.user_id == bindparam("user_id"), theirs.user_id != bindparam("user_id"))
        .where((Conversation.kind == DIRECT) | (group_size <= bindparam("group_max")))
        .distinct()
    )


_CONTACTS = _contacts_query()


def contact_ids(session: Session, user_id: int) -> list[int]:
    """Who hears of this user's presence: direct chat partners, and members of
    groups small enough for it (a big group would multiply every change)."""
    group_max = this_app().config["PRESENCE_GROUP_MAX"]
    return sorted(session.scalars(_CONTACTS, {"user_id": user_id, "group_max": group_max}))


def do_sync_presence(session: Session, user_id: int) -> None:
    """Tell contacts the user's presence if it differs from what they were last told.

    Runs under the locks of the user and their contacts (taken together, in id
    order, like every inbox writer), so concurrent syncs announce a change once
    and in the order it happened.
    """
    contacts = contact_ids(session, user_id)
    lock_users(session, [user_id, *contacts])
    user = session.get(User, user_id, populate_existing=True)
    online, last_seen = _store().states([user_id], now())[user_id]
    shown_online = online and user.show_presence
    if last_seen is not None and not online:
        user.last_seen_at = datetime.fromtimestamp(last_seen, UTC)
    if shown_online == user.presence_announced:
        session.commit()
        return
    user.presence_announced = shown_online
    payload = {"user_id": user_id, **_visible_state(user, online, last_seen)}
    heads = do_append_entries(session, contacts, PRESENCE, None, payload=_json_ready(payload))
    session.commit()
    notify_inbox(heads)


def _visible_state(user: User, online: bool, last_seen: float | None) -> dict[str, Any]:
    if not user.show_presence:
        return {"online": False, "last_seen": None}
    seen = datetime.fromtimestamp(last_seen, UTC) if last_seen else user.last_seen_at
    return {"online": online, "last_seen": seen}


def _json_ready(payload: dict[str, Any]) -> dict[str, Any]:
    seen = payload["last_seen"]
    return {**payload, "last_seen": seen.isoformat() if seen else None}


def presence_of(session: Session, user_ids: list[int]) -> dict[int, dict[str, Any]]:
    """What others may see of each user's presence: ``{online, last_seen}``."""
    users = {u.id: u for u in session.scalars(select(User).where(User.id.in_(user_ids)))}
    try:
        states = _store().states(list(users), now())
    except redis.RedisError as exc:
        log.warning("presence unknown, showing everyone offline: %s", exc)
        states = {uid: (False, None) for uid in users}
    return {uid: _visible_state(users[uid], *states[uid]) for uid in users}
