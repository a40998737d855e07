"""The cached hints (inbox heads, cursors) only ever move forward, in both modes."""

import pytest
import redis

from api.hub.hints import LocalHints, RedisHints
from tests.services import unique_prefix

TTL_S = 60


@pytest.fixture(params=["local", "redis"])
def hints_and_prefix(request):
    if request.param == "local":
        yield LocalHints(), unique_prefix()
        return
    client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    prefix = unique_prefix()
    yield RedisHints(client), prefix
    client.delete(*client.keys(f"{prefix}*") or [prefix])
    client.close()


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
