"""taskiq dispatcher: sends a task message by name to a taskiq-redis broker.

A decorated task's ``.kiq()`` (taskiq 0.13) builds a ``TaskiqMessage`` with
the task name, labels, args and kwargs, encodes it with the broker's
formatter and serializer, and hands the bytes to the broker's ``kick``. This
dispatcher builds the same message with the fire id as ``task_id`` and
writes the bytes the way taskiq-redis 1.0 brokers do, so the application's
``taskiq worker`` runs it. It uses redis-py's synchronous client rather than
a private event loop, because the outbox calls it from a worker thread and a
blocking socket with timeouts bounds each call without loop handling. It
does not import taskiq-redis.

URL form: ``redis://[[USER]:PASSWORD@]HOST:PORT/DB?broker=KIND&queue_name=NAME``
(or ``rediss://``, or ``unix:///PATH?db=DB&...``), for example
``redis://127.0.0.1:6379/0?queue_name=taskiq&broker=list``. The parameters
follow the application's broker:

- ``broker``: ``list`` for ``ListQueueBroker`` (LPUSH onto a list, the
  default), ``stream`` for ``RedisStreamBroker`` (XADD to a stream) or
  ``pubsub`` for ``PubSubBroker`` (PUBLISH on a channel).
- ``queue_name``: the broker's ``queue_name``, the Redis key or channel,
  ``taskiq`` by default as in taskiq-redis. A schedule's ``queue``
  replaces it, and for ``list`` and ``pubsub`` it is also sent as the
  ``queue_name`` label, which is how taskiq-redis routes a message to
  another queue than the broker's own.
- ``serializer``: ``json`` (taskiq's default ``JSONSerializer``) or
  ``pickle`` (``PickleSerializer``), as set with ``broker.with_serializer``.
- ``consumer_group_name`` (``stream`` only, default ``taskiq``): the group
  the dispatcher creates on the stream if it is missing, as the broker's
  ``startup`` does. Without it, a worker that starts later creates the
  group at the end of the stream and never reads the earlier messages.
- ``maxlen`` (``stream`` only): trims the stream to about that many entries
  on each XADD, like the broker's ``maxlen``.

Other query parameters go to redis-py.

The task name is taskiq's registry name: ``MODULE:FUNCTION`` of the
decorated function as the worker imports it
(``examples.taskiq_app.tasks:record_run``), or the ``task_name`` given to
``@broker.task``. A worker that does not know the name logs a warning and
drops the message, which the dispatcher does not see.

Re-sent fire: taskiq does not deduplicate by task id, so a fire sent again
runs again. A stream message that a worker took but did not acknowledge is
delivered again after the broker's idle timeout, 10 minutes by default. A
``pubsub`` message runs once in every subscribed worker process (``taskiq
worker`` starts two by default), and is dropped when none is subscribed, in
which case the dispatcher raises a retryable ``DispatchError``.

NOTE: labels declared on the task (``@broker.task(timeout=...)``, retry
labels) are sent by the application with each message, and the worker reads
them only from the message, so runs sent by this dispatcher do not get them.
The application's client middlewares (``pre_send``) do not run either.
Sentinel and Cluster brokers, and custom formatters, are not supported.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args
from urllib.parse import parse_qsl, urlencode, urlsplit

import redis
from pydantic import ValidationError
from taskiq.abc.serializer import TaskiqSerializer
from taskiq.labels import prepare_label
from taskiq.message import TaskiqMessage
from taskiq.serializers import JSONSerializer, PickleSerializer

from z4j_brain_plugin.dispatchers.base import (
    Dispatcher,
    DispatchRequest,
    check_request,
    dispatch_each,
    mask_url,
)
from z4j_brain_plugin.errors import ConfigurationError, DispatchError

logger = logging.getLogger(__name__)

# Seconds to wait for a Redis connect or reply.
DEFAULT_TIMEOUT = 5.0

# taskiq-redis 1.0 defaults of ``queue_name`` and ``consumer_group_name``.
DEFAULT_QUEUE_NAME = "taskiq"
DEFAULT_CONSUMER_GROUP = "taskiq"

# The label that ListQueueBroker and PubSubBroker read to pick the queue.
QUEUE_LABEL = "queue_name"

# RedisStreamBroker stores each message under this field of a stream entry.
STREAM_FIELD = b"data"

BrokerKind = Literal["list", "stream", "pubsub"]
SerializerName = Literal["json", "pickle"]

BROKER_KINDS: tuple[str, ...] = get_args(BrokerKind)
SERIALIZERS: dict[str, Callable[[], TaskiqSerializer]] = {
    "json": JSONSerializer,
    "pickle": PickleSerializer,
}
STREAM_ONLY_PARAMS = ("consumer_group_name", "maxlen")
REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})


class NoSubscriberError(Exception):
    """A PUBLISH reached no subscriber, so Redis dropped the message.

    Retryable, because a worker that subscribes later receives the message
    sent again.
    """


RETRYABLE_ERRORS: tuple[type[Exception], ...] = (
    NoSubscriberError,
    redis.ConnectionError,
    redis.TimeoutError,
    redis.ReadOnlyError,
    OSError,
)
# A ResponseError here is a Redis key of the wrong type under the queue name.
PERMANENT_ERRORS: tuple[type[Exception], ...] = (
    redis.RedisError,
    ValidationError,
    pickle.PicklingError,
    TypeError,
    ValueError,
)


@dataclass(frozen=True, slots=True)
class TaskiqBrokerConfig:
    """A parsed taskiq broker URL.

    ``redis_url`` is the URL without the parameters this module reads.
    ``maxlen`` None means the stream is not trimmed.
    """

    redis_url: str
    broker: BrokerKind
    queue_name: str
    serializer: SerializerName
    consumer_group_name: str = DEFAULT_CONSUMER_GROUP
    maxlen: int | None = None


def parse_taskiq_url(url: str) -> TaskiqBrokerConfig:
    """Parse a taskiq broker URL, raising ``ConfigurationError`` that names the bad part."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in REDIS_SCHEMES:
        raise _invalid(
            url,
            f"scheme {scheme!r} is not supported; "
            "use redis://HOST:PORT/DB?broker=list&queue_name=NAME, rediss://... "
            "or unix:///PATH?db=DB",
        )
    if scheme != "unix":
        _check_database(url, parts.path)
    params = _query_params(url, parts.query)
    broker = _choice(url, "broker", params.pop("broker", "list"), BROKER_KINDS)
    serializer = _choice(url, "serializer", params.pop("serializer", "json"), tuple(SERIALIZERS))
    queue_name = params.pop("queue_name", DEFAULT_QUEUE_NAME)
    if not queue_name:
        raise _invalid(
            url, f"queue_name is empty; set it or leave it out for {DEFAULT_QUEUE_NAME!r}"
        )
    stream_options = _stream_options(url, broker, params)
    return TaskiqBrokerConfig(
        redis_url=_replace_query(url, params),
        broker=cast(BrokerKind, broker),
        queue_name=queue_name,
        serializer=cast(SerializerName, serializer),
        **stream_options,
    )


