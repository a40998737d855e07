"""Sign-up, log-in, a user's devices and log-out."""

import logging
from typing import Any

import redis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.accounts.models import Device, User
from api.auth import Auth, new_token, remember_token, revoke_cached_token
from api.context import this_app
from api.errors import ApiError
from api.hub import coordinator
from api.inbox.actions import remember_new_cursor
from api.inbox.heads import remember_heads
from api.presence.actions import do_sync_presence

log = logging.getLogger(__name__)

# Verifying against this when the user does not exist keeps the answer's
# timing from telling which usernames are taken.
_DUMMY_PASSWORD = "not-a-real-password"


def init_password_hasher(app) -> None:
    app.extensions["parley.passwords"] = PasswordHasher(
        time_cost=app.config["ARGON2_TIME_COST"],
        memory_cost=app.config["ARGON2_MEMORY_KIB"],
        parallelism=app.config["ARGON2_PARALLELISM"],
    )
    app.extensions["parley.dummy_hash"] = app.extensions["parley.passwords"].hash(_DUMMY_PASSWORD)


def _hasher() -> PasswordHasher:
    return this_app().extensions["parley.passwords"]


def canonical_username(username: str) -> str:
    """Usernames are unique without regard to case: 'Alice' and 'alice' are one user."""
    return username.lower()


def do_sign_up(session: Session, username: str, password: str, display_name: str | None) -> User:
    user = User(
        username=canonical_username(username),
        display_name=display_name or username,
        password_hash=_hasher().hash(password),
        inbox_seq=0,
    )
    session.add(user)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise ApiError(409, "username_taken", f"The username '{username}' is taken.") from exc
    return user


def do_log_in(
    session: Session, username: str, password: str, device_name: str
) -> tuple[Device, str, User]:
    """Check the password and open a new device with its own token and cursor."""
    user = session.scalars(
        select(User).where(User.username == canonical_username(username))
    ).first()
    if not _password_matches(user, password):
        raise ApiError(401, "invalid_credentials", "Wrong username or password.")
    if _hasher().check_needs_rehash(user.password_hash):
        user.password_hash = _hasher().hash(password)
    token, token_hash = new_token()
    # A new device starts at the oldest entry still kept: it receives everything
    # waiting in the inbox, and the history endpoint has the rest.
    device = Device(
        user_id=user.id, name=device_name, token_hash=token_hash, cursor=user.inbox_floor
    )
    session.add(device)
    session.commit()
    _remember_device(Auth(device.id, user.id, token_hash), device.cursor, user.inbox_seq)
    return device, token, user


def _remember_device(auth: Auth, cursor: int, head: int) -> None:
    """Cache the new token, its cursor and the inbox head in one round trip, so
    that the device's first poll (often right after the log-in) costs what any
    other does: no database query when nothing is new."""
    trip = coordinator().trip()
    remember_token(auth, trip)
    remember_new_cursor(auth, cursor, trip)
    remember_heads({auth.user_id: head}, trip)
    trip.send()


def _password_matches(user: User | None, password: str) -> bool:
    stored = user.password_hash if user else this_app().extensions["parley.dummy_hash"]
    try:
        _hasher().verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False
    return user is not None


def do_log_out(session: Session, auth: Auth) -> None:
    """Delete the device; its cached token is revoked and its held polls end (401),
    in every process, in one round trip."""
    session.execute(delete(Device).where(Device.id == auth.device_id))
    session.commit()
    coordinating = coordinator()
    trip = coordinating.trip()
    revoke_cached_token(auth.token_hash, trip)
    coordinating.hub.log_out(auth.device_id, trip)
    trip.send()


def list_devices(session: Session, auth: Auth) -> list[dict[str, Any]]:
    """The user's devices (their log-ins), oldest first; ``current``: the one asking."""
    rows = session.execute(
        select(Device.id, Device.name, Device.created_at)
        .where(Device.user_id == auth.user_id)
        .order_by(Device.id)
    )
    return [
        {
            "device_id": row.id,
            "name": row.name,
            "created_at": row.created_at,
            "current": row.id == auth.device_id,
        }
        for row in rows
    ]


def do_log_out_device(session: Session, auth: Auth, device_id: int) -> None:
    """Log out another of the user's devices (a lost phone), as its own log-out
    would; 404 for a device that is not the user's, or no longer exists."""
    token_hash = session.scalar(
        select(Device.token_hash).where(Device.id == device_id, Device.user_id == auth.user_id)
    )
    if token_hash is None:
        raise ApiError(404, "device_not_found", f"You have no device {device_id}.")
    do_log_out(session, Auth(device_id, auth.user_id, token_hash))


def access_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise ApiError(404, "user_not_found", f"No user has id {user_id}.")
    return user


def find_users_by_username(session: Session, username: str) -> list[User]:
    return list(session.scalars(select(User).where(User.username == canonical_username(username))))


def check_users_exist(session: Session, user_ids: set[int], field: str = "member_ids") -> None:
    """422 naming the ids (of request field ``field``) that are nobody."""
    found = set(session.scalars(select(User.id).where(User.id.in_(user_ids))))
    missing = sorted(user_ids - found)
    if missing:
        raise ApiError(422, "unknown_users", "Some ids are not users.", {field: missing})


def do_update_me(session: Session, user_id: int, changes: dict) -> User:
    """Change my profile; hiding or showing presence tells my contacts at once."""
    user = access_user(session, user_id)
    for name, value in changes.items():
        setattr(user, name, value)
    session.commit()
    if "show_presence" in changes:
        try:
            do_sync_presence(session, user_id)
        except redis.RedisError as exc:
            # Saved; contacts are told at the user's next change of state.
            log.warning("presence change not announced: %s", exc)
            session.rollback()
    return user
