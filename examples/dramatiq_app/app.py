"""The Dramatiq broker, with its URL from ``Z4J_DRAMATIQ_BROKER_URL``.

URL forms, the same that z4j-scheduler's Dramatiq dispatcher reads:
``redis://HOST:PORT/DB?namespace=PREFIX`` for ``RedisBroker`` or
``amqp://USER:PASSWORD@HOST:PORT/VHOST`` for ``RabbitmqBroker``.

``Z4J_DRAMATIQ_QUEUES`` lists further queues, separated by commas, that the
worker consumes besides the actors' own, so that one deployment can route
an actor's messages to a queue of its own.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage

BROKER_URL = os.environ.get("Z4J_DRAMATIQ_BROKER_URL", "redis://127.0.0.1:6379/0")


def create_broker(url: str) -> dramatiq.Broker:
    """Create a RedisBroker or RabbitmqBroker from a broker URL."""
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query))
    if parts.scheme in ("redis", "rediss"):
        namespace = params.pop("namespace", "dramatiq")
        location = urlunsplit(parts._replace(query=urlencode(params)))
        return RedisBroker(url=location, namespace=namespace)  # type: ignore[no-untyped-call]
    if parts.scheme in ("amqp", "amqps"):
        return RabbitmqBroker(url=url)
    raise ValueError(
        f"invalid Z4J_DRAMATIQ_BROKER_URL {parts.scheme}://...: use redis://... or amqp://..."
    )


def extra_queues() -> list[str]:
    """Return the queue names listed in ``Z4J_DRAMATIQ_QUEUES``."""
    names = os.environ.get("Z4J_DRAMATIQ_QUEUES", "").split(",")
    return [name.strip() for name in names if name.strip()]


broker = create_broker(BROKER_URL)
# CurrentMessage lets an actor read its own message id and queue.
broker.add_middleware(CurrentMessage())
dramatiq.set_broker(broker)
for queue_name in extra_queues():
    broker.declare_queue(queue_name)
