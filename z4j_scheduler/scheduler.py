"""The scheduler loop: lead, read due rows, plan, fire, sleep until the next slot."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import anyio
import anyio.abc
import anyio.to_thread
from sqlalchemy.orm import Session, sessionmaker

from z4j_scheduler import store
from z4j_scheduler.errors import BrainUnavailableError
from z4j_scheduler.leader import LeaderGate
from z4j_scheduler.planner import Planner, TickPlan
from z4j_scheduler.wire.messages import CursorAdvance, FireBatchResult, FireOutcome, FireRequest

logger = logging.getLogger(__name__)

# Seconds between attempts to become leader, and to reach a brain that is down.
RETRY_INTERVAL = 1.0


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
    # False when the brain answered that a newer leader exists.
    still_leader: bool
    next_due: datetime | None


class Scheduler:
    """Fires due slots while this instance holds the leader gate."""

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
        self.epoch: int | None = None
        # Rows that failed to plan, by id, with the revision that failed; an
        # edit (a new revision) makes the row plannable again.
        self._broken: dict[int, tuple[int, str]] = {}

    def __repr__(self) -> str:
        state = f"leader epoch={self.epoch}" if self.epoch is not None else "follower"
        return f"<Scheduler {self.instance_id} {state}>"

    @property
    def leading(self) -> bool:
        return self.epoch is not None

    async def acquire(self) -> bool:
        """Try once to become leader; on success take a new fencing epoch."""
        if not await anyio.to_thread.run_sync(self.gate.try_acquire):
            return False
        self.epoch = await anyio.to_thread.run_sync(self._claim_epoch)
        logger.info("leader gained by %s with epoch %d", self.instance_id, self.epoch)
        return True

    async def step_down(self) -> None:
        if self.epoch is not None:
            logger.info("leader %s with epoch %d stepping down", self.instance_id, self.epoch)
        self.epoch = None
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.gate.release)

    async def tick_once(self) -> TickOutcome:
        """Fire every due slot once; the caller must lead."""
        assert self.epoch is not None, "tick_once() needs leadership; call acquire() first"
        now = self.clock.now()
        rows = await anyio.to_thread.run_sync(self._read_due, now)
        plan = self.planner.plan(rows, now)
        self._note_broken(rows, plan)
        fired, duplicates, advanced, leader = await self._send(plan)
        next_due = await anyio.to_thread.run_sync(self._next_due)
        return TickOutcome(fired, duplicates, advanced, len(rows) >= self.batch_size, leader, next_due)

    async def run(
        self, stop: anyio.Event, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Lead and fire until ``stop`` is set; the tick in flight always completes."""
        task_status.started()
        try:
            while not stop.is_set():
                await self._run_once(stop)
        finally:
            await self.step_down()

    async def _run_once(self, stop: anyio.Event) -> None:
        if not self.leading and not await self.acquire():
            await _wait(stop, RETRY_INTERVAL)
            return
        if not await anyio.to_thread.run_sync(self.gate.still_leading):
            await self.step_down()
            return
        try:
            outcome = await self.tick_once()
        except BrainUnavailableError as error:
            logger.warning("brain unavailable, retrying in %.0f s: %s", RETRY_INTERVAL, error)
            await _wait(stop, RETRY_INTERVAL)
            return
        if not outcome.still_leader:
            await self.step_down()
        elif not outcome.backlog:
            await _wait(stop, self._seconds_until(outcome.next_due))

    def _seconds_until(self, next_due: datetime | None) -> float:
        if next_due is None:
            return self.poll_interval
        delay = (next_due - self.clock.now()).total_seconds()
        return min(self.poll_interval, max(0.0, delay))

    async def _send(self, plan: TickPlan) -> tuple[int, int, int, bool]:
        fired = duplicates = 0
        advances = plan.advances
        for start in range(0, max(len(plan.fires), 1), self.frame_size):
            frame = plan.fires[start : start + self.frame_size]
            if not frame and not advances:
                break
            assert self.epoch is not None
            result = await self.sender.fire(self.epoch, frame, advances)
            if result.stale_epoch:
                logger.warning("epoch %d is stale (current %d): another leader took over", self.epoch, result.current_epoch)
                return fired, duplicates, 0, False
            fired += sum(1 for item in result.fires if item.outcome is FireOutcome.ACCEPTED)
            duplicates += sum(1 for item in result.fires if item.outcome is FireOutcome.DUPLICATE)
            self._log_fires(frame, result)
            advances = []
        return fired, duplicates, len(plan.advances), True

    def _log_fires(self, frame: Sequence[FireRequest], result: FireBatchResult) -> None:
        if not logger.isEnabledFor(logging.DEBUG):
            return
        for request, item in zip(frame, result.fires, strict=False):
            logger.debug(
                "fire %s schedule %d slot %s epoch %s: %s",
                request.fire_id, request.schedule_id, request.scheduled_for.isoformat(), self.epoch, item.outcome,
            )

    def _note_broken(self, rows: Sequence[store.DueRow], plan: TickPlan) -> None:
        revisions = {row.id: row.revision for row in rows}
        for schedule_id, reason in plan.broken.items():
            logger.error("schedule %d cannot be planned and is skipped until it is edited: %s", schedule_id, reason)
            self._broken[schedule_id] = (revisions[schedule_id], reason)
        if plan.dropped:
            logger.warning("catch-up dropped %d missed slots beyond the per-recovery cap", plan.dropped)

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


async def _wait(stop: anyio.Event, seconds: float) -> None:
    with anyio.move_on_after(seconds):
        await stop.wait()
