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
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import kombu.exceptions  # type: ignore[import-untyped]
from celery import Celery  # type: ignore[import-untyped]

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

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<CeleryDispatcher {mask_url(self._url)}{state}>"

    def dispatch(self, request: DispatchRequest) -> str:
        with self._lock:
            return self._send(request)

    def dispatch_many(self, requests: Sequence[DispatchRequest]) -> list[str | DispatchError]:
        with self._lock:
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
            raise self._failed(request, exc) from exc
        logger.debug(
            "celery: fire %s of schedule %s sent as task %s (%s) to queue %s",
            request.fire_id,
            request.schedule_id,
            result.id,
            request.task_name,
            request.queue or "default",
        )
        return str(result.id)

    def _check_open(self, request: DispatchRequest) -> None:
        if self._closed:
            # Retryable: a fire caught by shutdown is sent again after restart.
            raise DispatchError(
                self.engine, request.fire_id, "dispatcher is closed", retryable=True
            )

    def _failed(self, request: DispatchRequest, exc: Exception) -> DispatchError:
        retryable = is_retryable(exc, self._connection_errors)
        logger.warning(
            "celery: fire %s of schedule %s (task %s) not sent to %s (retryable=%s): %r",
            request.fire_id,
            request.schedule_id,
            request.task_name,
            mask_url(self._url),
            retryable,
            exc,
        )
        message = f"{type(exc).__name__}: {exc}"
        return DispatchError(self.engine, request.fire_id, message, retryable=retryable)


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