def _invalid(url: str, reason: str) -> ConfigurationError:
    return ConfigurationError(f"invalid taskiq broker URL {mask_url(url)!r}: {reason}")


def _check_database(url: str, path: str) -> None:
    database = path.strip("/")
    if database and not database.isdigit():
        raise _invalid(
            url,
            f"database {database!r} is not a number; "
            "use redis://HOST:PORT/DB with DB a number such as 0",
        )


def _query_params(url: str, query: str) -> dict[str, str]:
    pairs = parse_qsl(query, keep_blank_values=True)
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise _invalid(url, f"parameter(s) {repeated} given twice")
    return dict(pairs)


def _choice(url: str, name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise _invalid(url, f"{name} {value!r} is not supported; use one of {', '.join(allowed)}")
    return value


def _stream_options(url: str, broker: str, params: dict[str, str]) -> dict[str, Any]:
    present = [name for name in STREAM_ONLY_PARAMS if name in params]
    if broker != "stream":
        if present:
            raise _invalid(
                url, f"parameter(s) {present} are valid only with broker=stream; remove them"
            )
        return {}
    group = params.pop("consumer_group_name", DEFAULT_CONSUMER_GROUP)
    if not group:
        raise _invalid(url, "consumer_group_name is empty; set it or leave it out for 'taskiq'")
    return {"consumer_group_name": group, "maxlen": _maxlen(url, params.pop("maxlen", None))}


def _maxlen(url: str, text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or int(text) == 0:
        raise _invalid(url, f"maxlen {text!r} is not a positive whole number")
    return int(text)


def _replace_query(url: str, params: dict[str, str]) -> str:
    # Cut by hand because urlunsplit turns unix:///path into unix:/path,
    # which redis-py does not accept.
    base = url.partition("?")[0]
    return f"{base}?{urlencode(params)}" if params else base


def build_message(request: DispatchRequest, *, queue_label: bool) -> TaskiqMessage:
    """Build the message that ``.kiq()`` would send for this call, with the fire id as task id.

    With ``queue_label`` and a request queue, the queue goes into the
    ``queue_name`` label as ``.kicker().with_labels(queue_name=...)`` puts it.
    """
    labels: dict[str, Any] = {}
    label_types: dict[str, int] = {}
    if queue_label and request.queue:
        labels[QUEUE_LABEL], label_types[QUEUE_LABEL] = prepare_label(request.queue)
    return TaskiqMessage(
        task_id=request.fire_id,
        task_name=request.task_name,
        labels=labels,
        labels_types=label_types,
        args=list(request.args),
        kwargs=dict(request.kwargs),
    )


def encode_message(message: TaskiqMessage, serializer: TaskiqSerializer) -> bytes:
    """Encode ``message`` as taskiq's default formatter, ``ProxyFormatter``, does."""
    data: bytes = serializer.dumpb(message.model_dump(mode="json"))
    return data


def push_to_list(client: redis.Redis, queue_name: str, data: bytes) -> None:
    """Send as ``ListQueueBroker.kick`` does: LPUSH, because its workers BRPOP."""
    client.lpush(queue_name, data)


def publish(client: redis.Redis, channel: str, data: bytes) -> None:
    """Send as ``PubSubBroker.kick`` does, raising ``NoSubscriberError`` when none received it."""
    receivers = client.publish(channel, data)
    if receivers == 0:
        raise NoSubscriberError(
            f"no worker is subscribed to channel {channel!r}, so Redis dropped the message; "
            "start a worker with this queue_name"
        )


def add_to_stream(
    client: redis.Redis, stream: str, data: bytes, group: str, maxlen: int | None
) -> None:
    """Create the consumer group if it is missing, then send as ``RedisStreamBroker.kick`` does.

    Both commands go in one round trip. XGROUP CREATE fails with BUSYGROUP
    when the group exists, which is the usual case and is ignored.
    """
    with client.pipeline(transaction=False) as pipe:
        pipe.xgroup_create(stream, group, id="$", mkstream=True)
        pipe.xadd(stream, {STREAM_FIELD: data}, maxlen=maxlen, approximate=True)
        created, added = pipe.execute(raise_on_error=False)
    if isinstance(created, redis.ResponseError) and not str(created).startswith("BUSYGROUP"):
        raise created
    if isinstance(added, Exception):
        raise added


def open_pool(url: str, timeout: float) -> redis.ConnectionPool:
    """Create a pool for ``url`` without connecting, raising ``ConfigurationError`` if invalid.

    redis-py passes unknown query parameters on to its connection class, so
    one connection object is built here to reject them before the first
    dispatch. Timeouts set in the URL win over ``timeout``.
    """
    try:
        pool = redis.ConnectionPool.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        pool.connection_class(**pool.connection_kwargs)
    except (TypeError, ValueError) as exc:
        reason = str(exc).rstrip(".")
        raise _invalid(
            url, f"{reason}; check the Redis connection parameters in its query string"
        ) from exc
    return pool


class TaskiqDispatcher(Dispatcher):
    """Sends fires to one taskiq-redis broker, over one Redis connection pool.

    redis-py's client and pool are thread-safe, and a pipeline takes a
    connection of its own, so calls need no lock.
    """

    engine = "taskiq"

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._url = url
        self._config = parse_taskiq_url(url)
        self._serializer = SERIALIZERS[self._config.serializer]()
        self._pool = open_pool(self._config.redis_url, timeout)
        self._client = redis.Redis(connection_pool=self._pool)
        self._closed = False

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<TaskiqDispatcher {mask_url(self._url)}{state}>"

    def dispatch(self, request: DispatchRequest) -> str:
        self._check_open(request)
        check_request(self.engine, request)
        queue_name = request.queue or self._config.queue_name
        try:
            self._send(request, queue_name)
        except RETRYABLE_ERRORS as exc:
            raise self._failed(request, queue_name, exc, retryable=True) from exc
        except PERMANENT_ERRORS as exc:
            raise self._failed(request, queue_name, exc, retryable=False) from exc
        logger.debug(
            "taskiq: fire %s of schedule %s sent as task %s (%s) to %s %r",
            request.fire_id,
            request.schedule_id,
            request.fire_id,
            request.task_name,
            self._config.broker,
            queue_name,
        )
        return request.fire_id

    def dispatch_many(self, requests: Sequence[DispatchRequest]) -> list[str | DispatchError]:
        return dispatch_each(self.engine, self.dispatch, requests)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()
            self._pool.disconnect()

    def _send(self, request: DispatchRequest, queue_name: str) -> None:
        config = self._config
        message = build_message(request, queue_label=config.broker != "stream")
        data = encode_message(message, self._serializer)
        if config.broker == "list":
            push_to_list(self._client, queue_name, data)
        elif config.broker == "pubsub":
            publish(self._client, queue_name, data)
        else:
            add_to_stream(self._client, queue_name, data, config.consumer_group_name, config.maxlen)

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
            "taskiq: fire %s of schedule %s (task %s) not sent to %s %r at %s (retryable=%s): %r",
            request.fire_id,
            request.schedule_id,
            request.task_name,
            self._config.broker,
            queue_name,
            mask_url(self._url),
            retryable,
            exc,
        )
        message = f"{type(exc).__name__}: {exc}"
        return DispatchError(self.engine, request.fire_id, message, retryable=retryable)
