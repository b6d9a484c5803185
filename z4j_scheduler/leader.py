"""Leader gates: exactly one scheduler instance fires at a time.

PostgreSQL: a session-level advisory lock held on a dedicated connection for
the whole leadership. The server releases it when that session ends, so a
crashed leader's lock frees itself. The lock belongs to one server session,
so the connection must reach PostgreSQL directly or through a pool in session
mode. A proxy in transaction pooling mode (PgBouncer with
``pool_mode=transaction``) runs consecutive transactions on different server
sessions: the lock would stay with a session this process no longer talks to.
The gate checks for this after acquiring the lock and before every frame,
and raises :class:`SessionLockError` when it detects one.

SQLite (one host): an exclusive ``flock`` on a file beside the database,
which the operating system releases when the process dies.
"""

from __future__ import annotations

import fcntl
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from z4j_scheduler.errors import LeadershipError

logger = logging.getLogger(__name__)

# Advisory lock key shared by every scheduler instance of one database.
# PostgreSQL scopes advisory locks to a database, so instances of other
# databases on the same server do not compete.
ADVISORY_LOCK_KEY = 0x7A346A5C

# Seconds one acquisition attempt waits for the lock inside PostgreSQL. A
# follower is granted the lock as soon as the leader releases it, so a
# handover does not wait for the next attempt.
ACQUIRE_WAIT = 1.0

# Seconds a statement on the lock connection may run before the server
# cancels it; longer than ACQUIRE_WAIT.
STATEMENT_TIMEOUT = 10.0

# libpq settings of the lock connection: find a dead server or a broken
# network within seconds rather than the kernel's default of hours.
LOCK_CONNECT_ARGS: dict[str, Any] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    # Milliseconds unacknowledged data may wait before the connection is dropped.
    "tcp_user_timeout": 10_000,
}

# SQLSTATE of lock_not_available, raised when lock_timeout expires.
LOCK_NOT_AVAILABLE = "55P03"

SESSION_LOCK_FIX = (
    "point Z4J_DATABASE_URL (--database-url) of the scheduler at PostgreSQL directly, "
    "or at a pool in session mode (PgBouncer pool_mode=session)"
)


class SessionLockError(LeadershipError):
    """The leader lock connection is not a single PostgreSQL session.

    Raised when the gate detects its statements running on more than one
    server session, the sign of a proxy in transaction pooling mode. Retrying does
    not help: the database URL must change.
    """


class LeaderGate(Protocol):
    def try_acquire(self) -> bool:
        """Return True when this instance leads now, acquiring if needed.

        May block up to about ``ACQUIRE_WAIT`` seconds for the lock.
        """

    def still_leading(self) -> bool:
        """Return False as soon as the leadership is known lost."""

    def release(self) -> None:
        """Give up the leadership if held and close the gate's connection."""


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


@dataclass(frozen=True, slots=True)
class SessionProbe:
    """The lock connection's report right after taking the lock.

    ``lock_pid`` is the server process id of the session that took the lock,
    read in the same statement. ``check_pid`` and ``lock_visible`` come from a
    later statement: its session's process id, and whether ``pg_locks`` shows
    the lock granted to that session.
    """

    lock_pid: int
    check_pid: int
    lock_visible: bool


def session_lock_problem(probe: SessionProbe) -> str | None:
    """Return why the lock is not held by this connection's one session, or None when it is."""
    if probe.check_pid != probe.lock_pid:
        return (
            f"the lock was taken by server process {probe.lock_pid} but the next statement ran "
            f"in server process {probe.check_pid}"
        )
    if not probe.lock_visible:
        return f"pg_locks shows no advisory lock granted to server process {probe.check_pid}"
    return None


def session_lock_message(problem: str) -> str:
    """Build the SessionLockError message for ``problem``, naming the cause and the fix."""
    return (
        f"the scheduler's leader lock needs a session-level PostgreSQL connection, but {problem}; "
        "this happens behind a proxy in transaction pooling mode (such as PgBouncer with "
        f"pool_mode=transaction), which would leave the lock with a session this process no "
        f"longer uses: {SESSION_LOCK_FIX}"
    )


def lock_engine(engine: Engine, application_name: str = "z4j-scheduler leader lock") -> Engine:
    """Create the engine of the dedicated lock connection, for the database of ``engine``.

    No pool: the gate keeps one connection open for as long as it runs, and
    a broken one is replaced by a new connection.
    """
    connect_args = {**LOCK_CONNECT_ARGS, "application_name": application_name}
    # Autocommit: a check before a frame is one round trip, without BEGIN and COMMIT.
    return create_engine(
        engine.url, poolclass=NullPool, connect_args=connect_args, isolation_level="AUTOCOMMIT"
    )


