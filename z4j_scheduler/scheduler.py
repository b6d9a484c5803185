"""The scheduler loop: lead, read due rows, plan, fire, sleep until the next slot.

Every instance runs the same loop. A follower tries the leader gate about
once a second, keeping its database and brain connections open, so it can
fire within moments of taking over. A leader claims a new fencing epoch,
sends it with every frame, and checks the gate before every frame, so a
leader that lost its lock connection stops firing before its next frame. The
brain rejects frames of an older epoch, which covers a deposed leader that
has not noticed yet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import anyio
import anyio.abc
import anyio.to_thread
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from z4j_scheduler import metrics, store
from z4j_scheduler.errors import BrainUnavailableError
from z4j_scheduler.leader import LeaderGate
from z4j_scheduler.planner import Planner, TickPlan
from z4j_scheduler.reconcile import DEFAULT_BATCH_SIZE, DEFAULT_INTERVAL, Reconciler
from z4j_scheduler.wire.messages import (
    AdvanceResult,
    CursorAdvance,
    FireBatchResult,
    FireOutcome,
    FireRequest,
)

logger = logging.getLogger(__name__)

# Seconds between attempts to become leader, and to reach a brain or database that is down.
RETRY_INTERVAL = 1.0
# While a failure repeats, it is logged at its first occurrence and then once per this many.
REPEAT_LOG_EVERY = 30


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FireSender(Protocol):
    async def fire(
        self, epoch: int, fires: Sequence[FireRequest], advances: Sequence[CursorAdvance] = ()
    ) -> FireBatchResult: ...


@dataclass(frozen=True)
class TickOutcome:
    fired: int
    duplicates: int
    advanced: int
    # True when the tick read a full batch, so more due rows may be waiting.
    backlog: bool
    # False when the gate was lost or the brain reported that a newer leader exists.
    still_leader: bool
    next_due: datetime | None
    # Why leadership ended during the tick, when still_leader is False.
    lost_reason: str | None = None


@dataclass
class _SendOutcome:
    fired: int = 0
    duplicates: int = 0
    # Why leadership ended before all frames were sent; None while still leading.
    lost_reason: str | None = None
    advance_results: tuple[AdvanceResult, ...] = ()

    @property
    def still_leader(self) -> bool:
        return self.lost_reason is None


class _RepeatLog:
    """WARNING log of a failure that may repeat every second.

    Logs the first failure of a run, then every REPEAT_LOG_EVERY-th.
    """

    def __init__(self, failure: str) -> None:
        self.failure = failure
        self.count = 0

    def failed(self, error: BaseException) -> None:
        self.count += 1
        if self.count == 1 or self.count % REPEAT_LOG_EVERY == 0:
            logger.warning(
                "%s (%d in a row), retrying every %.0f s: %s",
                self.failure,
                self.count,
                RETRY_INTERVAL,
                " ".join(str(error).split())[:500],
            )

    def recovered(self) -> None:
        if self.count:
            logger.info("%s: recovered after %d failed attempts", self.failure, self.count)
        self.count = 0


class Scheduler:
    """Fires due slots while this instance has the leader gate."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        gate: LeaderGate,
        sender: FireSender,
        *,
        grace: timedelta,
        poll_interval: float = 1.0,
        batch_size: int = 5000,
        frame_size: int = 2000,
        instance_id: str = "scheduler",
        clock: Clock | None = None,
        reconcile_interval: float = DEFAULT_INTERVAL,
        reconcile_batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        self.sessions = sessions
        self.gate = gate
        self.sender = sender
        self.planner = Planner(grace)
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.frame_size = frame_size
        self.instance_id = instance_id
        self.clock = clock or SystemClock()
        self.reconciler = Reconciler(
            sessions, self.planner, interval=reconcile_interval, batch_size=reconcile_batch_size
        )
        self.epoch: int | None = None
        # None until the brain is first reached (serve sets True after its
        # handshake); then whether the last frame reached the brain.
        self.brain_ok: bool | None = None
        # Rows that failed to plan, by id, with the revision that failed; an
        # edit (a new revision) makes the row plannable again.
        self._broken: dict[int, tuple[int, str]] = {}
        self._database_failures = _RepeatLog("database unavailable")
        self._brain_failures = _RepeatLog("brain unavailable")

    def __repr__(self) -> str:
        state = f"leader epoch={self.epoch}" if self.epoch is not None else "follower"
        return f"<Scheduler {self.instance_id} {state}>"

    @property
    def leading(self) -> bool:
        return self.epoch is not None

    async def acquire(self, stop: anyio.Event | None = None) -> bool:
        """Try once to become leader; on success take a new fencing epoch.

        Blocks up to about a second while another instance leads. Raises
        SQLAlchemyError when the database cannot be reached, and
        LeadershipError when this instance must not run at all.
        """
        if not await anyio.to_thread.run_sync(self.gate.try_acquire):
            return False
        if stop is not None and stop.is_set():
            await self._release_gate()
            return False
        try:
            epoch = await anyio.to_thread.run_sync(self._claim_epoch)
        except BaseException:
            await self._release_gate()
            raise
        self.epoch = epoch
        metrics.LEADER.set(1)
        metrics.EPOCH.set(epoch)
        metrics.LEADERSHIP_CHANGES.labels("gained").inc()
        logger.info("leader gained: instance %s epoch %d", self.instance_id, epoch)
        self.reconciler.restart()
        return True

    async def step_down(self, reason: str = "stopping") -> None:
        """Stop leading and release the gate; the release survives cancellation."""
        if self.epoch is not None:
            metrics.LEADERSHIP_CHANGES.labels("lost").inc()
            logger.info(
                "leader lost: instance %s epoch %d (%s)", self.instance_id, self.epoch, reason
            )
        self.epoch = None
        metrics.LEADER.set(0)
        metrics.EPOCH.set(0)
        await self._release_gate()

    async def tick_once(self) -> TickOutcome:
        """Fire every due slot once; the caller must lead."""
        assert self.epoch is not None, "tick_once() needs leadership; call acquire() first"
        started = time.perf_counter()
        now = self.clock.now()
        rows = await anyio.to_thread.run_sync(self._read_due, now)
        plan = self.planner.plan(rows, now)
        self._note_broken(rows, plan)
        sent = await self._send(plan.fires, plan.advances)
        next_due = await anyio.to_thread.run_sync(self._next_due)
        metrics.TICK_SECONDS.observe(time.perf_counter() - started)
        advanced = len(plan.advances) if sent.still_leader else 0
        backlog = len(rows) >= self.batch_size
        return TickOutcome(
            sent.fired,
            sent.duplicates,
            advanced,
            backlog,
            sent.still_leader,
            next_due,
            sent.lost_reason,
        )

    async def reconcile_step(self) -> str | None:
        """Check and correct one reconcile batch; the caller must lead.

        Returns None, or why leadership was lost before the corrections were sent.
        """
        assert self.epoch is not None, "reconcile_step() needs leadership; call acquire() first"
        plan = await anyio.to_thread.run_sync(self.reconciler.next_batch, self.clock.now())
        sent = await self._send((), plan.advances)
        if sent.lost_reason is None:
            self.reconciler.record(plan, sent.advance_results, self.epoch)
        return sent.lost_reason

    async def run(
        self,
        stop: anyio.Event,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Lead and fire until ``stop`` is set; the tick in flight always completes."""
        task_status.started()
        try:
            while not stop.is_set():
                await self._run_once(stop)
        finally:
            await self.step_down()

    async def _run_once(self, stop: anyio.Event) -> None:
        if not self.leading:
            await self._follow(stop)
            return
        try:
            await self._lead(stop)
        except BrainUnavailableError as error:
            self.brain_ok = False
            metrics.DEGRADED.labels("brain_unavailable").inc()
            self._brain_failures.failed(error)
            await _wait(stop, RETRY_INTERVAL)
        except SQLAlchemyError as error:
            metrics.DEGRADED.labels("database_unavailable").inc()
            self._database_failures.failed(error)
            await _wait(stop, RETRY_INTERVAL)

    async def _follow(self, stop: anyio.Event) -> None:
        started = time.monotonic()
        try:
            acquired = await self.acquire(stop)
        except SQLAlchemyError as error:
            metrics.DEGRADED.labels("database_unavailable").inc()
            self._database_failures.failed(error)
            acquired = False
        else:
            self._database_failures.recovered()
        if not acquired:
            await _wait(stop, RETRY_INTERVAL - (time.monotonic() - started))

    async def _lead(self, stop: anyio.Event) -> None:
        if not await anyio.to_thread.run_sync(self.gate.still_leading):
            await self.step_down("leader lock lost")
            return
        outcome = await self.tick_once()
        self._database_failures.recovered()
        lost = outcome.lost_reason
        if lost is None and not outcome.backlog and self.reconciler.due() and not stop.is_set():
            lost = await self.reconcile_step()
        if lost is not None:
            await self.step_down(lost)
            # A newer leader exists, or the lock is gone: give it a moment
            # before competing again.
            await _wait(stop, RETRY_INTERVAL)
        elif not outcome.backlog:
            await _wait(stop, self._seconds_until(outcome.next_due))

    def _seconds_until(self, next_due: datetime | None) -> float:
        if next_due is None:
            return self.poll_interval
        delay = (next_due - self.clock.now()).total_seconds()
        return min(self.poll_interval, max(0.0, delay))

    async def _send(
        self, fires: Sequence[FireRequest], advances: Sequence[CursorAdvance]
    ) -> _SendOutcome:
        """Send ``fires`` in frames of ``frame_size``, with ``advances`` in the first.

        The gate is checked before every frame, so a leader that lost its lock
        sends nothing more.
        """
        outcome = _SendOutcome()
        pending = list(advances)
        for start in range(0, max(len(fires), 1), self.frame_size):
            frame = fires[start : start + self.frame_size]
            if not frame and not pending:
                break
            epoch = self.epoch
            if epoch is None or not await anyio.to_thread.run_sync(self.gate.still_leading):
                outcome.lost_reason = "leader lock lost"
                return outcome
            result = await self.sender.fire(epoch, frame, pending)
            self.brain_ok = True
            self._brain_failures.recovered()
            if result.stale_epoch:
                metrics.STALE_FRAMES.inc()
                logger.warning(
                    "epoch %d of instance %s is stale (current %d): another leader took over",
                    epoch,
                    self.instance_id,
                    result.current_epoch,
                )
                outcome.lost_reason = f"epoch superseded by {result.current_epoch}"
                return outcome
            self._count(frame, result, epoch, outcome)
            if pending:
                outcome.advance_results = result.advances
            pending = []
        return outcome

    def _count(
        self,
        frame: Sequence[FireRequest],
        result: FireBatchResult,
        epoch: int,
        outcome: _SendOutcome,
    ) -> None:
        for request, item in zip(frame, result.fires, strict=False):
            metrics.FIRES.labels(item.outcome.value).inc()
            if item.outcome is FireOutcome.ACCEPTED:
                outcome.fired += 1
            elif item.outcome is FireOutcome.DUPLICATE:
                outcome.duplicates += 1
            _log_fire(request, item.outcome, epoch)

    def _note_broken(self, rows: Sequence[store.DueRow], plan: TickPlan) -> None:
        revisions = {row.id: row.revision for row in rows}
        for schedule_id, reason in plan.broken.items():
            logger.error(
                "schedule %d cannot be planned and is skipped until it is edited: %s",
                schedule_id,
                reason,
            )
            self._broken[schedule_id] = (revisions[schedule_id], reason)
        if plan.dropped:
            logger.warning(
                "catch-up dropped %d missed slots beyond the per-recovery cap", plan.dropped
            )

    def _read_due(self, now: datetime) -> list[store.DueRow]:
        with self.sessions() as session:
            rows = store.read_due(session, now, self.batch_size + len(self._broken))
        usable = []
        for row in rows:
            broken = self._broken.get(row.id)
            if broken is not None and broken[0] == row.revision:
                continue
            self._broken.pop(row.id, None)
            usable.append(row)
        return usable[: self.batch_size]

    def _next_due(self) -> datetime | None:
        with self.sessions() as session:
            return store.next_due_at(session, frozenset(self._broken))

    def _claim_epoch(self) -> int:
        with self.sessions.begin() as session:
            return store.claim_epoch(session, self.instance_id, self.clock.now())

    async def _release_gate(self) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.gate.release)


def _log_fire(request: FireRequest, outcome: FireOutcome, epoch: int) -> None:
    # Accepted and duplicate fires are routine and logged at DEBUG; a rejected
    # fire means the schedule changed under the leader.
    level = (
        logging.DEBUG if outcome in (FireOutcome.ACCEPTED, FireOutcome.DUPLICATE) else logging.INFO
    )
    if logger.isEnabledFor(level):
        logger.log(
            level,
            "fire %s schedule %d slot %s trigger %s epoch %d: %s",
            request.fire_id,
            request.schedule_id,
            request.scheduled_for.isoformat(),
            request.trigger.value,
            epoch,
            outcome.value,
        )


async def _wait(stop: anyio.Event, seconds: float) -> None:
    with anyio.move_on_after(max(0.0, seconds)):
        await stop.wait()
