"""Pooled PostgreSQL connections are tested at checkout only after sitting idle."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from tests.conftest import POSTGRES_URL
from z4j_brain_plugin.models import engine as engine_module
from z4j_brain_plugin.models import make_engine


@pytest.fixture
def pooled(postgres_engine: Engine) -> Iterator[Engine]:
    engine = make_engine(POSTGRES_URL, pool_size=1, max_overflow=0)
    yield engine
    engine.dispose()


def backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(text("SELECT pg_backend_pid()")) or 0)


def terminate(admin: Engine, pid: int) -> None:
    with admin.connect() as connection:
        assert connection.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        connection.commit()


def test_idle_connection_killed_by_the_server_is_replaced(
    pooled: Engine, postgres_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "PING_AFTER_IDLE", 0.0)
    first = backend_pid(pooled)
    terminate(postgres_engine, first)
    second = backend_pid(pooled)
    assert second not in (0, first)


def test_connection_in_steady_use_is_not_tested(
    pooled: Engine, postgres_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "PING_AFTER_IDLE", 3600.0)
    first = backend_pid(pooled)
    terminate(postgres_engine, first)
    # Not idle long enough to be tested: the caller meets the dead
    # connection once, and the pool then replaces it.
    with pytest.raises(OperationalError):
        backend_pid(pooled)
    assert backend_pid(pooled) not in (0, first)