class PostgresAdvisoryGate:
    """Leadership through a PostgreSQL advisory lock on a dedicated connection.

    A follower keeps the connection open between attempts, and each attempt
    waits up to ``wait`` seconds inside PostgreSQL, so it is granted the lock
    within milliseconds of the leader releasing it.
    """

    def __init__(
        self, engine: Engine, key: int = ADVISORY_LOCK_KEY, *, wait: float = ACQUIRE_WAIT
    ) -> None:
        if wait <= 0 or wait >= STATEMENT_TIMEOUT:
            raise ValueError(
                f"invalid lock wait {wait}: use positive seconds below {STATEMENT_TIMEOUT}"
            )
        self.engine = lock_engine(engine)
        self.key = key
        self.wait = wait
        self._connection: Connection | None = None
        # Server process id of the session holding the lock; None while following.
        self._lock_pid: int | None = None

    def __repr__(self) -> str:
        return f"<PostgresAdvisoryGate key={self.key} held={self._lock_pid is not None}>"

    @property
    def session_pid(self) -> int | None:
        """Server process id of the session holding the lock; None while following."""
        return self._lock_pid

    def try_acquire(self) -> bool:
        """Wait up to ``wait`` seconds for the lock; raise SessionLockError behind a pooler.

        Raises DBAPIError when the database cannot be reached; the caller retries.
        """
        if self._lock_pid is not None:
            return self.still_leading()
        connection = self._open()
        try:
            self._lock_pid = self._wait_for_lock(connection)
            probe = self._probe_session(connection, self._lock_pid)
        except SQLAlchemyError as error:
            if isinstance(error, DBAPIError) and _is_lock_timeout(error):
                return False
            self._drop()
            raise
        problem = session_lock_problem(probe)
        if problem is not None:
            self._reject_session(problem)
        return True

    def still_leading(self) -> bool:
        """Check the lock session with one statement; False when the connection is gone.

        Raises SessionLockError when the statement ran in another server
        session than the one that took the lock.
        """
        if self._connection is None or self._lock_pid is None:
            return False
        try:
            pid = int(self._connection.scalar(text("SELECT pg_backend_pid()")) or 0)
        except SQLAlchemyError as error:
            logger.warning("lost the leader lock connection (%s); stepping down", _one_line(error))
            self._drop()
            return False
        if pid != self._lock_pid:
            self._reject_session(
                f"the lock was taken by server process {self._lock_pid} but the "
                f"check ran in server process {pid}"
            )
        return True

    def release(self) -> None:
        """Unlock if held and close the connection; a lost session needs no unlock."""
        if self._connection is None:
            return
        if self._lock_pid is not None:
            try:
                self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
            except SQLAlchemyError as error:
                logger.warning(
                    "could not unlock the leader lock (%s); the server frees it with the "
                    "closed session",
                    _one_line(error),
                )
        self._drop()

    def _open(self) -> Connection:
        if self._connection is None:
            connection = self.engine.connect()
            try:
                # Session-level timeouts: every statement on this connection
                # is a lock attempt, a lock check or an unlock.
                connection.execute(
                    text(
                        "SELECT set_config('lock_timeout', :lock, false),"
                        " set_config('statement_timeout', :statement, false)"
                    ),
                    {
                        "lock": f"{int(self.wait * 1000)}ms",
                        "statement": f"{int(STATEMENT_TIMEOUT * 1000)}ms",
                    },
                )
            except BaseException:
                connection.invalidate()
                connection.close()
                raise
            self._connection = connection
        return self._connection

    def _wait_for_lock(self, connection: Connection) -> int:
        """Take the lock and return the server process id of the session that holds it.

        Raises DBAPIError with SQLSTATE 55P03 when ``wait`` seconds pass first.
        """
        row = connection.execute(
            text("SELECT pg_advisory_lock(:key), pg_backend_pid()"), {"key": self.key}
        ).one()
        return int(row[1])

    def _probe_session(self, connection: Connection, lock_pid: int) -> SessionProbe:
        # A bigint advisory key shows in pg_locks as classid (high 32 bits),
        # objid (low 32 bits) and objsubid 1.
        high, low = divmod(self.key, 1 << 32)
        row = connection.execute(
            text(
                "SELECT pg_backend_pid(), EXISTS (SELECT 1 FROM pg_locks"
                " WHERE locktype = 'advisory'"
                " AND pid = pg_backend_pid() AND granted AND classid = :high AND objid = :low"
                " AND objsubid = 1)"
            ),
            {"high": high, "low": low},
        ).one()
        return SessionProbe(lock_pid, int(row[0]), bool(row[1]))

    def _reject_session(self, problem: str) -> None:
        self._unlock_behind_pooler()
        self._drop()
        raise SessionLockError(session_lock_message(problem))

    def _unlock_behind_pooler(self, attempts: int = 8) -> None:
        # Each statement may land on another server session, so the unlock is
        # repeated until one lands on the session holding the lock. A lock it
        # misses stays held until the pooler closes that server connection.
        assert self._connection is not None
        for _ in range(attempts):
            try:
                unlocked = self._connection.scalar(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": self.key}
                )
            except SQLAlchemyError:
                return
            if unlocked:
                return
        logger.error(
            "could not release the leader lock through the pooler after %d attempts; it stays "
            "held until the pooler closes its server connection",
            attempts,
        )

    def _drop(self) -> None:
        self._lock_pid = None
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.invalidate()
            connection.close()


def _is_lock_timeout(error: DBAPIError) -> bool:
    return getattr(error.orig, "sqlstate", None) == LOCK_NOT_AVAILABLE


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300]


def gate_for(engine: Engine) -> LeaderGate:
    """Return the gate that suits the engine's database."""
    if engine.dialect.name == "postgresql":
        return PostgresAdvisoryGate(engine)
    database = make_url(str(engine.url)).database
    if not database or database == ":memory:":
        raise LeadershipError(
            "the scheduler needs a SQLite file or PostgreSQL, not an in-memory database"
        )
    return SqliteFileGate(
        Path(database).resolve().with_name(Path(database).name + ".scheduler.lock")
    )
