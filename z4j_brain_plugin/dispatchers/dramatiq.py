"""Dramatiq dispatcher: enqueues a message by actor name on Redis or RabbitMQ.

Dramatiq's ``actor.send()`` builds a ``dramatiq.Message`` with the actor's
name and queue and hands it to ``broker.enqueue()``. This dispatcher builds
the same message, with empty options and the fire id as the message id, and
enqueues it through Dramatiq's own ``RedisBroker`` or ``RabbitmqBroker``
with no middleware, so the application is never imported.

The task name is the actor name: the decorated function's ``__name__``
(``record_run``), or ``actor_name=`` when the actor declares one. The
schedule's ``queue`` is the queue the worker consumes, normally the actor's
``queue_name`` (``default`` when left out, as in Dramatiq). A worker runs a
message from any queue it consumes, looking the actor up by name, and
applies the actor's options such as retries to it. A worker that does not know
the actor moves the message to the dead-letter queue, which this dispatcher
does not see. Messages are JSON-encoded, Dramatiq's default, so workers must
not have switched to another encoder with ``dramatiq.set_encoder``.

Broker URL forms, the scheme picking the broker:

- ``redis://[:PASSWORD@]HOST:PORT/DB`` or ``rediss://`` for ``RedisBroker``,
  with an optional ``namespace`` parameter, the key prefix given to the
  application's ``RedisBroker(namespace=...)`` (``dramatiq`` by default).
  Other query parameters go to redis-py.
- ``amqp://USER:PASSWORD@HOST:PORT/VHOST`` or ``amqps://`` for
  ``RabbitmqBroker``, with an optional ``max_priority`` parameter equal to
  the application's ``RabbitmqBroker(max_priority=...)``, because RabbitMQ
  rejects a queue declared again with other arguments. Other query
  parameters go to pika, so ``heartbeat``, ``socket_timeout``,
  ``stack_timeout``, ``blocked_connection_timeout`` and
  ``connection_attempts`` given there replace this module's settings. The
  default virtual host ``/`` is written ``%2F``.

On RabbitMQ the dispatcher keeps one connection with publisher confirms, so
a returned id means RabbitMQ has the message. It declares the queue and its
``.DQ`` and ``.XQ`` companions with the arguments Dramatiq uses. A
background thread processes the connection's events every half heartbeat
interval, so the broker does not close it while it is idle. Every
heartbeat + 5 s pika checks that something arrived since its last check
and closes the connection otherwise, so a broker that stops replying is
noticed within twice that time. A broker that is down fails the first
connect, after at most ``timeout`` seconds. Dramatiq 2.2 makes up to 6
attempts at a publish that fails on a broken connection, reconnecting each
time, so a broker that breaks in the middle of a publish can take several
``timeout`` periods to report.

Re-sent fires: Dramatiq does not deduplicate by message id. A fire sent
again is a second message with the same id, and the workers run it twice.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Literal, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pika
import pika.exceptions
import redis
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import q_name
from dramatiq.errors import ConnectionClosed
from pika.adapters.utils.connection_workflow import (
    AMQPConnectorException,
)

from z4j_brain_plugin.dispatchers.base import (
    Dispatcher,
    DispatchRequest,
    check_request,
    dispatch_each,
    mask_url,
)
from z4j_brain_plugin.errors import ConfigurationError, DispatchError

logger = logging.getLogger(__name__)

# Seconds to wait for a TCP connect, a Redis reply, the AMQP handshake, or a
# RabbitMQ connection blocked by a resource alarm.
DEFAULT_TIMEOUT = 5.0

# AMQP heartbeat interval in seconds, proposed to RabbitMQ. It bounds how long
# a connection that stopped replying goes unnoticed.
DEFAULT_HEARTBEAT = 10

# Dramatiq's own default queue name and Redis key prefix.
DEFAULT_QUEUE = "default"
DEFAULT_NAMESPACE = "dramatiq"

REDIS_SCHEMES = frozenset({"redis", "rediss"})
AMQP_SCHEMES = frozenset({"amqp", "amqps"})

# The queue names ``dramatiq.actor`` accepts (dramatiq 2.2, actor.py).
QUEUE_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9._-]*")

# AMQP reply codes of channel errors that a retry cannot fix: 403
# ACCESS_REFUSED, 404 NOT_FOUND and 406 PRECONDITION_FAILED (a queue that
# exists with other arguments).
PERMANENT_REPLY_CODES = frozenset({403, 404, 406})

REDIS_RETRYABLE_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.ReadOnlyError,
    OSError,
)
REDIS_PERMANENT_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, TypeError, ValueError)

# Exceptions pika raises for a connection that could not be opened or broke:
# AMQP errors, socket and TLS errors, and ``AMQPConnectorException`` for a
# handshake that timed out (pika 1.4).
AMQP_CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    pika.exceptions.AMQPError,
    AMQPConnectorException,
    OSError,
)

# pika's timeouts in seconds, which this module sets to ``timeout`` unless the
# URL sets them.
TIMEOUT_SETTINGS = ("socket_timeout", "stack_timeout", "blocked_connection_timeout")


@dataclass(frozen=True, slots=True)
class DramatiqBrokerConfig:
    """A parsed Dramatiq broker URL.

    ``location`` is the URL for redis-py or pika, without this module's own
    parameters. ``namespace`` applies to Redis only and ``max_priority`` to
    RabbitMQ only.
    """

    backend: Literal["redis", "rabbitmq"]
    location: str
    namespace: str = DEFAULT_NAMESPACE
    max_priority: int | None = None


def parse_dramatiq_url(url: str) -> DramatiqBrokerConfig:
    """Parse a Dramatiq broker URL, raising ``ConfigurationError`` that names the bad part."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    params = _query_params(url, parts.query)
    if scheme in REDIS_SCHEMES:
        _reject_param(url, params, "max_priority", "a RabbitMQ (amqp://) URL")
        namespace = params.pop("namespace", DEFAULT_NAMESPACE)
        if not namespace:
            raise ConfigurationError(
                f"invalid dramatiq broker URL {mask_url(url)!r}: namespace is empty; "
                f"set ?namespace=PREFIX or leave it out for {DEFAULT_NAMESPACE!r}"
            )
        location = urlunsplit(parts._replace(query=urlencode(params)))
        return DramatiqBrokerConfig("redis", location, namespace=namespace)
    if scheme in AMQP_SCHEMES:
        _reject_param(url, params, "namespace", "a Redis (redis://) URL")
        max_priority = _max_priority(url, params.pop("max_priority", None))
        location = urlunsplit(parts._replace(query=urlencode(params)))
        return DramatiqBrokerConfig("rabbitmq", location, max_priority=max_priority)
    raise ConfigurationError(
        f"invalid dramatiq broker URL {mask_url(url)!r}: scheme {scheme!r} is not supported; "
        "use redis://, rediss://, amqp:// or amqps://"
    )


