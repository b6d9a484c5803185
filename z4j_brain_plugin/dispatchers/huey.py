"""Huey dispatcher: writes a task message straight into the application's storage.

Huey has no broker protocol of its own: ``@huey.task()`` pickles a
``huey.registry.Message`` and pushes it onto the storage queue of the Huey
instance's name. This dispatcher builds that same message without importing
the application, with the fire id as the task id, so the consumer runs it
like any other call of the task.

Storage URL forms:

- ``redis://[:PASSWORD@]HOST:PORT/DB?name=NAME`` (or ``rediss://``) for
  ``RedisHuey``. Query parameters other than ``name`` go to redis-py.
- ``sqlite:///ABSOLUTE/PATH/huey.db?name=NAME`` for ``SqliteHuey``. The path
  must be absolute because the brain and the consumer run in different
  directories. ``sqlite:////path`` with four slashes names the same file.

``name`` is the Huey instance name (``RedisHuey('NAME')``), ``huey`` when
left out, as in Huey itself. A schedule's ``queue`` replaces it, so one
dispatcher serves every Huey application that shares the storage.

The task name is Huey's registry key, ``MODULE.FUNCTION`` of the decorated
function as the consumer imports it (``examples.huey_app.tasks.record_run``),
or ``MODULE.NAME`` when the task was declared with ``name=``. A consumer that
does not know the name logs an error and drops the message, so that mistake
is not seen here.
"""

from __future__ import annotations

import logging
import pickle
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import redis
from huey.registry import Message
from huey.serializer import Serializer
from huey.storage import BaseStorage, RedisStorage, SqliteStorage

from z4j_brain_plugin.dispatchers.base import (
    Dispatcher,
    DispatchRequest,
    check_request,
    dispatch_each,
    mask_url,
)
from z4j_brain_plugin.errors import ConfigurationError, DispatchError

logger = logging.getLogger(__name__)

# Seconds to wait for a Redis connect or reply, or for a locked SQLite file.
DEFAULT_TIMEOUT = 5.0

# Huey's own default instance name.
DEFAULT_NAME = "huey"

REDIS_SCHEMES = frozenset({"redis", "rediss"})

RETRYABLE_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.ReadOnlyError,
    sqlite3.OperationalError,
    OSError,
)
PERMANENT_ERRORS: tuple[type[Exception], ...] = (
    redis.RedisError,
    sqlite3.DatabaseError,
    pickle.PicklingError,
    TypeError,
    ValueError,
)


@dataclass(frozen=True, slots=True)
class HueyStorageConfig:
    """A parsed Huey storage URL.

    ``location`` is the Redis URL without the ``name`` parameter, or the
    absolute path of the SQLite file.
    """

    backend: Literal["redis", "sqlite"]
    location: str
    name: str


