"""The fire outbox: hands recorded fires to their engines after commit.

A fire is recorded ``pending`` in the transaction that accepts it. The outbox
then dispatches it and records ``dispatched`` with the engine's task id, or
``failed`` with the error and the instant of the next attempt. Pending and
retryable fires left by a crashed brain are found again by the same query at
start-up, so a slot reaches its broker at least once.

Each configured broker connection has a lane: a task of its own that claims
only that connection's due fires (``ix_fires_lane``), sends them in one
``dispatch_many`` call and records the outcomes in one statement per kind.
A broker that is down or slow holds up its own lane only. Fires of a
connection that is no longer configured are marked failed, and retried, by
one more lane that sweeps every ``IDLE_WAIT`` seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
from sqlalchemy import ColumnElement, and_, bindparam, func, not_, or_, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from z4j_brain_plugin import metrics
from z4j_brain_plugin.backoff import backoff_delay
from z4j_brain_plugin.dispatchers.base import Dispatcher, DispatchRequest
from z4j_brain_plugin.errors import DispatchError
from z4j_brain_plugin.fires import FIRES, utc_now
from z4j_brain_plugin.models import json_rows

logger = logging.getLogger(__name__)

# Fires claimed per pass of a lane; a larger backlog drains over several passes.
CLAIM_LIMIT = 1000
# Maximum sleep of a lane between passes when nothing wakes it, in seconds.
IDLE_WAIT = 30.0
WAITING_STATUSES = ("pending", "failed")

LaneKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff for fires a broker did not take, in seconds."""

    initial: float = 1.0
    maximum: float = 60.0

    def delay(self, attempts: int) -> float:
        return backoff_delay(max(attempts, 1), initial=self.initial, maximum=self.maximum)


@dataclass(frozen=True, slots=True)
class _Claimed:
    fire_id: str
    engine: str
    connection: str
    scheduled_for: datetime
    attempts: int
    request: DispatchRequest


@dataclass
class Lane:
    """The fires of one broker connection; ``dispatcher`` None sweeps unconfigured connections."""

    key: LaneKey | None
    dispatcher: Dispatcher | None
    wakeup: anyio.Event = field(default_factory=anyio.Event)
    # Earliest known next attempt of a failed fire of this lane, if any.
    retry_at: datetime | None = None
    # Fires of this lane waiting for dispatch or a retry, as last counted.
    waiting: int = 0
    passes: int = 0
    # Consecutive passes that failed on the database.
    database_failures: int = 0

    @property
    def name(self) -> str:
        return "unconfigured" if self.key is None else f"{self.key[0]}/{self.key[1]}"


