"""A trip sends the commands of several features in one round trip, each reply to
its own handler."""

import redis

from api.hub.trip import Trip, queue_script
from tests.factories import scaled_only


@scaled_only
def test_each_command_of_a_trip_gets_its_own_reply_or_error(app):
    client = app.extensions["parley.hub"].client
    key = f"{app.config['REDIS_PREFIX']}trip-test"
    got: dict[str, object] = {}

    def expect(name):
        return lambda reply: got.setdefault(name, reply), lambda exc: got.setdefault(name, exc)

    trip = Trip(client)
    trip.add(lambda pipe: pipe.set(key, "ünïcode", ex=60), *expect("set"))
    trip.add(lambda pipe: pipe.incr(key), *expect("incr"))  # not a number: an error reply
    trip.add(lambda pipe: pipe.client_getname(), *expect("getname"))
    trip.add(lambda pipe: pipe.mget([key, f"{key}-absent"]), *expect("mget"))
    echo = client.register_script("return {ARGV[1], ARGV[2]}")
    trip.add(lambda pipe: queue_script(pipe, echo, [key], [2.5, 7]), *expect("script"))
    trip.send()

    assert got["set"] is True
    assert isinstance(got["incr"], redis.ResponseError)
    # A command of two words (each process names its connections).
    assert got["getname"].startswith("parley-")
    assert got["mget"] == ["ünïcode".encode(), None]
    assert got["script"] == [b"2.5", b"7"]
    client.delete(key)


@scaled_only
def test_a_command_redis_cannot_take_fails_its_trip_to_the_fallbacks(app):
    """An argument that cannot be sent fails every command of the trip, each to its
    handler's fallback, as a Redis that cannot be reached would: not the request."""
    client = app.extensions["parley.hub"].client
    errors = []
    trip = Trip(client)
    trip.add(lambda pipe: pipe.get("whatever"), lambda _reply: None, errors.append)
    trip.add(lambda pipe: pipe.execute_command("SET", "k", None), lambda _r: None, errors.append)
    trip.send()
    assert [type(error) for error in errors] == [redis.DataError, redis.DataError]
