"""Exceptions raised by the scheduler package.

Z4JSchedulerError
├── ScheduleError (ValueError)        invalid schedule definition
├── FrameError (PermissionError)      a rejected gRPC frame or client (HMAC, replay, version, CN)
├── BrainUnavailableError (ConnectionError)
└── LeadershipError (RuntimeError)    another instance holds the scheduler lock
"""

from __future__ import annotations


class Z4JSchedulerError(Exception):
    """Base class of every exception this package raises on purpose."""


class ScheduleError(Z4JSchedulerError, ValueError):
    """A schedule definition is invalid.

    Raised by the semantics layer when parsing a kind, expression, time zone,
    anchor or policy. ``field`` names the offending input, ``value`` is what was
    given, and the message states what is allowed. Callers show the message to
    the user and store nothing.
    """

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"invalid {field} {value!r}: {reason}")


class FrameError(Z4JSchedulerError, PermissionError):
    """The brain rejected a fire frame or the client.

    Causes: a bad HMAC, a replayed or reordered frame, an unsupported protocol
    version, an invalid field, or a client CN that is not allowed. Nothing the
    frame carries is recorded. Check that both processes share ``Z4J_SECRET``
    and that the client certificate's CN is in ``Z4J_SCHEDULER_GRPC_ALLOWED_CNS``.
    """


class BrainUnavailableError(Z4JSchedulerError, ConnectionError):
    """The brain's gRPC endpoint could not be reached or did not respond in time.

    Raised by the scheduler's client; the tick keeps the cursor where it was
    and retries, so no slot is lost.
    """


class LeadershipError(Z4JSchedulerError, RuntimeError):
    """Another scheduler instance holds the lock this instance needs.

    Raised at start-up on SQLite, where only one instance may run. Stop the
    other instance or point this one at PostgreSQL for several instances.
    """
