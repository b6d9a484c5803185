"""Database engines for the brain and the scheduler, with per-backend settings."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

# Seconds a SQLite writer waits for the other process's write lock before failing.
SQLITE_BUSY_TIMEOUT = 30


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine for ``url``, SQLite or PostgreSQL (psycopg 3).

    SQLite files are shared by the brain and its scheduler child, so they run
    in WAL mode with a busy timeout and foreign keys on. ``postgresql://`` URLs
    use the psycopg 3 driver.
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT, "check_same_thread": False}, **kwargs
        )
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_sqlite)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(parsed, **kwargs)


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # Transactions are begun by _begin_sqlite, not by the sqlite3 module.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT * 1000}")
    cursor.close()


def _begin_sqlite(connection: Any) -> None:
    # A deferred transaction that reads and then writes fails at once with
    # SQLITE_BUSY when the other process wrote in between; writers take the
    # lock up front instead and wait for it within the busy timeout.
    immediate = connection.get_execution_options().get(WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


WRITE_OPTION = "z4j_write"


def make_session_factory(engine: Engine, *, write: bool = False) -> sessionmaker[Session]:
    """Return a session factory; ``write=True`` sessions lock SQLite for writing at BEGIN."""
    bind = engine.execution_options(**{WRITE_OPTION: True}) if write else engine
    return sessionmaker(bind, expire_on_commit=False)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"
