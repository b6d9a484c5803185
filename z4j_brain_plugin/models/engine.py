"""Database engines for the brain and the scheduler, with per-backend settings."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Engine,
    Table,
    column,
    create_engine,
    event,
    func,
    insert,
    select,
    table,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

# Seconds a SQLite writer waits for the other process's write lock before failing.
SQLITE_BUSY_TIMEOUT = 30
# Seconds a pooled PostgreSQL connection may sit unused before its next
# checkout tests it with a round trip. A connection in steady use is not
# tested: a fire would pay one more round trip on every checkout.
PING_AFTER_IDLE = 2.0
_IDLE_SINCE = "z4j_idle_since"


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
            parsed,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT, "check_same_thread": False},
            **kwargs,
        )
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_sqlite)
        return engine
    engine = create_engine(parsed, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        _ping_idle_connections(engine)
    return engine


def _ping_idle_connections(engine: Engine) -> None:
    """Test a pooled connection at checkout when it was idle for ``PING_AFTER_IDLE`` seconds.

    A dead one (the server restarted, a firewall dropped it) is replaced
    before the caller sees it.
    """

    def checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    def checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop(_IDLE_SINCE, None)
        if since is None or time.monotonic() - since < PING_AFTER_IDLE:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            raise DisconnectionError(f"idle connection failed its test: {error}") from error

    event.listen(engine, "checkin", checked_in)
    event.listen(engine, "checkout", checked_out)


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
    # SQLITE_BUSY when the other process wrote in between. Writers therefore
    # take the lock up front and wait for it within the busy timeout.
    immediate = connection.get_execution_options().get(WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


WRITE_OPTION = "z4j_write"


def make_session_factory(engine: Engine, *, write: bool = False) -> sessionmaker[Session]:
    """Return a session factory; ``write=True`` sessions lock SQLite for writing at BEGIN."""
    bind = engine.execution_options(**{WRITE_OPTION: True}) if write else engine
    return sessionmaker(bind, expire_on_commit=False)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def reserve_ids(session: Session, table_name: str, count: int) -> list[int]:
    """Return ``count`` new ids of ``table_name``'s integer primary key ``id``, in ascending order.

    Bulk inserts take their ids here, so that rows can be written with a
    plain executemany, without RETURNING, and in a known order. The caller
    must hold the database's write lock on SQLite (a ``write=True`` session),
    where the ids are the ones after the highest stored id.
    """
    if count <= 0:
        return []
    if session.get_bind().dialect.name == "postgresql":
        sequence = f"pg_get_serial_sequence('{table_name}', 'id')"
        statement = text(f"SELECT nextval({sequence}) FROM generate_series(1, :count)")
        return sorted(int(value) for value in session.scalars(statement, {"count": count}))
    highest = session.scalar(select(func.max(column("id"))).select_from(table(table_name))) or 0
    return list(range(highest + 1, highest + 1 + count))


def bulk_insert(session: Session, target: Table, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows``, each with every column of ``target``, in one statement.

    On PostgreSQL the rows travel as one JSON document expanded by
    ``json_to_recordset``: psycopg then neither parses a statement that grows
    with the row count nor converts each parameter in Python. Elsewhere it
    is an executemany.
    """
    if not rows:
        return
    if session.get_bind().dialect.name != "postgresql":
        session.execute(insert(target), rows)
        return
    session.execute(text(_insert_from_json_sql(target)), {"rows": json_rows(rows)})


def json_rows(rows: list[dict[str, Any]]) -> str:
    """Encode rows for ``json_to_recordset``; instants become ISO 8601 strings with their offset."""
    return json.dumps(rows, default=_iso_instant, separators=(",", ":"))


def _iso_instant(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__} {value!r} as JSON")


def _insert_from_json_sql(target: Table) -> str:
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    names = ", ".join(column.name for column in target.columns)
    types = ", ".join(
        f"{column.name} {column.type.compile(dialect=dialect)}" for column in target.columns
    )
    return (
        f"INSERT INTO {target.name} ({names}) SELECT {names} "
        f"FROM json_to_recordset(CAST(:rows AS json)) AS r({types})"
    )
