"""The fire outbox: hands recorded fires to their engines after commit.

A fire is recorded ``pending`` in the transaction that accepts it. The outbox
then dispatches it and records ``dispatched`` with the engine's task id, or
``failed`` with the error and the instant of the next attempt. Pending and
retryable fires left by a crashed brain are found again by the same query at
start-up, so a slot reaches its broker at least once.

Each configured broker connection has a lane: a task of its own that sends
that connection's fires in one ``dispatch_many`` call per pass and records
the outcomes in one statement per kind. A broker that is down or slow holds
up its own lane only. The fire recorder hands each committed fire to its
lane in memory, so a fire on time needs no read of the table. A lane claims
its due fires from the table (``ix_fires_lane``) only when memory may miss
some: at start, when a retry is due, when woken without fires, after its
queue overflowed, after a database error, every ``IDLE_WAIT`` seconds, and
at the slot of each fire that an earlier run recorded ahead of it.
Fires of a connection that is no longer configured are marked failed, and
retried, by one more lane that sweeps every ``IDLE_WAIT`` seconds.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
from sqlalchemy import ColumnElement, and_, bindparam, case, func, not_, or_, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from z4j_brain_plugin import metrics
from z4j_brain_plugin.backoff import backoff_delay
from z4j_brain_plugin.dispatchers.base import Dispatcher
from z4j_brain_plugin.errors import DispatchError
from z4j_brain_plugin.fires import FIRES, PendingFire, pending_fire, utc_now
from z4j_brain_plugin.models import json_rows

logger = logging.getLogger(__name__)

# Fires claimed and dispatched per pass of a lane; a larger backlog drains
# over several passes.
CLAIM_LIMIT = 1000
# Recorded fires a lane keeps in memory at most, so a storm of slots recorded
# ahead of their instant waits in memory rather than in the table.
QUEUE_LIMIT = 20_000
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


@dataclass
class Lane:
    """The fires of one broker connection; ``dispatcher`` None sweeps unconfigured connections."""

    key: LaneKey | None
    dispatcher: Dispatcher | None
    wakeup: anyio.Event = field(default_factory=anyio.Event)
    # Recorded fires handed over in memory, as a heap by due time, at most QUEUE_LIMIT.
    queued: list[tuple[datetime, int, PendingFire]] = field(default_factory=list)
    # Tie-breaker of queued fires with the same due time: the order of hand-over.
    handed_over: int = 0
    # Whether the next pass reads due fires from the table.
    claim_needed: bool = True
    # Ids returned by recent claims, oldest first. A claim can read a fire
    # between its commit and its hand-off, so a queued fire found here was
    # already sent.
    recently_claimed: dict[str, None] = field(default_factory=dict)
    # Recorded fires that found the queue full and were left to a claim.
    overflowed: int = 0
    # Earliest due time of a fire that found the queue full, until a claim reads it.
    claim_at: datetime | None = None
    # Due times of fires recorded ahead of their slot before this lane
    # started, which are in no lane's memory; None until read at start.
    inherited: list[datetime] | None = None
    # Earliest known next attempt of a failed fire of this lane, if any.
    retry_at: datetime | None = None
    # Fires of this lane waiting for dispatch or a retry, as last counted.
    waiting: int = 0
    # Passes that dispatched at least one fire.
    passes: int = 0
    # Consecutive passes that failed on the database.
    database_failures: int = 0

    @property
    def name(self) -> str:
        return "unconfigured" if self.key is None else f"{self.key[0]}/{self.key[1]}"

    @property
    def next_due(self) -> datetime | None:
        """Due time of the earliest queued fire, if any."""
        return self.queued[0][0] if self.queued else None

    def hand_over(self, fire: PendingFire) -> None:
        """Queue a committed fire until it is due, or leave it to a claim if the queue is full."""
        if len(self.queued) < QUEUE_LIMIT:
            self.handed_over += 1
            heapq.heappush(self.queued, (fire.due_at, self.handed_over, fire))
            return
        # The fire is committed, so a claim reads it from the table: at once,
        # and again when it is due if it was recorded ahead of its slot.
        self.claim_needed = True
        if self.claim_at is None or fire.due_at < self.claim_at:
            self.claim_at = fire.due_at
        self.overflowed += 1
        if self.overflowed & (self.overflowed - 1) == 0:
            # The broker takes fires more slowly than they are recorded.
            logger.warning(
                "lane %s: in-memory queue full (max %d fires), %d fire(s) so far left "
                "to a claim from the table, latest fire %s",
                self.name,
                QUEUE_LIMIT,
                self.overflowed,
                fire.fire_id,
            )

    def take_fires(self, claimed: list[PendingFire], now: datetime) -> list[PendingFire]:
        """Return the claimed fires, then the queued ones due by ``now`` that no claim returned."""
        for fire in claimed:
            self.recently_claimed.pop(fire.fire_id, None)
            self.recently_claimed[fire.fire_id] = None
        # The recorder hands a fire over as soon as its commit returns to the
        # event loop, so usually only the claim in progress can read it first.
        # NOTE: a hand-off delayed past two full claims sends the fire twice.
        while len(self.recently_claimed) > 2 * CLAIM_LIMIT:
            del self.recently_claimed[next(iter(self.recently_claimed))]
        fresh: list[PendingFire] = []
        # At most CLAIM_LIMIT fires a pass; the lane passes again at once for the rest.
        while self.queued and self.queued[0][0] <= now and len(claimed) + len(fresh) < CLAIM_LIMIT:
            fire = heapq.heappop(self.queued)[2]
            if fire.fire_id not in self.recently_claimed:
                fresh.append(fire)
        return [*claimed, *fresh]


class Outbox:
    """Dispatches pending fires in one lane per connection.

    ``wake(fires)`` hands recorded fires to their lanes. ``wake()`` makes the
    lanes claim from the table at once.
    """

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
        self._lanes_by_key = {lane.key: lane for lane in self.lanes}

    def __repr__(self) -> str:
        engines = ",".join(sorted(lane.name for lane in self.lanes)) or "none"
        return f"<Outbox lanes={engines} passes={self.passes}>"

    @property
    def passes(self) -> int:
        """Passes that dispatched at least one fire, over every lane."""
        return sum(lane.passes for lane in (*self.lanes, self._unconfigured))

    def wake(self, fires: Sequence[PendingFire] = ()) -> None:
        """Hand committed fires to their lanes, or without fires make every configured lane claim.

        A fire of a connection without a lane is dropped here, because the
        unconfigured lane finds it in the table on its next sweep.
        """
        if not fires:
            for lane in self.lanes:
                lane.claim_needed = True
                lane.wakeup.set()
            return
        for fire in fires:
            target = self._lanes_by_key.get((fire.engine, fire.connection))
            if target is not None:
                target.hand_over(fire)
                target.wakeup.set()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        async with anyio.create_task_group() as group:
            for lane in (*self.lanes, self._unconfigured):
                group.start_soon(self._run_lane, lane, name=f"outbox lane {lane.name}")
            task_status.started()

    async def dispatch_due(self) -> int:
        """Run one claiming pass of each lane in turn; return how many fires were attempted."""
        attempted = 0
        for lane in (*self.lanes, self._unconfigured):
            lane.claim_needed = True
            attempted += await self._pass(lane)
        return attempted

    async def _run_lane(self, lane: Lane) -> None:
        # Failed fires left by an earlier run have retry times this lane must know.
        lane.retry_at = self._clock()
        while True:
            # A new event before the pass, so a wake() during the pass is not lost.
            lane.wakeup = anyio.Event()
            try:
                await self._pass(lane)
            except SQLAlchemyError as error:
                # Every fire the pass held is in the table, and a fire sent
                # before its outcome was recorded is still pending there.
                lane.claim_needed = True
                await self._database_failed(lane, error)
                continue
            lane.database_failures = 0
            if lane.claim_needed:
                continue
            with anyio.move_on_after(self._seconds_until_retry(lane)) as timer:
                await lane.wakeup.wait()
            if timer.cancelled_caught and not _queued_fire_due(lane, self._clock()):
                # A retry is due or IDLE_WAIT has passed, so the next pass reads the table.
                lane.claim_needed = True

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
        if lane.inherited is None:
            lane.inherited = await anyio.to_thread.run_sync(self._inherited_due_times, lane)
        now = self._clock()
        retry_due = lane.retry_at is not None and lane.retry_at <= now
        if lane.claim_at is not None and lane.claim_at <= now:
            lane.claim_at, lane.claim_needed = None, True
        while lane.inherited and lane.inherited[0] <= now:
            lane.inherited.pop(0)
            lane.claim_needed = True
        claimed = await self._claim_if_needed(lane, retry_due)
        fires = lane.take_fires(claimed, self._clock())
        failures = False
        if fires:
            lane.passes += 1
            outcomes = await self._dispatch(lane, fires)
            await anyio.to_thread.run_sync(self._record, lane, fires, outcomes)
            failures = any(isinstance(outcome, DispatchError) for outcome in outcomes)
        if failures or retry_due:
            await anyio.to_thread.run_sync(self._count_waiting, lane)
        return len(fires)

    async def _claim_if_needed(self, lane: Lane, retry_due: bool) -> list[PendingFire]:
        if not (lane.claim_needed or retry_due):
            return []
        # Cleared before the read, so a wake() during it makes the next pass claim again.
        lane.claim_needed = False
        claimed = await anyio.to_thread.run_sync(self._claim, lane)
        if len(claimed) >= CLAIM_LIMIT:
            lane.claim_needed = True
        return claimed

    async def _dispatch(self, lane: Lane, fires: list[PendingFire]) -> list[str | DispatchError]:
        dispatcher = lane.dispatcher
        if dispatcher is None:
            return [_unconfigured_error(item) for item in fires]
        with metrics.DISPATCH_SECONDS.labels(dispatcher.engine).time():
            return await anyio.to_thread.run_sync(
                dispatcher.dispatch_many, [item.request for item in fires]
            )

    def _seconds_until_retry(self, lane: Lane) -> float:
        """Return the sleep until the lane's next retry or queued fire is due, at most IDLE_WAIT."""
        inherited = lane.inherited[0] if lane.inherited else None
        times = [when for when in (lane.retry_at, lane.claim_at, lane.next_due, inherited) if when]
        if not times:
            return IDLE_WAIT
        return min(IDLE_WAIT, max(0.0, (min(times) - self._clock()).total_seconds()))

    def _claim(self, lane: Lane) -> list[PendingFire]:
        statement = (
            select(
                FIRES.c.id,
                FIRES.c.schedule_id,
                FIRES.c.scheduled_for,
                FIRES.c.attempts,
                FIRES.c.payload,
                FIRES.c.engine,
                FIRES.c.connection,
                FIRES.c.next_attempt_at,
            )
            .where(self._lane_filter(lane), *_due(self._clock()))
            .order_by(FIRES.c.next_attempt_at)
            .limit(CLAIM_LIMIT)
        )
        with self._sessions() as session:
            return [pending_fire(row) for row in session.execute(statement).mappings()]

    def _inherited_due_times(self, lane: Lane) -> list[datetime]:
        """Return the due times of the lane's pending fires that are not due yet, earliest first.

        At start these are fires recorded ahead of their slot by an earlier
        run; the lane claims at each of these times.
        """
        statement = (
            select(FIRES.c.next_attempt_at)
            .where(
                self._lane_filter(lane),
                FIRES.c.status == "pending",
                FIRES.c.next_attempt_at > self._clock(),
            )
            .distinct()
            .order_by(FIRES.c.next_attempt_at)
            .limit(CLAIM_LIMIT)
        )
        with self._sessions() as session:
            return list(session.scalars(statement))

    def _lane_filter(self, lane: Lane) -> ColumnElement[bool]:
        if lane.key is not None:
            return and_(FIRES.c.engine == lane.key[0], FIRES.c.connection == lane.key[1])
        known = [
            and_(FIRES.c.engine == engine, FIRES.c.connection == name)
            for engine, name in self._configured
        ]
        return not_(or_(*known)) if known else FIRES.c.id.is_not(None)

    def _record(
        self, lane: Lane, items: list[PendingFire], outcomes: Sequence[str | DispatchError]
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

    def _failed_row(self, item: PendingFire, error: DispatchError, now: datetime) -> dict[str, Any]:
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
        """Read the lane's earliest retry and its waiting fires; update the gauge."""
        # Only failed fires set the retry time. A pending fire is either queued
        # in memory, found by a claim, or recorded ahead of its slot before
        # this outbox started (see _inherited_due_times). Counting pending fires
        # would make every pass claim while fires arrive.
        retry = case((FIRES.c.status == "failed", FIRES.c.next_attempt_at))
        statement = select(func.min(retry), func.count()).where(
            self._lane_filter(lane),
            FIRES.c.status.in_(WAITING_STATUSES),
            FIRES.c.next_attempt_at.is_not(None),
        )
        with self._sessions() as session:
            earliest, waiting = session.execute(statement).one()
        lane.retry_at, lane.waiting = earliest, int(waiting)
        metrics.OUTBOX_PENDING.set(sum(item.waiting for item in (*self.lanes, self._unconfigured)))


def _queued_fire_due(lane: Lane, now: datetime) -> bool:
    return lane.next_due is not None and lane.next_due <= now


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


def _sent_row(item: PendingFire, task_id: str) -> dict[str, Any]:
    return {"fire_id": item.fire_id, "task_id": task_id, "attempts": item.attempts + 1}


def _unconfigured_error(item: PendingFire) -> DispatchError:
    message = (
        f"no broker is configured for connection {item.connection!r} of engine {item.engine!r}; "
        "configure it and restart the brain"
    )
    return DispatchError(item.engine, item.fire_id, message, retryable=True)


def _observe(item: PendingFire, outcome: str | DispatchError, now: datetime) -> None:
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
    lane: Lane, items: list[PendingFire], outcomes: Sequence[str | DispatchError]
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
