"""Celery dispatcher: sends a task message by name with ``send_task``.

The dispatcher never imports the application. It publishes the message that
``task.apply_async()`` would publish (Celery's message protocol 2, JSON body)
with the fire id as the task id, so the application's workers run it under
that id.

Supported broker URLs: ``redis://``, ``rediss://``, ``amqp://``, ``amqps://``
and ``pyamqp://``. For these the dispatcher sets socket timeouts and a short
publish retry policy, because with Celery's defaults a publish to a broker
that accepts connections but never replies blocks indefinitely (the Redis
transport sets no socket timeout). On AMQP it also turns on publisher
confirms, so a returned task id means RabbitMQ has the message.

On Redis, ``dispatch_many`` builds each message with Celery's own
``create_task_message`` and kombu's channel, exactly as ``send_task`` would,
and pushes the whole batch in one MULTI/EXEC pipeline: one round trip
instead of one per fire, and all of a batch or none of it on the broker.
Unlike ``send_task`` it sends no ``before_task_publish`` or
``after_task_publish`` signal; the brain process connects no receiver.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import kombu.exceptions
import kombu.serialization
from celery import Celery
from kombu.entity import maybe_delivery_mode
from kombu.utils.json import dumps as json_dumps

from z4j_brain_plugin.dispatchers.base import (
    Dispatcher,
    DispatchRequest,
    check_request,
    dispatch_each,
    mask_url,
)
from z4j_brain_plugin.errors import ConfigurationError, DispatchError

logger = logging.getLogger(__name__)

# Seconds to wait for a TCP connect, a reply or a publisher confirm.
DEFAULT_TIMEOUT = 5.0

REDIS_SCHEMES = frozenset({"redis", "rediss"})
AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp"})

# One reconnect after a failed publish: enough to replace a connection that
# broke since the last publish (a broker restart, for example), short enough
# that a dead broker fails within a few timeouts.
PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 0.5,
}

# Errors a retry of the same message cannot fix, such as a body that JSON
# cannot encode. ``is_retryable`` picks out the connection failures that kombu
# also reports as ``KombuError``.
PERMANENT_ERRORS: tuple[type[Exception], ...] = (kombu.exceptions.KombuError, TypeError, ValueError)


@dataclass
class _Batch:
    """Messages of one ``dispatch_many`` call by Redis list, with the request index of each."""

    messages: defaultdict[str, list[tuple[int, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    # kombu queues by name, declared once per batch, and the Redis list of each.
    queues: dict[str, Any] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)


class CeleryDispatcher(Dispatcher):
    """Publishes fires to a Celery broker over one connection of its own.

    The connection and its producer are not taken from Celery's pools, which
    kombu shares between all apps with the same broker URL, so ``close()``
    closes only this dispatcher's socket. A lock serialises calls because a
    kombu connection is not thread-safe. The outbox makes one call at a time
    anyway.
    """

    engine = "celery"

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        config = celery_config(url, timeout)
        self._url = url
        self._app = Celery("z4j-dispatch", set_as_current=False, broker=url)
        self._app.conf.update(config)
        # Both are lazy: the first publish connects.
        self._connection = self._app.connection_for_write()
        self._producer = self._app.amqp.Producer(self._connection, auto_declare=False)
        self._connection_errors: tuple[type[Exception], ...] = (
            OSError,
            *self._connection.connection_errors,
            *self._connection.recoverable_connection_errors,
        )
        # Raised by the broker about one message or queue, for example
        # RabbitMQ's PRECONDITION_FAILED for a queue declared with other
        # arguments. They are not kombu errors, so they are listed here.
        self._channel_errors: tuple[type[Exception], ...] = tuple(self._connection.channel_errors)
        self._lock = threading.Lock()
        self._closed = False
        self._pipelined = urlsplit(url).scheme.lower() in REDIS_SCHEMES

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<CeleryDispatcher {mask_url(self._url)}{state}>"

    def dispatch(self, request: DispatchRequest) -> str:
        if self._pipelined:
            [result] = self.dispatch_many([request])
            if isinstance(result, DispatchError):
                raise result
            return result
        with self._lock:
            return self._send(request)

    def dispatch_many(self, requests: Sequence[DispatchRequest]) -> list[str | DispatchError]:
        with self._lock:
            if self._pipelined:
                return self._push_batch(requests)
            return dispatch_each(self.engine, self._send, requests)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._connection.release()
                self._app.close()

    def _send(self, request: DispatchRequest) -> str:
        self._check_open(request)
        check_request(self.engine, request)
        try:
            result = self._app.send_task(
                request.task_name,
                args=list(request.args),
                kwargs=dict(request.kwargs),
                queue=request.queue,
                task_id=request.fire_id,
                producer=self._producer,
                retry=True,
                retry_policy=PUBLISH_RETRY_POLICY,
                add_to_parent=False,
            )
        except (*self._connection_errors, *self._channel_errors, *PERMANENT_ERRORS) as exc:
            raise self._failed([request], exc)[0] from exc
        logger.debug(
            "celery: fire %s of schedule %s sent as task %s (%s) to queue %s",
            request.fire_id,
            request.schedule_id,
            result.id,
            request.task_name,
            request.queue or "default",
        )
        return str(result.id)

    def _push_batch(self, requests: Sequence[DispatchRequest]) -> list[str | DispatchError]:
        if not requests:
            return []
        if self._closed:
            return [self._closed_error(request) for request in requests]
        try:
            channel = self._producer.channel
        except (*self._connection_errors, kombu.exceptions.OperationalError) as exc:
            return list(self._failed(requests, exc))
        results: list[str | DispatchError] = [request.fire_id for request in requests]
        batch = _Batch()
        for index, request in enumerate(requests):
            try:
                check_request(self.engine, request)
                self._encode(channel, request, index, batch)
            except DispatchError as error:
                results[index] = error
            except PERMANENT_ERRORS as exc:
                [results[index]] = self._failed([request], exc)
        if batch.messages:
            self._push(requests, batch, results)
        return results

    def _encode(self, channel: Any, request: DispatchRequest, index: int, batch: _Batch) -> None:
        """Add to ``batch`` the JSON message that ``send_task`` would LPUSH for ``request``, and its list."""
        queue_name = request.queue or self._app.conf.task_default_queue
        queue = batch.queues.get(queue_name) or self._app.amqp.queues[queue_name]
        headers, properties, body, _ = self._app.amqp.create_task_message(
            request.fire_id,
            request.task_name,
            list(request.args),
            dict(request.kwargs),
            reply_to=self._app.thread_oid,
        )
        content_type, content_encoding, payload = kombu.serialization.dumps(
            body, serializer=self._app.conf.task_serializer
        )
        mode = queue.exchange.delivery_mode or self._app.conf.task_default_delivery_mode
        properties = {**properties, "delivery_mode": maybe_delivery_mode(mode)}
        message = channel.prepare_message(
            payload, 0, content_type, content_encoding, headers, properties
        )
        # kombu 5.6: what Channel.basic_publish does to a message on the
        # anonymous exchange before its _put pushes it to the queue's list.
        channel._inplace_augment_message(message, "", queue_name)
        key = channel._q_for_pri(queue_name, channel._get_message_priority(message, reverse=False))
        batch.queues[queue_name] = queue
        batch.keys[queue_name] = str(key)
        batch.messages[str(key)].append((index, str(json_dumps(message))))

    def _push(
        self, requests: Sequence[DispatchRequest], batch: _Batch, results: list[str | DispatchError]
    ) -> None:
        try:
            replies = self._execute(requests, batch, results)
        except (*self._connection_errors, *self._channel_errors) as exc:
            pushed = [index for items in batch.messages.values() for index, _ in items]
            errors = self._failed([requests[index] for index in pushed], exc)
            for index, error in zip(pushed, errors, strict=True):
                results[index] = error
            return
        for items, reply in zip(batch.messages.values(), replies, strict=True):
            if isinstance(reply, Exception):
                indexes = [index for index, _ in items]
                errors = self._failed([requests[index] for index in indexes], reply)
                for index, error in zip(indexes, errors, strict=True):
                    results[index] = error
        logger.debug(
            "celery: %d list(s) pushed: %s", len(batch.messages), ", ".join(batch.messages)
        )

    def _declare_queues(
        self, requests: Sequence[DispatchRequest], batch: _Batch, results: list[str | DispatchError]
    ) -> None:
        """Declare each queue as send_task does; a queue the broker rejects fails only its own fires."""
        for name, queue in list(batch.queues.items()):
            try:
                self._producer.maybe_declare(queue, retry=False)
            except self._channel_errors as exc:
                indexes = [index for index, _ in batch.messages.pop(batch.keys[name])]
                for index, error in zip(
                    indexes, self._failed([requests[i] for i in indexes], exc), strict=True
                ):
                    results[index] = error
                del batch.queues[name]

    def _execute(
        self, requests: Sequence[DispatchRequest], batch: _Batch, results: list[str | DispatchError]
    ) -> list[Any]:
        # One reconnect, as PUBLISH_RETRY_POLICY allows send_task: a broken
        # pooled connection is dropped by redis-py and the retry opens another.
        try:
            self._declare_queues(requests, batch, results)
            return self._execute_once(batch)
        except self._connection_errors as exc:
            logger.info(
                "celery: pipeline to %s failed (%r); reconnecting once", mask_url(self._url), exc
            )
            self._declare_queues(requests, batch, results)
            return self._execute_once(batch)

    def _execute_once(self, batch: _Batch) -> list[Any]:
        with self._producer.channel.conn_or_acquire() as client:
            pipeline = client.pipeline(transaction=True)
            for key, items in batch.messages.items():
                pipeline.lpush(key, *(message for _, message in items))
            replies: list[Any] = pipeline.execute(raise_on_error=False)
            return replies

    def _check_open(self, request: DispatchRequest) -> None:
        if self._closed:
            raise self._closed_error(request)

    def _closed_error(self, request: DispatchRequest) -> DispatchError:
        # Retryable: a fire caught by shutdown is sent again after restart.
        return DispatchError(self.engine, request.fire_id, "dispatcher is closed", retryable=True)

    def _failed(self, requests: Sequence[DispatchRequest], exc: Exception) -> list[DispatchError]:
        """Log one warning for ``requests`` failed by ``exc``; return one error per request."""
        retryable = is_retryable(exc, self._connection_errors)
        first = requests[0]
        logger.warning(
            "celery: %d fire(s) not sent to %s (retryable=%s), first fire %s of schedule %s (task %s): %r",
            len(requests),
            mask_url(self._url),
            retryable,
            first.fire_id,
            first.schedule_id,
            first.task_name,
            exc,
        )
        message = f"{type(exc).__name__}: {exc}"
        errors = []
        for request in requests:
            error = DispatchError(self.engine, request.fire_id, message, retryable=retryable)
            error.__cause__ = exc
            errors.append(error)
        return errors


def celery_config(url: str, timeout: float) -> dict[str, Any]:
    """Build the Celery settings that bound every publish to ``url`` in time.

    Raises ``ConfigurationError`` for an empty URL or a scheme other than
    Redis or AMQP, whose timeouts this module does not know how to set.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme in REDIS_SCHEMES:
        transport_options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
        }
    elif scheme in AMQP_SCHEMES:
        transport_options = {
            "confirm_publish": True,
            "read_timeout": timeout,
            "write_timeout": timeout,
        }
    else:
        supported = ", ".join(f"{name}://" for name in sorted(REDIS_SCHEMES | AMQP_SCHEMES))
        raise ConfigurationError(
            f"invalid celery broker URL {mask_url(url)!r}: scheme {scheme!r} is not supported; "
            f"use one of {supported}"
        )
    return {
        "broker_connection_timeout": timeout,
        # Nothing sends heartbeats between publishes, so negotiating them would
        # let RabbitMQ close an idle connection. The publish retry replaces a
        # connection that broke for any other reason.
        "broker_heartbeat": 0,
        "broker_transport_options": transport_options,
    }


def is_retryable(exc: Exception, connection_errors: tuple[type[Exception], ...]) -> bool:
    """Tell whether ``exc`` came from the connection rather than from the message.

    kombu wraps both connection and channel failures in ``OperationalError``,
    so the original exception, kept as ``__cause__``, decides. An
    ``OperationalError`` without a cause is kombu's own give-up after retries.
    """
    if isinstance(exc, kombu.exceptions.OperationalError):
        return exc.__cause__ is None or isinstance(exc.__cause__, connection_errors)
    return isinstance(exc, connection_errors)
