"""Coordination between requests and processes: wake-ups and cached hints.

    Coordinator (app.extensions["parley.hub"])
      ├── hub    LocalHub (embedded) | RedisHub (scaled): waiters, wake-ups
      ├── hints  LocalHints | RedisHints: inbox heads, cursors, token cache
      └── keys   KeySpace: the prefix of those cached facts' keys

Nothing here is the truth; PostgreSQL is. Losing all of it delays a client by
one long-poll timeout at most and never loses an entry.
"""

import os
from dataclasses import dataclass

import redis
from flask import Flask
from redis.maint_notifications import MaintNotificationsConfig

from api.context import this_app
from api.db import db
from api.hub.base import Hub, LocalHub
from api.hub.hints import LocalHints, RedisHints
from api.hub.keyspace import KeySpace
from api.hub.parser import ReadyCheckingParser
from api.hub.redis_hub import RedisHub
from api.hub.trip import Trip

REDIS_SOCKET_TIMEOUT_S = 2.0  # a Redis that stops answering must not hang requests


@dataclass
class Coordinator:
    hub: Hub
    hints: LocalHints | RedisHints
    keys: KeySpace
    client: redis.Redis | None = None

    def trip(self) -> Trip:
        """A new set of Redis commands to send in one round trip."""
        return Trip(self.client)


def init_coordinator(app: Flask) -> None:
    url = app.config["REDIS_URL"]
    prefix = app.config["REDIS_PREFIX"]
    if url:
        # A blocking pool: thousands of concurrent requests (greenlets) share a
        # few connections, each waiting its turn (a command takes ~0.1 ms), where
        # redis-py's default pool refuses the 101st caller outright.
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=app.config["REDIS_POOL_SIZE"],
            timeout=REDIS_SOCKET_TIMEOUT_S,
            socket_timeout=REDIS_SOCKET_TIMEOUT_S,
            socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S,
            socket_keepalive=True,
            health_check_interval=10,
            parser_class=ReadyCheckingParser,
            # Maintenance notifications (a managed Redis's pushes before a failover)
            # turn off the pool's check for unread replies on the connections it hands
            # out: a reply left behind by a request cut short would answer the next.
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
            # Named so operators (and tests) can tell Parley's connections apart.
            client_name=f"{prefix.rstrip(':')}-{os.getpid()}",
        )
        client = redis.Redis(connection_pool=pool)
        keys = KeySpace(prefix, db.engine(app))
        coordinator = Coordinator(RedisHub(client, keys), RedisHints(client), keys, client)
    else:
        coordinator = Coordinator(LocalHub(), LocalHints(), KeySpace(prefix))
    app.extensions["parley.hub"] = coordinator


def coordinator() -> Coordinator:
    return this_app().extensions["parley.hub"]
