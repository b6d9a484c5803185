"""The taskiq broker, built from ``Z4J_TASKIQ_BROKER_URL``.

The URL form is the one z4j-scheduler's taskiq dispatcher reads:
``redis://HOST:PORT/DB?broker=KIND&queue_name=NAME``. ``KIND`` is ``list``
(``ListQueueBroker``, the default), ``stream`` (``RedisStreamBroker``) or
``pubsub`` (``PubSubBroker``). ``queue_name`` is the Redis key or channel,
``taskiq`` by default as in taskiq-redis. ``serializer=pickle`` replaces
taskiq's default JSON serializer with its pickle serializer, and
``consumer_group_name`` sets the stream broker's consumer group.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from taskiq import AsyncBroker
from taskiq.serializers import PickleSerializer
from taskiq_redis import ListQueueBroker, PubSubBroker, RedisStreamBroker

DEFAULT_URL = "redis://127.0.0.1:6379/0"





def create_broker(url: str) -> AsyncBroker:
    """Create a taskiq-redis broker from a broker URL."""
    params = dict(parse_qsl(urlsplit(url).query))
    kind = params.pop("broker", "list")
    queue_name = params.pop("queue_name", "taskiq")
    serializer = params.pop("serializer", "json")
    group = params.pop("consumer_group_name", "taskiq")
    base = url.partition("?")[0]
    redis_url = f"{base}?{urlencode(params)}" if params else base
    broker: AsyncBroker
    if kind == "list":
        broker = ListQueueBroker(redis_url, queue_name=queue_name)
    elif kind == "pubsub":
        broker = PubSubBroker(redis_url, queue_name=queue_name)
    elif kind == "stream":
        broker = RedisStreamBroker(redis_url, queue_name=queue_name, consumer_group_name=group)
    else:
        raise ValueError(
            f"invalid broker {kind!r} in Z4J_TASKIQ_BROKER_URL: use list, stream or pubsub"
        )
    if serializer == "pickle":
        broker = broker.with_serializer(PickleSerializer())
    elif serializer != "json":
        raise ValueError(
            f"invalid serializer {serializer!r} in Z4J_TASKIQ_BROKER_URL: use json or pickle"
        )
    return broker


broker = create_broker(os.environ.get("Z4J_TASKIQ_BROKER_URL", DEFAULT_URL))
