"""Bearer token → the device (and user) making the request.

A token is stored only as its SHA-256 (tokens are 256 random bits, so a fast
hash is enough; passwords get Argon2). Lookups go through the token hint so
that a poll with nothing new needs no database query. A logout writes a
"revoked" tombstone over the hint: a request that read the device just before
the logout cannot put it back (hints are filled only where absent).

A poll saves even that round trip: each process remembers whose tokens it
verified, and a poll by a remembered token goes ahead on a claim that its
start's Redis trip confirms (``TokenClaim``). The memory is never trusted on
its own, so a logout anywhere is refused everywhere at once.
"""

import hashlib
import secrets
from dataclasses import dataclass
from functools import wraps

from cachetools import LRUCache
from flask import Flask, g
from sqlalchemy import select

from api.accounts.models import Device
from api.context import this_app, this_g, this_request
from api.db import db
from api.errors import ApiError
from api.hub import coordinator
from api.hub.trip import Trip

REVOKED = "revoked"
REMEMBERED_TOKENS_MAX = 50_000  # per process; ~250 bytes each


@dataclass(frozen=True)
class Auth:
    device_id: int
    user_id: int
    token_hash: str


@dataclass
class TokenClaim:
    """That a token still belongs to the device this process verified it for.

    Confirmed in Redis, in the same trip as the poll's other commands: the cached
    token entry must still read ``value`` (a logout overwrites it, an expiry
    drops it). Until ``confirmed``, nothing may be done on the device's behalf.
    """

    key: str
    value: str
    confirmed: bool = False


def init_auth(app: Flask) -> None:
    """Remember verified tokens where a claim can be confirmed: with Redis (the
    embedded mode checks its in-process cache at no cost)."""
    client = app.extensions["parley.hub"].client
    app.extensions["parley.tokens"] = LRUCache(REMEMBERED_TOKENS_MAX) if client else None


def new_token() -> tuple[str, str]:
    """A fresh token and the hash to store."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _token_key(token_hash: str) -> str:
    return f"{coordinator().keys.prefix}tok:{token_hash}"


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def _bearer_token_hash() -> str:
    scheme, _, token = this_request().headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("Send 'Authorization: Bearer <token>' from POST /v1/sessions.")
    return hash_token(token.strip())


def _owner(auth: Auth) -> str:
    return f"{auth.device_id}:{auth.user_id}"


def claim_auth() -> tuple[Auth, TokenClaim | None]:
    """Who the bearer token belongs to, for a request that confirms it in its own
    Redis trip: the device this process last verified it for, with the claim to
    confirm; or, for a token this process does not remember, ``authenticate()``
    and no claim."""
    token_hash = _bearer_token_hash()
    remembered = this_app().extensions["parley.tokens"]
    auth = remembered.get(token_hash) if remembered is not None else None
    if auth is None:
        return authenticate(token_hash), None
    return auth, TokenClaim(_token_key(token_hash), _owner(auth))


def authenticate(token_hash: str | None = None) -> Auth:
    """The device of the request's bearer token (or of ``token_hash``); 401 if none."""
    token_hash = token_hash or _bearer_token_hash()
    remembered = this_app().extensions["parley.tokens"]
    try:
        auth = _verified(token_hash)
    except ApiError:
        if remembered is not None:  # logged out elsewhere: claims of it end here
            remembered.pop(token_hash, None)
        raise
    if remembered is not None:
        remembered[token_hash] = auth
    return auth


def _verified(token_hash: str) -> Auth:
    cached = coordinator().hints.get_many([_token_key(token_hash)])[0]
    if cached == REVOKED:
        raise _unauthorized("This token was revoked; log in again.")
    if cached:
        device_id, user_id = (int(part) for part in cached.split(":"))
        return Auth(device_id, user_id, token_hash)
    with db.statements() as session:
        row = session.execute(
            select(Device.id, Device.user_id).where(Device.token_hash == token_hash)
        ).first()
    if row is None:
        raise _unauthorized("Unknown or revoked token; log in again.")
    auth = Auth(row.id, row.user_id, token_hash)
    remember_token(auth)
    return auth


def remember_token(auth: Auth, trip: Trip | None = None) -> None:
    """Cache whose token this is (now or in ``trip``), unless a logout's tombstone
    or another request got there first."""
    coordinator().hints.set(
        _token_key(auth.token_hash),
        _owner(auth),
        this_app().config["TOKEN_CACHE_TTL_S"],
        only_if_absent=True,
        trip=trip,
    )


def revoke_cached_token(token_hash: str, trip: Trip | None = None) -> None:
    """Tombstone the token in the cache (now, or in ``trip``)."""
    remembered = this_app().extensions["parley.tokens"]
    if remembered is not None:
        remembered.pop(token_hash, None)
    coordinator().hints.set(
        _token_key(token_hash), REVOKED, this_app().config["TOKEN_CACHE_TTL_S"], trip=trip
    )


def authenticated(view):
    """Run ``view`` only for a valid bearer token; ``current_auth()`` tells whose."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        if "auth" not in g:  # a rate limit keyed by user may have authenticated already
            g.auth = authenticate()
        return view(*args, **kwargs)

    return wrapper


def claimed(view):
    """Run ``view`` for the device this process verified the bearer token for
    (``claim_auth``), without checking the token first: for a view whose database
    work checks it (a send stores nothing from a device that logged out). The
    view calls ``confirm_claim()`` on any other way to succeed. If it fails, the
    token is checked then, so a logged-out token answers 401, whatever else
    went wrong."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        if "auth" not in g:  # a rate limit keyed by user may have authenticated already
            g.auth, g.claim = claim_auth()
        try:
            return view(*args, **kwargs)
        except Exception:
            confirm_claim()
            raise

    return wrapper


def confirm_claim() -> None:
    """Check the bearer token now if the request runs on an unchecked claim (401
    if it is not the device's any more)."""
    state = this_g()
    claim = state.pop("claim", None)
    if claim is not None and not claim.confirmed:
        authenticate(state.auth.token_hash)


def current_auth() -> Auth:
    return this_g().auth
