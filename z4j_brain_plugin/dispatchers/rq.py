"""RQ dispatcher: enqueues a job by function path, the way ``Queue.enqueue_call`` does.

RQ addresses a job's function by its dotted import path, the job's
``func_name`` (``examples.rq_app.tasks.record_run``), which the worker
imports when it runs the job. The dispatcher passes that path as a string,
so it never imports the application. The job id is the fire id.

Redis URL: ``redis://[:PASSWORD@]HOST:PORT/DB`` or ``rediss://``, with an
optional ``serializer`` query parameter, ``pickle`` (RQ's default) or
``json``, which must match the worker's ``--serializer``. Other query
parameters go to redis-py. A schedule's ``queue`` is the RQ queue name,
``default`` when left out, as in RQ.

Jobs get the defaults of a plain ``queue.enqueue()``: a 180 s job timeout
and the worker's result and failure TTLs. Options set on the application's
side, such as the ``timeout`` of an ``@job`` decorator, are not known here
and do not apply. A worker that cannot import the path fails the job and
moves it to the queue's failed job registry, which this dispatcher does not
see.

Re-sent fires: the job is enqueued with RQ's unique enqueue
(``unique=True``), a Lua script that stores the job hash and pushes the id
only when no job hash with that id exists. A fire sent again while its job
hash exists is not enqueued a second time, and the dispatcher returns its
id as a success. The hash exists while the job is queued or running, then
for the worker's result TTL after success (500 s by default) or its failure
TTL after failure (one year by default). A fire re-sent after the hash has
expired runs again.
"""

from __future__ import annotations

import inspect
import logging
import pickle
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
import rq
from rq import Queue
from rq.exceptions import DuplicateJobError

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

# RQ's own default queue name.
DEFAULT_QUEUE = "default"

REDIS_SCHEMES = frozenset({"redis", "rediss"})
# Names of RQ's built-in serializers, as the worker's --serializer takes them.
SERIALIZERS = frozenset({"pickle", "json"})

# A dotted path of identifiers. RQ also resolves a bare builtin name such as
# ``print``, so a single identifier is accepted.
FUNCTION_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")

RETRYABLE_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.ReadOnlyError,
    OSError,
)
PERMANENT_ERRORS: tuple[type[Exception], ...] = (
    redis.RedisError,
    pickle.PicklingError,
    TypeError,
    ValueError,
)


@dataclass(frozen=True, slots=True)
class RQConnectionConfig:
    """A parsed RQ Redis URL: the URL for redis-py and the job serializer, pickle or json."""

    location: str
    serializer: str


def parse_rq_url(url: str) -> RQConnectionConfig:
    """Parse an RQ Redis URL, raising ``ConfigurationError`` that names the bad part."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in REDIS_SCHEMES:
        raise ConfigurationError(
            f"invalid rq Redis URL {mask_url(url)!r}: scheme {scheme!r} is not supported; "
            "use redis://HOST:PORT/DB or rediss://HOST:PORT/DB"
        )
    params = _query_params(url, parts.query)
    serializer = params.pop("serializer", "pickle")
    if serializer in SERIALIZERS:
        location = urlunsplit(parts._replace(query=urlencode(params)))
        return RQConnectionConfig(location, serializer)
    raise ConfigurationError(
        f"invalid rq Redis URL {mask_url(url)!r}: serializer {serializer!r} is not supported; "
        "use serializer=pickle or serializer=json, the same as the worker's --serializer"
    )


def _query_params(url: str, query: str) -> dict[str, str]:
    pairs = parse_qsl(query, keep_blank_values=True)
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ConfigurationError(
            f"invalid rq Redis URL {mask_url(url)!r}: parameter(s) {repeated} given twice"
        )
    return dict(pairs)


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
        raise ConfigurationError(f"invalid rq Redis URL {mask_url(url)!r}: {exc}") from exc
    return client


def check_function_path(engine: str, request: DispatchRequest) -> None:
    """Raise a non-retryable ``DispatchError`` unless the task name is a dotted import path."""
    if not FUNCTION_PATH.fullmatch(request.task_name):
        raise DispatchError(
            engine,
            request.fire_id,
            f"task_name {request.task_name!r} is not a dotted import path; "
            "use MODULE.FUNCTION as the worker imports it, e.g. myapp.tasks.send_report",
            retryable=False,
        )


def _check_unique_enqueue() -> None:
    if "unique" not in inspect.signature(Queue.enqueue_call).parameters:
        raise ConfigurationError(
            f"engine 'rq' needs Queue.enqueue_call(unique=...), which the installed rq "
            f"{rq.__version__} lacks; run: pip install 'rq>=3.0,<4'"
        )


class RQDispatcher(Dispatcher):
    """Enqueues fires as RQ jobs over one thread-safe redis-py connection pool.

    ``Queue`` objects are created on first use, one per queue name, and
    shared by later calls. Creating them is guarded by a lock.
    """

    engine = "rq"

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        _check_unique_enqueue()
        self._url = url
        self._config = parse_rq_url(url)
        self._client = open_redis(url, self._config.location, timeout)
        self._queues: dict[str, Queue] = {}
        self._lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<RQDispatcher {mask_url(self._url)}{state}>"

    def dispatch(self, request: DispatchRequest) -> str:
        self._check_open(request)
        check_request(self.engine, request)
        check_function_path(self.engine, request)
        queue_name = request.queue or DEFAULT_QUEUE
        try:
            job = self._queue(queue_name).enqueue_call(
                request.task_name,
                args=list(request.args),
                kwargs=dict(request.kwargs),
                job_id=request.fire_id,
                unique=True,
            )
        except DuplicateJobError:
            # NOTE: RQ's script stores the job hash before it pushes the id,
            # and Redis does not undo the store when the push fails (a queue
            # key of the wrong type). A fire re-sent after that failure is
            # taken for a duplicate here although it never reached the queue.
            return self._already_enqueued(request, queue_name)
        except RETRYABLE_ERRORS as exc:
            raise self._failed(request, queue_name, exc, retryable=True) from exc
        except PERMANENT_ERRORS as exc:
            raise self._failed(request, queue_name, exc, retryable=False) from exc
        logger.debug(
            "rq: fire %s of schedule %s enqueued as job %s (%s) on queue %s",
            request.fire_id,
            request.schedule_id,
            job.id,
            request.task_name,
            queue_name,
        )
        return str(job.id)

    def dispatch_many(self, requests: Sequence[DispatchRequest]) -> list[str | DispatchError]:
        return dispatch_each(self.engine, self.dispatch, requests)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._queues.clear()
            self._client.close()

    def _check_open(self, request: DispatchRequest) -> None:
        if self._closed:
            # Retryable: a fire caught by shutdown is sent again after restart.
            raise DispatchError(
                self.engine, request.fire_id, "dispatcher is closed", retryable=True
            )

    def _queue(self, name: str) -> Queue:
        with self._lock:
            queue = self._queues.get(name)
            if queue is None:
                queue = Queue(name, connection=self._client, serializer=self._config.serializer)
                self._queues[name] = queue
            return queue

    def _already_enqueued(self, request: DispatchRequest, queue_name: str) -> str:
        logger.info(
            "rq: fire %s of schedule %s not enqueued again on queue %s: job %s already exists",
            request.fire_id,
            request.schedule_id,
            queue_name,
            request.fire_id,
        )
        return request.fire_id

    def _failed(
        self, request: DispatchRequest, queue_name: str, exc: Exception, *, retryable: bool
    ) -> DispatchError:
        logger.warning(
            "rq: fire %s of schedule %s (task %s) not enqueued on queue %s at %s "
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
