"""arq dispatcher: enqueues a job by function name into an arq queue in Redis.

``ArqRedis.enqueue_job`` (arq 0.28) stores a pickled job (function name,
args, kwargs, enqueue time) under ``arq:job:<JOB_ID>`` and adds the job id
to the queue, a sorted set scored by the time in milliseconds at which the
job may start. This dispatcher writes the same two keys in the same WATCH and
MULTI transaction, with the fire id as the job id and the payload built by
arq's own ``serialize_job``. It uses redis-py's synchronous client rather
than a private event loop, because the outbox calls it from a worker thread
and a blocking socket with timeouts bounds each call without loop handling.

URL forms, with the arq connection as in ``RedisSettings.from_dsn``:

- ``redis://[[USER]:PASSWORD@]HOST:PORT/DB?queue_name=NAME`` (or
  ``rediss://``), for example ``redis://127.0.0.1:6379/0?queue_name=arq:queue``.
- ``unix:///PATH/redis.sock?db=DB&queue_name=NAME``.

``queue_name`` is the sorted set the worker reads, its
``WorkerSettings.queue_name``, and defaults to arq's ``arq:queue``. A
schedule's ``queue`` replaces it. Other query parameters go to redis-py.

The task name is the name the worker registered the function under: the
coroutine's ``__qualname__`` (``record_run``), or the ``name`` given to
``arq.worker.func``. A worker that does not know the name fails the job
with "function ... not found" in its log and in the job's result, which the
dispatcher does not see.

Re-sent fire: arq rejects a job id while ``arq:job:<JOB_ID>`` exists (from
enqueue until the job finishes, or until it expires unstarted after a day)
or while ``arq:result:<JOB_ID>`` exists (the worker's ``keep_result``, 3600 s
by default). A fire sent again within that time runs once. The dispatcher
logs the rejected copy and returns the fire id, because the fire is already
on the broker. After the result has expired, or with ``keep_result=0``, a
re-sent fire runs a second time.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit

import redis
from arq.constants import default_queue_name, expires_extra_ms, job_key_prefix, result_key_prefix
from arq.jobs import SerializationError, serialize_job
from arq.utils import timestamp_ms

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

REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})

RETRYABLE_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.ReadOnlyError,
    OSError,
)
# A ResponseError here is a Redis key of the wrong type under the queue name.
PERMANENT_ERRORS: tuple[type[Exception], ...] = (
    redis.RedisError,
    SerializationError,
    pickle.PicklingError,
    TypeError,
    ValueError,
)


@dataclass(frozen=True, slots=True)
class ArqQueueConfig:
    """A parsed arq URL: the Redis URL without ``queue_name``, and the default queue."""

    redis_url: str
    queue_name: str


@dataclass(frozen=True, slots=True)
class ArqJob:
    """The keys and values that ``enqueue_job`` writes for one job.

    ``score_ms`` is the time, in milliseconds since the epoch, at which the
    job may start. ``expires_ms`` is the lifetime of the job key.
    """

    job_id: str
    queue_name: str
    payload: bytes
    score_ms: int
    expires_ms: int

    @property
    def job_key(self) -> str:
        return job_key_prefix + self.job_id

    @property
    def result_key(self) -> str:
        return result_key_prefix + self.job_id


def parse_arq_url(url: str) -> ArqQueueConfig:
    """Parse an arq URL, raising ``ConfigurationError`` that names the bad part."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in REDIS_SCHEMES:
        raise ConfigurationError(
            f"invalid arq URL {mask_url(url)!r}: scheme {scheme!r} is not supported; "
            "use redis://HOST:PORT/DB?queue_name=NAME, rediss://... or unix:///PATH?db=DB"
        )
    if scheme != "unix":
        _check_database(url, parts.path)
    params = _query_params(url, parts.query)
    queue_name = params.pop("queue_name", default_queue_name)
    if not queue_name:
        raise ConfigurationError(
            f"invalid arq URL {mask_url(url)!r}: queue_name is empty; "
            f"set ?queue_name=NAME or leave it out for {default_queue_name!r}"
        )
    return ArqQueueConfig(_replace_query(url, params), queue_name)


def _check_database(url: str, path: str) -> None:
    database = path.strip("/")
    if database and not database.isdigit():
        raise ConfigurationError(
            f"invalid arq URL {mask_url(url)!r}: database {database!r} is not a number; "
            "use redis://HOST:PORT/DB with DB a number such as 0"
        )


def _replace_query(url: str, params: dict[str, str]) -> str:
    # Cut by hand because urlunsplit turns unix:///path into unix:/path,
    # which redis-py does not accept.
    base = url.partition("?")[0]
    return f"{base}?{urlencode(params)}" if params else base


