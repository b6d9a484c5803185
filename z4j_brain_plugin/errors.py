"""Exceptions raised by the brain package.

BrainError
├── ConfigurationError (ValueError)      a setting is invalid or missing
├── ValidationError (ValueError)         REST or CLI input rejected; nothing written
├── NotFoundError (LookupError)          a project, schedule or fire does not exist
├── AuthError (PermissionError)          missing, unknown or under-privileged API token
├── DispatchError (RuntimeError)         an engine broker rejected or did not take a message
└── PkiError (RuntimeError)              certificates could not be minted or loaded
"""

from __future__ import annotations


class BrainError(Exception):
    """Base class of every exception this package raises on purpose."""


class ConfigurationError(BrainError, ValueError):
    """A setting is invalid or a required one is missing.

    Raised at start-up or when a schedule names an engine that has no broker
    configured. Fix the named ``Z4J_`` setting and restart.
    """


class ValidationError(BrainError, ValueError):
    """Input from an edge (REST, CLI, declarative spec) is invalid.

    ``field`` and ``value`` name the offending input. The REST API returns 422
    with both, and nothing is written.
    """

    def __init__(self, field: str, value: object, message: str) -> None:
        self.field = field
        self.value = value
        self.message = message
        super().__init__(message)


class NotFoundError(BrainError, LookupError):
    """A project, schedule or fire does not exist (or is not visible to the token)."""


class AuthError(BrainError, PermissionError):
    """An API token is missing, unknown, revoked, or lacks the role a request needs."""


class DispatchError(BrainError, RuntimeError):
    """An engine's broker did not accept a fire's message.

    Raised by dispatchers. ``retryable`` decides whether the outbox should to retry with
    backoff (connection refused, timeout) or to mark the fire failed for a
    person to look at (unknown queue, payload the engine cannot encode).
    """

    def __init__(self, engine: str, fire_id: str, message: str, *, retryable: bool) -> None:
        self.engine = engine
        self.fire_id = fire_id
        self.retryable = retryable
        super().__init__(f"{engine} dispatch of fire {fire_id} failed: {message}")


class PkiError(BrainError, RuntimeError):
    """Certificates could not be minted, written or loaded; the message names the file."""
