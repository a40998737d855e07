"""A trip sends the commands of several features in one round trip, each reply to
its own handler."""

import redis

from api.hub.trip import Trip
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
    trip.send()

    assert got["set"] is True
    assert isinstance(got["incr"], redis.ResponseError)
    assert got["getname"].startswith(
        "parley-"
    )  # a command of two words (processes name their connections)
    assert got["mget"] == ["ünïcode".encode(), None]
    client.delete(key)
