"""The RQ connection and queues, with the Redis URL from ``Z4J_RQ_REDIS_URL``.

The URL takes the same optional ``serializer`` parameter (``pickle`` or
``json``) that z4j-scheduler's RQ dispatcher reads. Start the worker with the
matching ``--serializer``.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis import Redis
from rq import Queue

REDIS_URL = os.environ.get("Z4J_RQ_REDIS_URL", "redis://127.0.0.1:6379/0")


def split_serializer(url: str) -> tuple[str, str]:
    """Split ``url`` into the URL for redis-py and the serializer name, ``pickle`` by default."""
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query))
    serializer = params.pop("serializer", "pickle")
    return urlunsplit(parts._replace(query=urlencode(params))), serializer


def queue(name: str = "default") -> Queue:
    """Return the RQ queue ``name`` on the example's Redis, for enqueueing by hand."""
    location, serializer = split_serializer(REDIS_URL)
    return Queue(name, connection=Redis.from_url(location), serializer=serializer)
