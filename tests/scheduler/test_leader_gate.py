"""The PostgreSQL leader gate: waiting, handover, lost sessions and transaction-pooling proxies."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, text

from tests.conftest import POSTGRES_URL
from tests.scheduler.pgbouncer import pgbouncer_binary, run_pgbouncer
from z4j_brain_plugin.models import make_engine
from z4j_scheduler.leader import (
    PostgresAdvisoryGate,
    SessionLockError,
    SessionProbe,
    session_lock_message,
    session_lock_problem,
)

pytestmark = pytest.mark.postgres

GateFactory = Callable[..., PostgresAdvisoryGate]
WAIT_DEADLINE = 30.0


@pytest.fixture
def lock_key() -> int:
    # A key of its own, so other schedulers on the test database never compete.
    return secrets.randbelow(2**40) + 1


@pytest.fixture
def make_gate(postgres_engine: Engine, lock_key: int) -> Iterator[GateFactory]:
    created: list[PostgresAdvisoryGate] = []

    def make(engine: Engine = postgres_engine, wait: float = 1.0) -> PostgresAdvisoryGate:
        gate = PostgresAdvisoryGate(engine, lock_key, wait=wait)
        created.append(gate)
        return gate

    yield make
    for gate in created:
        gate.release()


def held_by(engine: Engine, key: int) -> list[int]:
    """Return the server process ids holding or waiting for advisory lock ``key``, granted first."""
    high, low = divmod(key, 1 << 32)
    statement = text(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = :high AND objid = :low"
        " AND objsubid = 1"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " ORDER BY granted DESC"
    )
    with engine.connect() as connection:
        return [int(pid) for pid in connection.scalars(statement, {"high": high, "low": low})]


def waiting_for(engine: Engine, key: int) -> int:
    high, low = divmod(key, 1 << 32)
    statement = text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = :high"
        " AND objid = :low AND NOT granted"
    )
    with engine.connect() as connection:
        return int(connection.scalar(statement, {"high": high, "low": low}) or 0)


def test_second_gate_waits_and_fails(make_gate: GateFactory) -> None:
    first = make_gate()
    second = make_gate(wait=0.3)
    assert first.try_acquire()
    started = time.monotonic()
    assert second.try_acquire() is False
    assert time.monotonic() - started >= 0.2
    assert first.still_leading()
    assert second.still_leading() is False


def test_follower_granted_the_moment_leader_releases(
    make_gate: GateFactory, postgres_engine: Engine, lock_key: int
) -> None:
    leader = make_gate()
    follower = make_gate(wait=9.0)
    assert leader.try_acquire()
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(follower.try_acquire()))
    waiter.start()
    deadline = time.monotonic() + WAIT_DEADLINE
    while waiting_for(postgres_engine, lock_key) == 0:
        assert time.monotonic() < deadline, "the follower never waited for the lock"
        time.sleep(0.01)
    leader.release()
    waiter.join(WAIT_DEADLINE)
    assert result == [True]
    assert held_by(postgres_engine, lock_key) == [follower.session_pid]


def test_terminated_session_loses_leadership(
    make_gate: GateFactory, postgres_engine: Engine, lock_key: int
) -> None:
    gate = make_gate()
    assert gate.try_acquire()
    pid = gate.session_pid
    assert pid is not None
    with postgres_engine.connect() as connection:
        assert connection.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    assert gate.still_leading() is False
    assert gate.session_pid is None
    gate.release()
    successor = make_gate()
    assert successor.try_acquire()
    assert held_by(postgres_engine, lock_key) == [successor.session_pid]


def test_release_unlocks_and_closes(
    make_gate: GateFactory, postgres_engine: Engine, lock_key: int
) -> None:
    gate = make_gate()
    assert gate.try_acquire()
    gate.release()
    assert held_by(postgres_engine, lock_key) == []
    assert gate.still_leading() is False
    assert gate.try_acquire()


def test_invalid_wait_rejected(postgres_engine: Engine) -> None:
    with pytest.raises(ValueError, match="invalid lock wait 0"):
        PostgresAdvisoryGate(postgres_engine, wait=0)


MOVED = "the lock was taken by server process 10 but the next statement ran in server process 11"


@pytest.mark.parametrize(
    ("probe", "expected"),
    [
        (SessionProbe(lock_pid=10, check_pid=10, lock_visible=True), None),
        (
            SessionProbe(lock_pid=10, check_pid=11, lock_visible=False),
            MOVED,
        ),
        (
            SessionProbe(lock_pid=10, check_pid=11, lock_visible=True),
            MOVED,
        ),
        (
            SessionProbe(lock_pid=10, check_pid=10, lock_visible=False),
            "pg_locks shows no advisory lock granted to server process 10",
        ),
    ],
)
def test_session_lock_problem(probe: SessionProbe, expected: str | None) -> None:
    assert session_lock_problem(probe) == expected


def test_session_lock_message_names_cause_and_fix() -> None:
    message = session_lock_message("the next statement ran in server process 11")
    assert "server process 11" in message
    assert "PgBouncer with pool_mode=transaction" in message
    assert "Z4J_DATABASE_URL" in message
    assert "pool in session mode" in message


def warm_two_server_sessions(url: str) -> None:
    """Make the pooler open two server connections, so round robin alternates between them."""
    engine = make_engine(url)
    try:
        with engine.connect() as first, engine.connect() as second:
            first.execute(text("SELECT 1"))
            second.execute(text("SELECT 1"))
            first.commit()
            second.commit()
    finally:
        engine.dispose()


def require_pgbouncer() -> None:
    if pgbouncer_binary() is None:
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")


def test_transaction_pooler_rejected(
    make_gate: GateFactory, postgres_engine: Engine, lock_key: int
) -> None:
    require_pgbouncer()
    with run_pgbouncer(POSTGRES_URL, "transaction") as url:
        warm_two_server_sessions(url)
        engine = make_engine(url)
        try:
            gate = make_gate(engine)
            with pytest.raises(SessionLockError) as raised:
                gate.try_acquire()
        finally:
            engine.dispose()
        assert "pool_mode=transaction" in str(raised.value)
        assert "but the next statement ran in server process" in str(raised.value)
        assert gate.session_pid is None
        assert held_by(postgres_engine, lock_key) == []


def test_session_pooler_accepted(
    make_gate: GateFactory, postgres_engine: Engine, lock_key: int
) -> None:
    require_pgbouncer()
    with run_pgbouncer(POSTGRES_URL, "session") as url:
        warm_two_server_sessions(url)
        engine = make_engine(url)
        try:
            gate = make_gate(engine)
            assert gate.try_acquire()
            assert gate.still_leading()
            assert held_by(postgres_engine, lock_key) == [gate.session_pid]
            gate.release()
        finally:
            engine.dispose()
        assert held_by(postgres_engine, lock_key) == []
