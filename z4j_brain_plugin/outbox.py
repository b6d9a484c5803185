"""The fire outbox: hands recorded fires to their engines after commit.

A fire is recorded ``pending`` in the transaction that accepts it; the outbox
then dispatches it and records ``dispatched`` with the engine's task id, or
``failed`` with the error and the instant of the next attempt. Pending and
retryable fires left by a crashed brain are found again by the same query at
start-up, so a slot reaches its broker at least once.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
import anyio.abc
import anyio.to_thread
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from z4j_brain_plugin import metrics
from z4j_brain_plugin.backoff import backoff_delay
from z4j_brain_plugin.dispatchers.base import Dispatcher, DispatchRequest
from z4j_brain_plugin.errors import DispatchError
from z4j_brain_plugin.fires import utc_now
from z4j_brain_plugin.models import Fire

logger = logging.getLogger(__name__)

# Fires claimed per pass; a larger backlog drains over several passes.
CLAIM_LIMIT = 1000
# Longest sleep between passes when nothing wakes the outbox, in seconds.
IDLE_WAIT = 30.0


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


class Outbox:
    """Dispatches pending fires; ``wake()`` after a commit makes it look at once."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        dispatchers: Mapping[tuple[str, str], Dispatcher],
        retry: RetryPolicy = RetryPolicy(),
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._sessions = sessions
        self._dispatchers = dispatchers
        self._retry = retry
        self._clock = clock
        self._wakeup = anyio.Event()
        self.passes = 0

    def __repr__(self) -> str:
        engines = ",".join(sorted(f"{engine}/{name}" for engine, name in self._dispatchers)) or "none"
        return f"<Outbox engines={engines} passes={self.passes}>"

    def wake(self, _fire_ids: Sequence[str] = ()) -> None:
        self._wakeup.set()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            self._wakeup = anyio.Event()
            dispatched = await self.dispatch_due()
            if dispatched:
                continue
            wait = await anyio.to_thread.run_sync(self._seconds_until_next_attempt)
            with anyio.move_on_after(wait):
                await self._wakeup.wait()

    async def dispatch_due(self) -> int:
        """Dispatch one batch of due fires; return how many were attempted."""
        claimed = await anyio.to_thread.run_sync(self._claim)
        if not claimed:
            return 0
        self.passes += 1
        by_connection: dict[tuple[str, str], list[_Claimed]] = defaultdict(list)
        for item in claimed:
            by_connection[(item.engine, item.connection)].append(item)
        async with anyio.create_task_group() as group:
            for key, items in by_connection.items():
                group.start_soon(self._dispatch_connection, key, items)
        return len(claimed)

    async def _dispatch_connection(self, key: tuple[str, str], items: list[_Claimed]) -> None:
        engine, connection = key
        dispatcher = self._dispatchers.get(key)
        if dispatcher is None:
            message = f"no broker is configured for connection {connection!r} of engine {engine!r}"
            error = DispatchError(engine, "-", message, retryable=True)
            outcomes: list[str | DispatchError] = [error] * len(items)
        else:
            with metrics.DISPATCH_SECONDS.labels(engine).time():
                outcomes = await anyio.to_thread.run_sync(
                    dispatcher.dispatch_many, [item.request for item in items]
                )
        await anyio.to_thread.run_sync(self._record, engine, items, outcomes)

    def _claim(self) -> list[_Claimed]:
        now = self._clock()
        statement = (
            select(Fire)
            .where(Fire.status.in_(("pending", "failed")), Fire.next_attempt_at <= now)
            .order_by(Fire.next_attempt_at)
            .limit(CLAIM_LIMIT)
        )
        with self._sessions() as session:
            return [_claimed(fire) for fire in session.scalars(statement)]

    def _record(
        self, engine: str, items: list[_Claimed], outcomes: Sequence[str | DispatchError]
    ) -> None:
        now = self._clock()
        rows = [self._outcome_row(item, outcome, now) for item, outcome in zip(items, outcomes, strict=True)]
        with self._sessions.begin() as session:
            session.execute(update(Fire), rows)
        for item, outcome in zip(items, outcomes, strict=True):
            self._observe(engine, item, outcome, now)

    def _outcome_row(self, item: _Claimed, outcome: str | DispatchError, now: datetime) -> dict[str, object]:
        attempts = item.attempts + 1
        if not isinstance(outcome, DispatchError):
            return {
                "id": item.fire_id,
                "status": "dispatched",
                "task_id": outcome,
                "attempts": attempts,
                "dispatched_at": now,
                "next_attempt_at": None,
                "last_error": None,
            }
        retry_at = now + timedelta(seconds=self._retry.delay(attempts)) if outcome.retryable else None
        return {
            "id": item.fire_id,
            "status": "failed",
            "attempts": attempts,
            "last_error": str(outcome),
            "next_attempt_at": retry_at,
        }

    def _observe(self, engine: str, item: _Claimed, outcome: str | DispatchError, now: datetime) -> None:
        if not isinstance(outcome, DispatchError):
            metrics.FIRES_DISPATCHED.labels(engine, "dispatched").inc()
            metrics.FIRE_LATENESS_SECONDS.observe(max(0.0, (now - item.scheduled_for).total_seconds()))
            logger.debug("fire %s of schedule %s dispatched as %s", item.fire_id, item.request.schedule_id, outcome)
            return
        result = "retry" if outcome.retryable else "failed"
        metrics.FIRES_DISPATCHED.labels(engine, result).inc()
        logger.warning(
            "fire %s of schedule %s: attempt %d failed (%s): %s",
            item.fire_id,
            item.request.schedule_id,
            item.attempts + 1,
            "will retry" if outcome.retryable else "giving up",
            outcome,
        )

    def _seconds_until_next_attempt(self) -> float:
        statement = select(func.min(Fire.next_attempt_at), func.count()).where(
            Fire.status.in_(("pending", "failed")), Fire.next_attempt_at.is_not(None)
        )
        with self._sessions() as session:
            earliest, waiting = session.execute(statement).one()
        metrics.OUTBOX_PENDING.set(waiting)
        if earliest is None:
            return IDLE_WAIT
        return min(IDLE_WAIT, max(0.0, (earliest - self._clock()).total_seconds()))



def _claimed(fire: Fire) -> _Claimed:
    payload = fire.payload
    request = DispatchRequest(
        fire_id=fire.id,
        schedule_id=fire.schedule_id,
        task_name=payload["task_name"],
        args=tuple(payload.get("args", ())),
        kwargs=dict(payload.get("kwargs", {})),
        queue=payload.get("queue"),
    )
    connection = payload.get("connection", "default")
    return _Claimed(fire.id, payload["engine"], connection, fire.scheduled_for, fire.attempts, request)