class Outbox:
    """Dispatches pending fires in one lane per connection; ``wake()`` makes the lanes claim at once."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        dispatchers: Mapping[LaneKey, Dispatcher],
        retry: RetryPolicy = RetryPolicy(),
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._sessions = sessions
        self._retry = retry
        self._clock = clock
        self.lanes = [Lane(key, dispatcher) for key, dispatcher in dispatchers.items()]
        self._unconfigured = Lane(None, None)
        self._configured = frozenset(dispatchers)

    def __repr__(self) -> str:
        engines = ",".join(sorted(lane.name for lane in self.lanes)) or "none"
        return f"<Outbox lanes={engines} passes={self.passes}>"

    @property
    def passes(self) -> int:
        """Passes that claimed at least one fire, over every lane."""
        return sum(lane.passes for lane in (*self.lanes, self._unconfigured))

    def wake(self, _fire_ids: Sequence[str] = ()) -> None:
        """Make every configured lane claim its due fires now."""
        for lane in self.lanes:
            lane.wakeup.set()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        async with anyio.create_task_group() as group:
            for lane in (*self.lanes, self._unconfigured):
                group.start_soon(self._run_lane, lane, name=f"outbox lane {lane.name}")
            task_status.started()

    async def dispatch_due(self) -> int:
        """Run one pass of every lane, one after another; return how many fires were attempted."""
        attempted = 0
        for lane in (*self.lanes, self._unconfigured):
            attempted += await self._pass(lane)
        return attempted

    async def _run_lane(self, lane: Lane) -> None:
        # Failed fires left by an earlier run have retry times this lane must know.
        lane.retry_at = self._clock()
        while True:
            # A new event before the pass, so a wake() during the pass is not lost.
            lane.wakeup = anyio.Event()
            try:
                attempted = await self._pass(lane)
            except SQLAlchemyError as error:
                await self._database_failed(lane, error)
                continue
            lane.database_failures = 0
            if attempted >= CLAIM_LIMIT:
                continue
            with anyio.move_on_after(self._seconds_until_retry(lane)):
                await lane.wakeup.wait()

    async def _database_failed(self, lane: Lane, error: SQLAlchemyError) -> None:
        # A fire sent before its outcome could be recorded stays pending and
        # is sent again on a later pass: delivery is at least once.
        lane.database_failures += 1
        delay = self._retry.delay(lane.database_failures)
        if lane.database_failures & (lane.database_failures - 1) == 0:
            logger.warning(
                "lane %s: database failed (%d time(s) in a row), retrying in %.1f s: %s",
                lane.name,
                lane.database_failures,
                delay,
                error,
            )
        await anyio.sleep(delay)

    async def _pass(self, lane: Lane) -> int:
        claimed = await anyio.to_thread.run_sync(self._claim, lane)
        failures = False
        if claimed:
            lane.passes += 1
            outcomes = await self._dispatch(lane, claimed)
            await anyio.to_thread.run_sync(self._record, lane, claimed, outcomes)
            failures = any(isinstance(outcome, DispatchError) for outcome in outcomes)
        if failures or (lane.retry_at is not None and lane.retry_at <= self._clock()):
            await anyio.to_thread.run_sync(self._count_waiting, lane)
        return len(claimed)

    async def _dispatch(self, lane: Lane, claimed: list[_Claimed]) -> list[str | DispatchError]:
        dispatcher = lane.dispatcher
        if dispatcher is None:
            return [_unconfigured_error(item) for item in claimed]
        with metrics.DISPATCH_SECONDS.labels(dispatcher.engine).time():
            return await anyio.to_thread.run_sync(
                dispatcher.dispatch_many, [item.request for item in claimed]
            )

    def _seconds_until_retry(self, lane: Lane) -> float:
        if lane.retry_at is None:
            return IDLE_WAIT
        return min(IDLE_WAIT, max(0.0, (lane.retry_at - self._clock()).total_seconds()))

    def _claim(self, lane: Lane) -> list[_Claimed]:
        statement = (
            select(
                FIRES.c.id,
                FIRES.c.schedule_id,
                FIRES.c.scheduled_for,
                FIRES.c.attempts,
                FIRES.c.payload,
                FIRES.c.engine,
                FIRES.c.connection,
            )
            .where(self._lane_filter(lane), *_due(self._clock()))
            .order_by(FIRES.c.next_attempt_at)
            .limit(CLAIM_LIMIT)
        )
        with self._sessions() as session:
            return [_claimed(row) for row in session.execute(statement)]

    def _lane_filter(self, lane: Lane) -> ColumnElement[bool]:
        if lane.key is not None:
            return and_(FIRES.c.engine == lane.key[0], FIRES.c.connection == lane.key[1])
        known = [
            and_(FIRES.c.engine == engine, FIRES.c.connection == name)
            for engine, name in self._configured
        ]
        return not_(or_(*known)) if known else FIRES.c.id.is_not(None)

    def _record(
        self, lane: Lane, items: list[_Claimed], outcomes: Sequence[str | DispatchError]
    ) -> None:
        now = self._clock()
        sent: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for item, outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, DispatchError):
                failed.append(self._failed_row(item, outcome, now))
            else:
                sent.append(_sent_row(item, outcome))
        with self._sessions.begin() as session:
            if sent:
                _mark_dispatched(session, sent, now)
            if failed:
                session.execute(_MARK_FAILED, failed)
        self._note_retries(lane, failed)
        for item, outcome in zip(items, outcomes, strict=True):
            _observe(item, outcome, now)
        _log_retries(lane, items, outcomes)

    def _failed_row(self, item: _Claimed, error: DispatchError, now: datetime) -> dict[str, Any]:
        attempts = item.attempts + 1
        retry_at = now + timedelta(seconds=self._retry.delay(attempts)) if error.retryable else None
        return {
            "fire_id": item.fire_id,
            "attempts": attempts,
            "last_error": str(error),
            "retry_at": retry_at,
        }

    def _note_retries(self, lane: Lane, failed: list[dict[str, Any]]) -> None:
        times = [row["retry_at"] for row in failed if row["retry_at"] is not None]
        if lane.retry_at is not None:
            times.append(lane.retry_at)
        lane.retry_at = min(times) if times else None

    def _count_waiting(self, lane: Lane) -> None:
        """Read the lane's earliest next attempt and its waiting fires; update the gauge."""
        statement = select(func.min(FIRES.c.next_attempt_at), func.count()).where(
            self._lane_filter(lane),
            FIRES.c.status.in_(WAITING_STATUSES),
            FIRES.c.next_attempt_at.is_not(None),
        )
        with self._sessions() as session:
            earliest, waiting = session.execute(statement).one()
        lane.retry_at, lane.waiting = earliest, int(waiting)
        metrics.OUTBOX_PENDING.set(sum(item.waiting for item in (*self.lanes, self._unconfigured)))


