"""The scheduler loop: lead, read and plan the slots due soon, send each by its instant.

Every instance runs the same loop. A follower tries the leader gate about
once a second, keeping its database and brain connections open, so it can
fire within moments of taking over. A leader claims a new fencing epoch,
sends it with every frame, and checks the gate before every frame, so a
leader that lost its lock connection stops firing before its next frame. The
brain rejects frames of an older epoch, which covers a deposed leader that
has not noticed yet.

A leader reads the schedules whose cursor falls within the next ``lookahead``
seconds, plans their fires at once and keeps them in memory, then sends each
slot's frame when its instant comes, without touching the database in
between. With ``send_ahead`` it sends a slot up to that long before its
instant. The brain records the fire then, and its outbox hands it to the
broker at the instant, so the fire's lateness is one broker round trip.

A fire planned against a revision that changed meanwhile is rejected by the
brain; the leader then re-reads. So does a change notification (PostgreSQL
``LISTEN``, see ``z4j_scheduler.changes``), which lets the leader sleep until
its next slot instead of polling.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import groupby
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
# Maximum pause, in seconds, between two reconcile batches of one pass.
RECONCILE_PAUSE = 0.1
# Minimum seconds until the next planned slot must be sent for a reconcile
# batch to run before it.
RECONCILE_GAP = 0.25


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
    # Fires planned ahead, to be sent by their instants.
    upcoming: int = 0


@dataclass(slots=True)
class _Slot:
    """The fires and cursor moves planned ahead for one instant."""

    instant: datetime
    fires: list[FireRequest] = field(default_factory=list)
    advances: list[CursorAdvance] = field(default_factory=list)


@dataclass
class _SendOutcome:
    fired: int = 0
    duplicates: int = 0
    # Fires the brain refused because their schedule changed, was disabled or deleted.
    rejected: int = 0
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
        listen_poll_interval: float = 30.0,
        lookahead: float = 1.0,
        send_ahead: float = 0.0,
        ahead_limit: int = 20_000,
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
        self.listen_poll_interval = listen_poll_interval
        self.lookahead = timedelta(seconds=lookahead)
        self.send_ahead = timedelta(seconds=send_ahead)
        self.ahead_limit = ahead_limit
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
        # Slots planned ahead, by instant.
        self._upcoming: deque[_Slot] = deque()
        # Whether change notifications reach this instance now; None when
        # the database has none (SQLite).
        self.listening: Callable[[], bool] | None = None
        # Set by a change notification or by stop; replaced when consumed.
        self._wakeup = anyio.Event()
        self._changed = False
        # Reads of the schedules table by tick_once, for tests and logs.
        self.reads = 0

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

    def notify_change(self) -> None:
        """Note that schedules changed: the leader re-reads them at once."""
        self._changed = True
        self._wakeup.set()

    async def tick_once(self) -> TickOutcome:
        """Fire every due slot once and plan those due within the look-ahead; the caller must lead.

        The planned slots are sent by :meth:`fire_upcoming`.
        """
        assert self.epoch is not None, "tick_once() needs leadership; call acquire() first"
        started = time.perf_counter()
        self._take_change()
        now = self.clock.now()
        rows, backlog = await anyio.to_thread.run_sync(self._read_window, now)
        self.reads += 1
        due = [row for row in rows if row.next_run_at <= now]
        plan = self.planner.plan(due, now)
        self._note_broken(due, plan)
        self._upcoming = deque() if backlog else self._plan_ahead(rows[len(due) :])
        sent = await self._send(plan.fires, plan.advances)
        if not sent.still_leader:
            self._upcoming.clear()
        if self._upcoming:
            next_due: datetime | None = self._upcoming[0].instant
        else:
            next_due = await anyio.to_thread.run_sync(self._next_due)
        metrics.TICK_SECONDS.observe(time.perf_counter() - started)
        advanced = len(plan.advances) if sent.still_leader else 0
        return TickOutcome(
            sent.fired,
            sent.duplicates,
            advanced,
            backlog,
            sent.still_leader,
            next_due,
            sent.lost_reason,
            sum(len(slot.fires) for slot in self._upcoming),
        )

    async def fire_upcoming(self, stop: anyio.Event) -> str | None:
        """Send the slots planned by the last tick, each when its instant comes.

        Returns early, dropping the rest of the plan for the next tick to
        re-read, when ``stop`` is set, a change is notified, or the brain
        rejects a fire because its schedule changed. Returns None, or why
        leadership was lost.
        """
        try:
            while self._upcoming and not stop.is_set():
                delay = self._seconds_to_next_send()
                if delay > 0:
                    if await self._pause(stop, delay):
                        return None
                    continue
                until = max(self.clock.now() + self.send_ahead, self._upcoming[0].instant)
                fires, advances = self._take_due_slots(until)
                sent = await self._send(fires, advances)
                if sent.lost_reason is not None:
                    return sent.lost_reason
                if sent.rejected:
                    return None
            return None
        finally:
            self._upcoming.clear()

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
            async with anyio.create_task_group() as group:
                group.start_soon(self._wake_on_stop, stop)
                while not stop.is_set():
                    await self._run_once(stop)
                group.cancel_scope.cancel()
        finally:
            await self.step_down()

    async def _wake_on_stop(self, stop: anyio.Event) -> None:
        await stop.wait()
        self._wakeup.set()

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
        if lost is None and self._upcoming:
            # A reconcile batch runs only where it cannot delay a slot.
            # NOTE: slots due back to back with no gap of RECONCILE_GAP
            # seconds postpone the reconcile pass until such a gap comes.
            if self.reconciler.due() and self._seconds_to_next_send() >= RECONCILE_GAP:
                lost = await self.reconcile_step()
            if lost is None:
                lost = await self.fire_upcoming(stop)
        elif lost is None and not outcome.backlog:
            if self.reconciler.due() and not stop.is_set():
                lost = await self.reconcile_step()
                pause = RECONCILE_PAUSE if self.reconciler.due() else None
            else:
                pause = None
            if lost is None:
                await self._pause(stop, self._seconds_until(outcome.next_due, pause))
        if lost is not None:
            await self.step_down(lost)
            # A newer leader exists, or the lock is gone: give it a moment
            # before competing again.
            await _wait(stop, RETRY_INTERVAL)

    def _seconds_until(self, next_due: datetime | None, cap: float | None = None) -> float:
        """Return how long to sleep before reading again: until ``next_due`` is within reach."""
        listening = self.listening is not None and self.listening()
        longest = self.listen_poll_interval if listening else self.poll_interval
        if cap is not None:
            longest = min(longest, cap)
        if next_due is None:
            return longest
        delay = (next_due - self.lookahead - self.clock.now()).total_seconds()
        return min(longest, max(0.0, delay))

    async def _pause(self, stop: anyio.Event, seconds: float) -> bool:
        """Sleep up to ``seconds``; return True when a change or ``stop`` cut it short."""
        if not self._changed and not stop.is_set():
            with anyio.move_on_after(max(0.0, seconds)):
                await self._wakeup.wait()
        if stop.is_set():
            return True
        return self._take_change()

    def _take_change(self) -> bool:
        """Return whether a change was notified since the last call, and forget it."""
        changed, self._changed = self._changed, False
        if self._wakeup.is_set():
            self._wakeup = anyio.Event()
        return changed

    def _send_lead(self, slot: _Slot) -> timedelta:
        """Return how long before its instant ``slot`` is sent.

        Half the send-ahead, so the slots of the following half share the
        frame, plus the whole send-ahead for every further frame a storm of
        fires needs, so that the brain has recorded them by the instant.
        """
        if not self.send_ahead:
            return timedelta(0)
        frames = -(-len(slot.fires) // self.frame_size)
        return self.send_ahead / 2 + self.send_ahead * max(0, frames - 1)

    def _seconds_to_next_send(self) -> float:
        wake_at = self._upcoming[0].instant - self._send_lead(self._upcoming[0])
        return (wake_at - self.clock.now()).total_seconds()

    def _take_due_slots(self, until: datetime) -> tuple[list[FireRequest], list[CursorAdvance]]:
        fires: list[FireRequest] = []
        advances: list[CursorAdvance] = []
        while self._upcoming and self._upcoming[0].instant <= until:
            slot = self._upcoming.popleft()
            fires.extend(slot.fires)
            advances.extend(slot.advances)
        return fires, advances

    def _plan_ahead(self, rows: Sequence[store.DueRow]) -> deque[_Slot]:
        """Plan rows whose cursor is still in the future, each at its cursor's instant."""
        slots: deque[_Slot] = deque()
        for instant, group in groupby(rows, key=_cursor):
            members = list(group)
            plan = self.planner.plan(members, instant)
            self._note_broken(members, plan)
            if plan.fires or plan.advances:
                slots.append(_Slot(instant, plan.fires, plan.advances))
        return slots

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
            else:
                outcome.rejected += 1
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

    def _read_window(self, now: datetime) -> tuple[list[store.DueRow], bool]:
        """Read the rows due by ``now`` plus the look-ahead, by cursor; and whether due rows wait.

        A full first page whose last row is already due means a backlog: the
        tick fires one batch and reads again at once. Otherwise pages are
        read until the look-ahead is covered or ``ahead_limit`` rows are
        planned ahead.
        """
        until = now + self.lookahead
        limit = self.batch_size + len(self._broken)
        with self.sessions() as session:
            page = store.read_due(session, until, limit)
            rows = self._usable(page)
            if len(page) >= limit and page[-1].next_run_at <= now:
                return rows[: self.batch_size], True
            while len(page) >= limit and len(rows) < self.ahead_limit:
                last = page[-1]
                page = store.read_due(session, until, limit, after=(last.next_run_at, last.id))
                rows.extend(self._usable(page))
        return rows, False

    def _usable(self, rows: Sequence[store.DueRow]) -> list[store.DueRow]:
        """Drop the rows that failed to plan at their current revision."""
        usable = []
        for row in rows:
            broken = self._broken.get(row.id)
            if broken is not None and broken[0] == row.revision:
                continue
            self._broken.pop(row.id, None)
            usable.append(row)
        return usable

    def _next_due(self) -> datetime | None:
        with self.sessions() as session:
            return store.next_due_at(session, frozenset(self._broken))

    def _claim_epoch(self) -> int:
        with self.sessions.begin() as session:
            return store.claim_epoch(session, self.instance_id, self.clock.now())

    async def _release_gate(self) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.gate.release)


def _cursor(row: store.DueRow) -> datetime:
    return row.next_run_at


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
