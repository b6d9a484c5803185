"""The dispatcher role: put one fire's task message on an engine's broker.

A dispatcher sends the same message the application's own ``delay()`` or
``enqueue()`` would send, addressed by task name, so the application's
existing workers run the task and no wrapper task or extra worker is needed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import SplitResult, urlsplit, urlunsplit

from z4j_brain_plugin.errors import DispatchError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DispatchRequest:
    """One fire to hand to an engine.

    ``fire_id`` is a UUID string that becomes the engine's task or message id.
    ``args`` and ``kwargs`` contain JSON values. ``queue`` None means the engine's
    default queue.
    """

    fire_id: str
    schedule_id: int
    task_name: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    queue: str | None


class Dispatcher(Protocol):
    """Sends fires to one engine's broker.

    ``dispatch`` blocks, so the outbox calls it from a worker thread. Every
    call is bounded in time: a broker that is down or does not reply raises
    ``DispatchError(retryable=True)`` after the implementation's timeouts and
    never retries forever.
    """

    engine: str

    def dispatch(self, request: DispatchRequest) -> str:
        """Put one message on the broker and return the engine's task id.

        Raises ``DispatchError`` with ``retryable=True`` when the broker is
        unreachable or timed out, and ``retryable=False`` when retrying the
        same request cannot succeed.
        """
        ...

    def dispatch_many(self, requests: Sequence[DispatchRequest]) -> list[str | DispatchError]:
        """Dispatch each request and return one task id or error per request, in order."""
        return dispatch_each(self.engine, self.dispatch, requests)

    def close(self) -> None:
        """Release connections. Calling it twice is harmless."""
        ...


def dispatch_each(
    engine: str, send: Callable[[DispatchRequest], str], requests: Sequence[DispatchRequest]
) -> list[str | DispatchError]:
    """Call ``send`` on each request, collecting each task id or ``DispatchError``.

    After the first retryable error the broker is taken as unavailable and the
    remaining requests are not attempted: each gets its own retryable error.
    This bounds a batch against a down broker to one timeout, not one per
    request. A non-retryable error concerns only its own request.
    """
    results: list[str | DispatchError] = []
    for index, request in enumerate(requests):
        try:
            results.append(send(request))
        except DispatchError as error:
            results.append(error)
            if error.retryable:
                results.extend(_skip_rest(engine, requests[index + 1 :], error))
                break
    return results


def _skip_rest(
    engine: str, requests: Sequence[DispatchRequest], cause: DispatchError
) -> list[str | DispatchError]:
    if requests:
        logger.warning(
            "%s: %d fire(s) not attempted because an earlier fire failed: %s",
            engine,
            len(requests),
            cause,
        )
    message = f"not attempted because the broker failed on fire {cause.fire_id}"
    return [DispatchError(engine, request.fire_id, message, retryable=True) for request in requests]


def check_request(engine: str, request: DispatchRequest) -> None:
    """Raise a non-retryable ``DispatchError`` for a request no engine could run."""
    if not request.task_name.strip():
        raise DispatchError(
            engine,
            request.fire_id,
            "task_name is empty; set the schedule's task name",
            retryable=False,
        )
    bad_keys = [key for key in request.kwargs if not isinstance(key, str)]
    if bad_keys:
        raise DispatchError(
            engine,
            request.fire_id,
            f"kwargs keys must be strings, got {bad_keys!r}",
            retryable=False,
        )


def mask_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``***``, for logs and reprs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=_masked_netloc(parts)))


def _masked_netloc(parts: SplitResult) -> str:
    # The netloc is rebuilt from its raw text so that a user name or host
    # spelled with percent-escapes comes back unchanged.
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return f"{user}:***@{hostport}"