def _query_params(url: str, query: str) -> dict[str, str]:
    pairs = parse_qsl(query, keep_blank_values=True)
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ConfigurationError(
            f"invalid dramatiq broker URL {mask_url(url)!r}: parameter(s) {repeated} given twice"
        )
    return dict(pairs)


def _reject_param(url: str, params: dict[str, str], name: str, belongs_to: str) -> None:
    if name in params:
        raise ConfigurationError(
            f"invalid dramatiq broker URL {mask_url(url)!r}: parameter {name!r} "
            f"applies only to {belongs_to}"
        )


def _max_priority(url: str, text: str | None) -> int | None:
    if text is None:
        return None
    if text.isdigit() and 1 <= int(text) <= 255:
        return int(text)
    raise ConfigurationError(
        f"invalid dramatiq broker URL {mask_url(url)!r}: max_priority {text!r} is invalid; "
        "use an integer from 1 to 255, the same as the application's RabbitmqBroker"
    )


def open_redis(url: str, location: str, timeout: float) -> redis.Redis:
    """Create a client for ``location`` without connecting, its socket timeouts set to ``timeout``.

    redis-py passes unknown URL query parameters to the connection class,
    which rejects them only when the first connection is made. Building one
    connection object here, without connecting, reports them at start-up.
    """
    try:
        client = redis.Redis.from_url(
            location, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        pool = client.connection_pool
        pool.connection_class(**pool.connection_kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"invalid dramatiq broker URL {mask_url(url)!r}: {exc}") from exc
    return client


def rabbitmq_parameters(
    url: str, location: str, timeout: float, heartbeat: int
) -> pika.URLParameters:
    """Build pika's connection parameters, with timeouts unless the URL sets its own."""
    if ";" in location:
        raise ConfigurationError(
            f"invalid dramatiq broker URL {mask_url(url)!r}: several URLs separated by ';' "
            "are not supported; configure one broker URL per connection"
        )
    try:
        parameters = pika.URLParameters(location)
    except ValueError as exc:
        raise ConfigurationError(f"invalid dramatiq broker URL {mask_url(url)!r}: {exc}") from exc
    if parameters.virtual_host == "":
        raise ConfigurationError(
            f"invalid dramatiq broker URL {mask_url(url)!r}: the virtual host is empty; "
            "write the default virtual host '/' as %2F, e.g. amqp://HOST:5672/%2F"
        )
    url_settings = {key for key, _ in parse_qsl(urlsplit(location).query)}
    defaults: dict[str, float] = dict.fromkeys(TIMEOUT_SETTINGS, timeout)
    defaults.update(heartbeat=heartbeat, connection_attempts=1)
    for name, value in defaults.items():
        if name not in url_settings:
            setattr(parameters, name, value)
    return parameters


def build_message(request: DispatchRequest, queue_name: str) -> Message[object]:
    """Build the message that ``actor.send(*args, **kwargs)`` would enqueue, with the fire id."""
    return Message(
        queue_name=queue_name,
        actor_name=request.task_name,
        args=tuple(request.args),
        kwargs=dict(request.kwargs),
        options={},
        message_id=request.fire_id,
    )


def check_queue_name(engine: str, request: DispatchRequest, queue_name: str) -> None:
    """Raise a non-retryable ``DispatchError`` for a queue name Dramatiq cannot consume."""
    if QUEUE_NAME.fullmatch(queue_name) and q_name(queue_name) == queue_name:
        return
    raise DispatchError(
        engine,
        request.fire_id,
        f"queue {queue_name!r} is not a valid Dramatiq queue name; use letters, digits, "
        "'.', '_' or '-', starting with a letter or '_' and not ending in .DQ or .XQ",
        retryable=False,
    )


class PublishError(Exception):
    """A broker failure, with whether a retry of the same message can succeed."""

    def __init__(self, cause: Exception, *, retryable: bool) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause
        self.retryable = retryable


class Publisher(Protocol):
    """A broker connection that enqueues Dramatiq messages, raising ``PublishError``."""

    def send(self, message: Message[object]) -> None: ...

    def close(self) -> None: ...


class RedisPublisher:
    """Enqueues through a ``RedisBroker`` on one thread-safe redis-py connection pool."""

    def __init__(self, url: str, config: DramatiqBrokerConfig, timeout: float) -> None:
        client = open_redis(url, config.location, timeout)
        self._broker = RedisBroker(  # type: ignore[no-untyped-call]
            client=client, namespace=config.namespace, middleware=[]
        )

    def send(self, message: Message[object]) -> None:
        try:
            self._broker.enqueue(message)
        except REDIS_RETRYABLE_ERRORS as exc:
            raise PublishError(exc, retryable=True) from exc
        except REDIS_PERMANENT_ERRORS as exc:
            raise PublishError(exc, retryable=False) from exc

    def close(self) -> None:
        self._broker.client.close()


class RabbitmqPublisher:
    """Enqueues through a ``RabbitmqBroker`` on one connection shared by all threads.

    ``RabbitmqBroker`` keeps a connection per thread in ``broker.state``, a
    ``threading.local`` (dramatiq 2.2). The outbox calls from a pool of
    threads, so ``state`` is replaced by a plain namespace that all of them
    share. pika connections are not thread-safe, so a lock lets one thread
    at a time use it.
    """

    def __init__(
        self, url: str, config: DramatiqBrokerConfig, timeout: float, heartbeat: int
    ) -> None:
        parameters = rabbitmq_parameters(url, config.location, timeout, heartbeat)
        self._broker = RabbitmqBroker(
            confirm_delivery=True, max_priority=config.max_priority, middleware=[]
        )
        self._broker.parameters = parameters
        self._broker.state = SimpleNamespace()  # type: ignore[assignment]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None
        if parameters.heartbeat:
            self._keeper = threading.Thread(
                target=self._keep_alive,
                args=(parameters.heartbeat / 2,),
                name="z4j-dramatiq-heartbeat",
                daemon=True,
            )
            self._keeper.start()

    def send(self, message: Message[object]) -> None:
        with self._lock:
            self._open_channel()
            self._enqueue(message)

    def close(self) -> None:
        self._stop.set()
        if self._keeper is not None:
            self._keeper.join()
        with self._lock:
            self._broker.close()

    def _open_channel(self) -> None:
        # Opening here, outside Dramatiq's retry loop, makes a broker that is
        # down cost one connect timeout rather than one per retry.
        channel = getattr(self._broker.state, "channel", None)
        if channel is not None and not channel.is_open:
            del self._broker.connection
        try:
            self._broker.channel  # noqa: B018 - the property opens the connection and channel
        except AMQP_CONNECTION_ERRORS as exc:
            del self._broker.connection
            raise PublishError(exc, retryable=True) from exc

    def _enqueue(self, message: Message[object]) -> None:
        try:
            self._broker.enqueue(message)
        except ConnectionClosed as exc:
            cause = exc.message if isinstance(exc.message, Exception) else exc
            raise PublishError(cause, retryable=is_retryable_amqp(cause)) from exc
        except AMQP_CONNECTION_ERRORS as exc:
            raise PublishError(exc, retryable=True) from exc

    def _keep_alive(self, interval: float) -> None:
        while not self._stop.wait(interval):
            with self._lock:
                self._process_idle_events()

    def _process_idle_events(self) -> None:
        # Sends and checks heartbeats. A connection found broken is dropped,
        # and the next dispatch opens a new one.
        connection = getattr(self._broker.state, "connection", None)
        if connection is None:
            return
        try:
            connection.process_data_events(time_limit=0)
        except AMQP_CONNECTION_ERRORS as exc:
            logger.info(
                "dramatiq: idle RabbitMQ connection lost, the next dispatch reconnects: %r", exc
            )
            del self._broker.connection


def is_retryable_amqp(exc: Exception) -> bool:
    """Tell whether a retry can fix a RabbitMQ failure: all but channel errors 403, 404, 406."""
    if isinstance(exc, pika.exceptions.ChannelClosedByBroker):
        return exc.reply_code not in PERMANENT_REPLY_CODES
    return True


class DramatiqDispatcher(Dispatcher):
    """Enqueues fires as Dramatiq messages on a Redis or RabbitMQ broker."""

    engine = "dramatiq"

    def __init__(
        self, url: str, *, timeout: float = DEFAULT_TIMEOUT, heartbeat: int = DEFAULT_HEARTBEAT
    ) -> None:
        self._url = url
        config = parse_dramatiq_url(url)
        self._publisher: Publisher
        if config.backend == "redis":
            self._publisher = RedisPublisher(url, config, timeout)
        else:
            self._publisher = RabbitmqPublisher(url, config, timeout, heartbeat)
        self._close_lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<DramatiqDispatcher {mask_url(self._url)}{state}>"

    def dispatch(self, request: DispatchRequest) -> str:
        self._check_open(request)
        check_request(self.engine, request)
        queue_name = request.queue or DEFAULT_QUEUE
        check_queue_name(self.engine, request, queue_name)
        message = build_message(request, queue_name)
        try:
            # Encoding first rejects arguments JSON cannot encode, even when
            # the broker is down. The broker encodes the message again.
            message.encode()
        except (TypeError, ValueError) as exc:
            raise self._failed(request, queue_name, exc, retryable=False) from exc
        try:
            self._publisher.send(message)
        except PublishError as failure:
            raise self._failed(
                request, queue_name, failure.cause, retryable=failure.retryable
            ) from failure.cause
        logger.debug(
            "dramatiq: fire %s of schedule %s enqueued as message %s for actor %s on queue %s",
            request.fire_id,
            request.schedule_id,
            message.message_id,
            request.task_name,
            queue_name,
        )
        return message.message_id

    def dispatch_many(self, requests: Sequence[DispatchRequest]) -> list[str | DispatchError]:
        return dispatch_each(self.engine, self.dispatch, requests)

    def close(self) -> None:
        with self._close_lock:
            if not self._closed:
                self._closed = True
                self._publisher.close()

    def _check_open(self, request: DispatchRequest) -> None:
        if self._closed:
            # Retryable: a fire caught by shutdown is sent again after restart.
            raise DispatchError(
                self.engine, request.fire_id, "dispatcher is closed", retryable=True
            )

    def _failed(
        self, request: DispatchRequest, queue_name: str, exc: Exception, *, retryable: bool
    ) -> DispatchError:
        logger.warning(
            "dramatiq: fire %s of schedule %s (actor %s) not enqueued on queue %s at %s "
            "(retryable=%s): %r",
            request.fire_id,
            request.schedule_id,
            request.task_name,
            queue_name,
            mask_url(self._url),
            retryable,
            exc,
        )
        message = f"{type(exc).__name__}: {exc}"
        return DispatchError(self.engine, request.fire_id, message, retryable=retryable)