def _due(now: datetime) -> tuple[ColumnElement[bool], ...]:
    return (FIRES.c.status.in_(WAITING_STATUSES), FIRES.c.next_attempt_at <= now)


_MARK_DISPATCHED = (
    update(FIRES)
    .where(FIRES.c.id == bindparam("fire_id"))
    .values(
        status="dispatched",
        task_id=bindparam("task_id"),
        attempts=bindparam("attempts"),
        dispatched_at=bindparam("now"),
        next_attempt_at=None,
        last_error=None,
    )
)

# PostgreSQL takes a pass's outcomes as one JSON document, one statement
# whose text psycopg parses once, instead of an executemany of a thousand.
_MARK_DISPATCHED_FROM_JSON = text(
    """
    UPDATE schedule_fires AS f
    SET status = 'dispatched', task_id = u.task_id, attempts = u.attempts,
        dispatched_at = :now, next_attempt_at = NULL, last_error = NULL
    FROM json_to_recordset(CAST(:rows AS json)) AS u(fire_id text, task_id text, attempts integer)
    WHERE f.id = u.fire_id
    """
)


def _mark_dispatched(session: Session, rows: list[dict[str, Any]], now: datetime) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_MARK_DISPATCHED_FROM_JSON, {"rows": json_rows(rows), "now": now})
    else:
        session.execute(_MARK_DISPATCHED, [{**row, "now": now} for row in rows])


_MARK_FAILED = (
    update(FIRES)
    .where(FIRES.c.id == bindparam("fire_id"))
    .values(
        status="failed",
        attempts=bindparam("attempts"),
        last_error=bindparam("last_error"),
        next_attempt_at=bindparam("retry_at"),
    )
)


def _sent_row(item: _Claimed, task_id: str) -> dict[str, Any]:
    return {"fire_id": item.fire_id, "task_id": task_id, "attempts": item.attempts + 1}


def _unconfigured_error(item: _Claimed) -> DispatchError:
    message = (
        f"no broker is configured for connection {item.connection!r} of engine {item.engine!r}; "
        "configure it and restart the brain"
    )
    return DispatchError(item.engine, item.fire_id, message, retryable=True)


def _observe(item: _Claimed, outcome: str | DispatchError, now: datetime) -> None:
    if not isinstance(outcome, DispatchError):
        metrics.FIRES_DISPATCHED.labels(item.engine, "dispatched").inc()
        metrics.FIRE_LATENESS_SECONDS.observe(max(0.0, (now - item.scheduled_for).total_seconds()))
        logger.debug(
            "fire %s of schedule %s dispatched as %s",
            item.fire_id,
            item.request.schedule_id,
            outcome,
        )
        return
    metrics.FIRES_DISPATCHED.labels(item.engine, "retry" if outcome.retryable else "failed").inc()
    if not outcome.retryable:
        logger.warning(
            "fire %s of schedule %s: attempt %d failed, giving up: %s",
            item.fire_id,
            item.request.schedule_id,
            item.attempts + 1,
            outcome,
        )


def _log_retries(
    lane: Lane, items: list[_Claimed], outcomes: Sequence[str | DispatchError]
) -> None:
    # One line per pass: a broker outage fails every fire of every pass.
    retryable = [
        (item, outcome)
        for item, outcome in zip(items, outcomes, strict=True)
        if isinstance(outcome, DispatchError) and outcome.retryable
    ]
    if retryable:
        item, error = retryable[0]
        logger.warning(
            "lane %s: %d fire(s) not dispatched, will retry from %s; "
            "first: fire %s of schedule %s: %s",
            lane.name,
            len(retryable),
            lane.retry_at.isoformat() if lane.retry_at else "-",
            item.fire_id,
            item.request.schedule_id,
            error,
        )


def _claimed(row: Any) -> _Claimed:
    fire_id, schedule_id, scheduled_for, attempts, payload, engine, connection = row
    request = DispatchRequest(
        fire_id=fire_id,
        schedule_id=schedule_id,
        task_name=payload["task_name"],
        args=tuple(payload.get("args", ())),
        kwargs=dict(payload.get("kwargs", {})),
        queue=payload.get("queue"),
    )
    return _Claimed(fire_id, engine, connection, scheduled_for, attempts, request)
