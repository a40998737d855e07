"""The cached inbox heads: each user's newest inbox ``seq``, beside the database.

A poll with nothing new answers from the cached head, without a query. Heads are
cached from the database (a poll that reads the head itself, and a read of an
inbox that finds nothing new) and raised after each commit of new entries; they
only move forward, and they expire, so that a head left behind by a lost Redis
write hides news for ``HEAD_CACHE_TTL_S`` at most.
"""

from api.context import this_app
from api.hub import coordinator
from api.hub.trip import Trip


def head_key(user_id: int) -> str:
    return f"{coordinator().keys.prefix}head:{user_id}"


def remember_heads(heads: dict[int, int], trip: Trip | None = None) -> None:
    """Cache ``{user_id: head}`` (now or in ``trip``): each head is raised, never
    lowered, and one that is already there lives for another ``HEAD_CACHE_TTL_S``."""
    coordinator().hints.raise_to(
        {head_key(user_id): head for user_id, head in heads.items()},
        this_app().config["HEAD_CACHE_TTL_S"],
        trip,
    )
