"""Fixtures shared by the whole suite: databases on SQLite and PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from z4j_brain_plugin.migrate import upgrade
from z4j_brain_plugin.models import Base, make_engine

# One database per test session, so concurrent sessions on one server do not
# drop each other's tables; it is dropped again when the session ends.
POSTGRES_URL = os.environ.get(
    "Z4J_TEST_POSTGRES_URL", f"postgresql://postgres@127.0.0.1:5432/z4j_tests_{os.getpid()}"
)
REDIS_URL = os.environ.get("Z4J_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _admin_execute(url: str, *statements: str) -> None:
    parsed = make_url(url)
    admin_url = parsed.set(database="postgres").render_as_string(hide_password=False)
    admin = make_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        for statement in statements:
            connection.execute(text(statement.format(name=parsed.database)))
    admin.dispose()


@pytest.fixture(scope="session")
def postgres_engine() -> Iterator[Engine]:
    drop = 'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    _admin_execute(POSTGRES_URL, drop, 'CREATE DATABASE "{name}"')
    engine = make_engine(POSTGRES_URL)
    upgrade(engine)
    yield engine
    engine.dispose()
    _admin_execute(POSTGRES_URL, drop)


def reset_tables(engine: Engine) -> None:
    """Empty every table and reset the fencing epoch, keeping the schema."""
    names = [table.name for table in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE"))
        else:
            for name in names:
                connection.execute(text(f"DELETE FROM {name}"))
        connection.execute(text("INSERT INTO scheduler_leader (id, epoch) VALUES (1, 0)"))


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated, empty database: a fresh SQLite file, or the emptied PostgreSQL test database."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("db") / "z4j.db"
        url = f"sqlite:///{path}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        return url
    engine = request.getfixturevalue("postgres_engine")
    reset_tables(engine)
    return POSTGRES_URL


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()
