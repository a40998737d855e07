"""The cached hints (inbox heads, cursors) only ever move forward, in both modes."""

import pytest
import redis

from api.hub.hints import RAISED, THERE_ALREADY, LocalHints, RedisHints
from api.hub.trip import Trip
from tests.services import unique_prefix

TTL_S = 60


@pytest.fixture(params=["local", "redis"])
def hints_and_prefix(request):
    """Hints of either mode, and a prefix of keys for the test's own."""
    if request.param == "local":
        yield LocalHints(), unique_prefix()
        return
    client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    prefix = unique_prefix()
    yield RedisHints(client), prefix
    client.delete(*client.keys(f"{prefix}*") or [prefix])
    client.close()


def trip_of(hints: LocalHints | RedisHints) -> Trip:
    """A round trip to the hints' Redis (the embedded mode's queues nothing)."""
    return Trip(hints._client if isinstance(hints, RedisHints) else None)


def test_raising_several_counters_at_once_never_lowers_any(hints_and_prefix):
    hints, prefix = hints_and_prefix
    one, two, three = (f"{prefix}head:{n}" for n in (1, 2, 3))
    hints.raise_to({one: 5, two: 7}, TTL_S)

    hints.raise_to({one: 3, two: 9, three: 1}, TTL_S)  # a late writer with an older value for one

    assert hints.get_many([one, two, three, f"{prefix}head:4"]) == ["5", "9", "1", None]


def test_raising_nothing_changes_nothing(hints_and_prefix):
    hints, prefix = hints_and_prefix
    hints.raise_to({}, TTL_S)
    assert hints.get_many([f"{prefix}head:1"]) == [None]


def test_raised_counters_in_redis_expire_by_themselves(redis_url):
    """A head left stale by a failed write must not outlive its time to live."""
    key = f"{unique_prefix()}head:1"
    with redis.Redis.from_url(redis_url) as client:
        RedisHints(client).raise_to({key: 2}, TTL_S)
        assert 0 < client.ttl(key) <= TTL_S
        client.delete(key)


def test_a_counter_raised_to_the_value_it_has_lives_on(redis_url):
    """A head just read from the database is as fresh as one just written, and a
    lower value leaves the counter as it is."""
    key = f"{unique_prefix()}head:1"
    with redis.Redis.from_url(redis_url) as client:
        hints = RedisHints(client)
        hints.raise_to({key: 2}, TTL_S)
        client.expire(key, 5)  # most of its time has passed

        hints.raise_to({key: 1}, TTL_S)
        assert client.ttl(key) <= 5
        hints.raise_to({key: 2}, TTL_S)
        assert client.ttl(key) > 5
        assert hints.get_many([key]) == ["2"]
        client.delete(key)


def read_and_raised(hints, key: str, bound: str, value: int, guard=None) -> tuple:
    """What ``get_and_raise_within_then`` tells, once its trip is sent."""
    told: list = []
    trip = trip_of(hints)
    hints.get_and_raise_within_then(
        trip, key, bound, value, TTL_S, lambda *args: told.append(args), guard=guard
    )
    trip.send()
    (values, raised) = told[0]
    return values, raised


def test_a_counter_is_raised_within_its_bound_and_never_past_it(hints_and_prefix):
    """A cursor goes up to the cached head; past it, or with no head cached, the
    hint cannot tell and leaves the cursor alone for the caller to check. Both
    are read as they were before."""
    hints, prefix = hints_and_prefix
    cursor, head = f"{prefix}cursor:1", f"{prefix}head:1"

    assert read_and_raised(hints, cursor, head, 2) == ([None, None], None)  # no head
    hints.raise_to({head: 3}, TTL_S)
    assert read_and_raised(hints, cursor, head, 4) == ([None, "3"], None)  # past it
    assert read_and_raised(hints, cursor, head, 3) == ([None, "3"], RAISED)
    assert read_and_raised(hints, cursor, head, 2) == (["3", "3"], THERE_ALREADY)
    assert hints.get_many([cursor]) == ["3"]


def test_a_guarded_raise_happens_only_while_the_guard_holds(redis_url):
    prefix = unique_prefix()
    cursor, head, token = (f"{prefix}{name}" for name in ("cursor:1", "head:1", "tok:1"))
    with redis.Redis.from_url(redis_url) as client:
        hints = RedisHints(client)
        hints.raise_to({head: 5}, TTL_S)
        hints.set(token, "1:1", TTL_S)

        assert read_and_raised(hints, cursor, head, 2, (token, "1:1"))[1] is RAISED
        hints.set(token, "revoked", TTL_S)  # logged out
        assert read_and_raised(hints, cursor, head, 4, (token, "1:1")) == (["2", "5"], None)
        assert hints.get_many([cursor]) == ["2"]
        client.delete(cursor, head, token)
