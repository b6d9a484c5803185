"""Leader gates: exactly one scheduler instance fires at a time.

PostgreSQL: a session-level advisory lock held on a dedicated connection for
the whole leadership; the server releases it when that session ends, so a
crashed leader's lock frees itself. SQLite (one host): an exclusive ``flock``
on a file beside the database, which the operating system releases when the
process dies.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import IO, Protocol

from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError

from z4j_scheduler.errors import LeadershipError

logger = logging.getLogger(__name__)

# Advisory lock key shared by every scheduler instance of one database.
ADVISORY_LOCK_KEY = 0x7A346A5C


class LeaderGate(Protocol):
    def try_acquire(self) -> bool:
        """Return True when this instance leads now (acquiring if needed)."""

    def still_leading(self) -> bool:
        """Return False as soon as the leadership is known lost."""

    def release(self) -> None: ...


class SqliteFileGate:
    """One instance per SQLite database, enforced with a lock file."""

    def __init__(self, lock_path: Path) -> None:
        self.lock_path = lock_path
        self._handle: IO[str] | None = None

    def __repr__(self) -> str:
        return f"<SqliteFileGate {self.lock_path} held={self._handle is not None}>"

    def try_acquire(self) -> bool:
        if self._handle is not None:
            return True
        handle = self.lock_path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise LeadershipError(
                f"another scheduler holds {self.lock_path}: only one instance may run on a SQLite "
                "database; stop it, or use PostgreSQL to run several instances"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle
        return True

    def still_leading(self) -> bool:
        return self._handle is not None

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


class PostgresAdvisoryGate:
    """Leadership through ``pg_try_advisory_lock`` on a dedicated connection."""

    def __init__(self, engine: Engine, key: int = ADVISORY_LOCK_KEY) -> None:
        self.engine = engine
        self.key = key
        self._connection: Connection | None = None

    def __repr__(self) -> str:
        return f"<PostgresAdvisoryGate key={self.key} held={self._connection is not None}>"

    def try_acquire(self) -> bool:
        if self._connection is not None:
            return self.still_leading()
        connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            acquired = bool(connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}))
        except DBAPIError:
            connection.close()
            raise
        if not acquired:
            connection.close()
            return False
        self._connection = connection
        return True

    def still_leading(self) -> bool:
        if self._connection is None:
            return False
        try:
            self._connection.execute(text("SELECT 1"))
        except DBAPIError:
            logger.warning("lost the leader lock connection; stepping down")
            self._drop()
            return False
        return True

    def release(self) -> None:
        if self._connection is None:
            return
        try:
            self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
        except DBAPIError:
            pass  # the session is gone, and the server released the lock with it
        self._drop()

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.invalidate()
            self._connection.close()
            self._connection = None


def gate_for(engine: Engine) -> LeaderGate:
    """Return the gate that suits the engine's database."""
    if engine.dialect.name == "postgresql":
        return PostgresAdvisoryGate(engine)
    database = make_url(str(engine.url)).database
    if not database or database == ":memory:":
        raise LeadershipError("the scheduler needs a SQLite file or PostgreSQL, not an in-memory database")
    return SqliteFileGate(Path(database).resolve().with_name(Path(database).name + ".scheduler.lock"))