def _query_params(url: str, query: str) -> dict[str, str]:
    pairs = parse_qsl(query, keep_blank_values=True)
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ConfigurationError(
            f"invalid arq URL {mask_url(url)!r}: parameter(s) {repeated} given twice"
        )
    return dict(pairs)


def build_job(request: DispatchRequest, queue_name: str, now_ms: int) -> ArqJob:
    """Build the job that ``enqueue_job`` would store for this call, enqueued at ``now_ms``.

    ``job_try`` is left as None, as ``enqueue_job`` leaves it, so the worker
    counts tries itself. The payload uses arq's default pickle serializer.
    """
    payload = serialize_job(
        request.task_name,
        tuple(request.args),
        dict(request.kwargs),
        None,
        now_ms,
    )
    return ArqJob(
        job_id=request.fire_id,
        queue_name=queue_name,
        payload=payload,
        score_ms=now_ms,
        expires_ms=expires_extra_ms,
    )


def store_job(client: redis.Redis, job: ArqJob) -> bool:
    """Write ``job`` unless its id is taken, returning False when it is.

    The WATCH on the job key makes the check and the write atomic against a
    concurrent enqueue of the same id, as in ``enqueue_job``.
    """
    with client.pipeline(transaction=True) as pipe:
        pipe.watch(job.job_key)  # type: ignore[no-untyped-call]
        if pipe.exists(job.job_key, job.result_key):
            pipe.reset()
            return False
        pipe.multi()
        pipe.psetex(job.job_key, job.expires_ms, job.payload)
        pipe.zadd(job.queue_name, {job.job_id: job.score_ms})
        try:
            pipe.execute()
        except redis.WatchError:
            return False
        except redis.ResponseError:
            # EXEC does not roll back: the job key was written even though
            # the ZADD failed, and it would reject this job id for a day.
            client.delete(job.job_key)
            raise
    return True


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
        raise ConfigurationError(
            f"invalid arq URL {mask_url(url)!r}: {reason}; "
            "check the Redis connection parameters in its query string"
        ) from exc
    return pool


class ArqDispatcher(Dispatcher):
    """Enqueues fires as arq jobs, one Redis connection pool per dispatcher.

    redis-py's client and pool are thread-safe, and each transaction takes
    a connection of its own, so calls need no lock.

    NOTE: only arq's default pickle serializer is written. A worker with a
    custom ``job_deserializer`` (msgpack, for example) cannot read the jobs.
    """

    engine = "arq"

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._url = url
        self._config = parse_arq_url(url)
        self._pool = open_pool(self._config.redis_url, timeout)
        self._client = redis.Redis(connection_pool=self._pool)
        self._closed = False

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<ArqDispatcher {mask_url(self._url)}{state}>"

    def dispatch(self, request: DispatchRequest) -> str:
        self._check_open(request)
        check_request(self.engine, request)
        queue_name = request.queue or self._config.queue_name
        try:
            job = build_job(request, queue_name, timestamp_ms())
            stored = store_job(self._client, job)
        except RETRYABLE_ERRORS as exc:
            raise self._failed(request, queue_name, exc, retryable=True) from exc
        except PERMANENT_ERRORS as exc:
            raise self._failed(request, queue_name, exc, retryable=False) from exc
        self._log_result(request, queue_name, stored)
        return request.fire_id

    def dispatch_many(self, requests: Sequence[DispatchRequest]) -> list[str | DispatchError]:
        return dispatch_each(self.engine, self.dispatch, requests)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()
            self._pool.disconnect()

    def _check_open(self, request: DispatchRequest) -> None:
        if self._closed:
            # Retryable: a fire caught by shutdown is sent again after restart.
            raise DispatchError(
                self.engine, request.fire_id, "dispatcher is closed", retryable=True
            )

    def _log_result(self, request: DispatchRequest, queue_name: str, stored: bool) -> None:
        if stored:
            logger.debug(
                "arq: fire %s of schedule %s enqueued as job %s (%s) in queue %r",
                request.fire_id,
                request.schedule_id,
                request.fire_id,
                request.task_name,
                queue_name,
            )
            return
        logger.info(
            "arq: fire %s of schedule %s not enqueued again: job %s is still queued, "
            "running or has a kept result",
            request.fire_id,
            request.schedule_id,
            request.fire_id,
        )

    def _failed(
        self, request: DispatchRequest, queue_name: str, exc: Exception, *, retryable: bool
    ) -> DispatchError:
        logger.warning(
            "arq: fire %s of schedule %s (task %s) not enqueued in queue %r at %s "
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