def parse_huey_url(url: str) -> HueyStorageConfig:
    """Parse a Huey storage URL, raising ``ConfigurationError`` that names the bad part."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    params = _query_params(url, parts.query)
    name = params.pop("name", DEFAULT_NAME)
    if not name:
        raise ConfigurationError(
            f"invalid huey URL {mask_url(url)!r}: name is empty; set ?name=NAME"
        )
    if scheme in REDIS_SCHEMES:
        location = urlunsplit(parts._replace(query=urlencode(params)))
        return HueyStorageConfig("redis", location, name)
    if scheme == "sqlite":
        return HueyStorageConfig(
            "sqlite", _sqlite_path(url, parts.netloc, parts.path, params), name
        )
    raise ConfigurationError(
        f"invalid huey URL {mask_url(url)!r}: scheme {scheme!r} is not supported; "
        "use redis://HOST:PORT/DB?name=NAME or sqlite:///ABSOLUTE/PATH?name=NAME"
    )


def _query_params(url: str, query: str) -> dict[str, str]:
    pairs = parse_qsl(query, keep_blank_values=True)
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ConfigurationError(
            f"invalid huey URL {mask_url(url)!r}: parameter(s) {repeated} given twice"
        )
    return dict(pairs)


def _sqlite_path(url: str, netloc: str, path: str, params: dict[str, str]) -> str:
    if netloc:
        raise ConfigurationError(
            f"invalid huey URL {url!r}: a SQLite URL has no host ({netloc!r}); "
            "use sqlite:///ABSOLUTE/PATH?name=NAME"
        )
    if params:
        raise ConfigurationError(
            f"invalid huey URL {url!r}: unknown parameter(s) {sorted(params)}; "
            "a SQLite URL accepts only name"
        )
    # An empty netloc means the path is absolute. Extra leading slashes are
    # dropped so that both sqlite:///tmp/x and sqlite:////tmp/x mean /tmp/x.
    file_path = "/" + unquote(path).lstrip("/")
    if file_path == "/" or file_path.endswith("/"):
        raise ConfigurationError(f"invalid huey URL {url!r}: the SQLite file path is missing")
    return file_path


def encode_message(request: DispatchRequest, serializer: Serializer) -> bytes:
    """Build the bytes that ``huey.enqueue()`` would store for this call.

    Retries, delay, priority, expiry and timeout are left as None so that the
    consumer applies the defaults declared on the task.
    """
    message = Message(
        id=request.fire_id,
        name=request.task_name,
        args=tuple(request.args),
        kwargs=dict(request.kwargs),
    )
    data: bytes = serializer.serialize(message)
    return data


class HueyDispatcher(Dispatcher):
    """Enqueues fires into a Huey storage (Redis list or SQLite table).

    Messages are pickled with Huey's default serializer, without compression.
    A consumer with ``compression=True`` still reads them but logs a warning
    for each one. A custom or signed serializer on the application's side
    cannot read them.

    Storages are opened on first use, one per Huey name, and shared by later
    calls. Creating them is guarded by a lock. Redis calls go through one
    thread-safe connection pool, and Huey's SQLite storage locks its own
    connection.

    NOTE: ``PriorityRedisHuey`` keeps its queue in a sorted set, which this
    dispatcher does not write, so that storage is not supported.
    """

    engine = "huey"

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._url = url
        self._config = parse_huey_url(url)
        self._timeout = timeout
        self._serializer = Serializer()
        self._pool: redis.ConnectionPool | None = None
        self._storages: dict[str, BaseStorage] = {}
        self._lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<HueyDispatcher {mask_url(self._url)}{state}>"

    def dispatch(self, request: DispatchRequest) -> str:
        self._check_open(request)
        check_request(self.engine, request)
        name = request.queue or self._config.name
        try:
            self._storage(name).enqueue(encode_message(request, self._serializer))
        except RETRYABLE_ERRORS as exc:
            raise self._failed(request, name, exc, retryable=True) from exc
        except PERMANENT_ERRORS as exc:
            raise self._failed(request, name, exc, retryable=False) from exc
        logger.debug(
            "huey: fire %s of schedule %s enqueued as task %s for huey %r",
            request.fire_id,
            request.schedule_id,
            request.task_name,
            name,
        )
        return request.fire_id

    def dispatch_many(self, requests: Sequence[DispatchRequest]) -> list[str | DispatchError]:
        return dispatch_each(self.engine, self.dispatch, requests)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for storage in self._storages.values():
                storage.close()
            self._storages.clear()
            if self._pool is not None:
                self._pool.disconnect()
                self._pool = None

    def _check_open(self, request: DispatchRequest) -> None:
        if self._closed:
            # Retryable: a fire caught by shutdown is sent again after restart.
            raise DispatchError(
                self.engine, request.fire_id, "dispatcher is closed", retryable=True
            )

    def _storage(self, name: str) -> BaseStorage:
        with self._lock:
            storage = self._storages.get(name)
            if storage is None:
                storage = self._open_storage(name)
                self._storages[name] = storage
            return storage

    def _open_storage(self, name: str) -> BaseStorage:
        if self._config.backend == "sqlite":
            # Creates Huey's tables when the consumer has not run yet.
            return SqliteStorage(name=name, filename=self._config.location, timeout=self._timeout)
        if self._pool is None:
            self._pool = redis.ConnectionPool.from_url(
                self._config.location,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
            )
        return RedisStorage(name=name, connection_pool=self._pool)

    def _failed(
        self, request: DispatchRequest, name: str, exc: Exception, *, retryable: bool
    ) -> DispatchError:
        logger.warning(
            "huey: fire %s of schedule %s (task %s) not enqueued for huey %r at %s "
            "(retryable=%s): %r",
            request.fire_id,
            request.schedule_id,
            request.task_name,
            name,
            mask_url(self._url),
            retryable,
            exc,
        )
        message = f"{type(exc).__name__}: {exc}"
        return DispatchError(self.engine, request.fire_id, message, retryable=retryable)
