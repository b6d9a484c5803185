"""Reconcile: recompute every enabled schedule's cursor from its definition.

A cursor can drift from its definition: another tool wrote ``next_run_at``,
an edit reached the database without the brain recomputing the cursor, or a
new time zone database moved the instants of wall-clock slots. The leader
walks all enabled schedules that have a cursor, in batches of at most
``batch_size`` rows ordered by id (keyset pagination), and corrects them.

What "correct" means, for a schedule with stored cursor ``c``, latest fired
slot ``f`` (``last_run_at``, None before the first fire), at instant ``now``:

- The slots before ``c`` are decided: fired, or skipped by a catch-up policy.
  Nothing records which, so reconcile never fires them and never moves the
  cursor back over a slot in the past.
- A slot at or after ``now`` cannot have fired yet (slots fire when due).
- Therefore the correct cursor is ``t = first slot at or after L`` with
  ``L = min(c, now)``, raised to just after ``f`` when ``f >= L``, so a fired
  slot never fires again. ``t`` is None when the definition has no such slot.

Consequences: a cursor that is a slot and has no unfired slot between ``now``
and itself is left alone (``t == c``). A cursor that is not a slot moves
forward to the next slot. A cursor beyond a slot that is still in the future
would skip that slot, so ``t < c``: a backward correction. The brain moves
cursors forward only (``CursorAdvance`` cannot rewind a cursor), so reconcile
logs a backward correction as a WARNING and counts it, but does not apply it.

Forward corrections go to the brain as ``CursorAdvance`` frames, one per batch,
under the leader's fencing epoch and each with the revision that was read, so
an edit in between wins. A schedule whose cursor is None (no slot left) is
not read: the brain treats None as final.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from z4j_scheduler import metrics, store
from z4j_scheduler.errors import ScheduleError
from z4j_scheduler.planner import Planner
from z4j_scheduler.semantics import Schedule
from z4j_scheduler.semantics.instants import ONE_MICROSECOND
from z4j_scheduler.wire.messages import AdvanceResult, CursorAdvance

logger = logging.getLogger(__name__)

# Seconds between the starts of two reconcile passes.
DEFAULT_INTERVAL = 900.0
# Schedules read, checked and corrected per transaction and frame.
DEFAULT_BATCH_SIZE = 1000


def correct_cursor(
    timing: Schedule, cursor: datetime, last_fired: datetime | None, now: datetime
) -> datetime | None:
    """Return the correct cursor of a schedule, as the module docstring defines it."""
    lower = min(cursor, now)
    if last_fired is not None and last_fired >= lower:
        lower = last_fired + ONE_MICROSECOND
    return timing.next_after(lower - ONE_MICROSECOND)


@dataclass(frozen=True, slots=True)
class Correction:
    """A cursor that differs from the correct one."""

    schedule_id: int
    revision: int
    cursor: datetime
    target: datetime | None

    @property
    def forward(self) -> bool:
        return self.target is None or self.target > self.cursor

    def advance(self) -> CursorAdvance:
        return CursorAdvance(self.schedule_id, self.revision, self.target, skipped=0)


@dataclass
class BatchPlan:
    """The outcome of checking one batch: corrections to send, to report, and unparsable rows."""

    checked: int
    last_id: int
    forward: list[Correction] = field(default_factory=list)
    backward: list[Correction] = field(default_factory=list)
    broken: dict[int, str] = field(default_factory=dict)

    @property
    def advances(self) -> list[CursorAdvance]:
        return [correction.advance() for correction in self.forward]


def plan_batch(planner: Planner, rows: Sequence[store.ReconcileRow], now: datetime) -> BatchPlan:
    """Check each row's cursor against its definition; pure apart from the planner's parse cache."""
    plan = BatchPlan(checked=len(rows), last_id=rows[-1].id if rows else 0)
    for row in rows:
        try:
            target = correct_cursor(planner.timing(row), row.next_run_at, row.last_run_at, now)
        except ScheduleError as error:
            plan.broken[row.id] = str(error)
            continue
        if target == row.next_run_at:
            continue
        correction = Correction(row.id, row.revision, row.next_run_at, target)
        (plan.forward if correction.forward else plan.backward).append(correction)
    return plan


class Reconciler:
    """Runs reconcile passes one batch at a time, between the leader's ticks.

    A pass starts when leadership is gained and then every ``interval``
    seconds (monotonic clock). ``interval`` 0 turns reconcile off.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        planner: Planner,
        *,
        interval: float = DEFAULT_INTERVAL,
        batch_size: int = DEFAULT_BATCH_SIZE,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval < 0:
            raise ValueError(
                f"invalid reconcile interval {interval}: use 0 (off) or positive seconds"
            )
        if batch_size < 1:
            raise ValueError(f"invalid reconcile batch size {batch_size}: use at least 1")
        self.sessions = sessions
        self.planner = planner
        self.interval = interval
        self.batch_size = batch_size
        self._monotonic = monotonic
        self._next_pass_at: float | None = None
        self._after_id = 0
        self._pass_corrections = 0
        self._pass_broken: dict[int, str] = {}

    def __repr__(self) -> str:
        return f"<Reconciler interval={self.interval} after_id={self._after_id}>"

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    def restart(self) -> None:
        """Start a new pass from the first id at the next step; called when leadership is gained."""
        self._next_pass_at = self._monotonic()
        self._after_id = 0
        self._pass_corrections = 0
        self._pass_broken = {}

    def due(self) -> bool:
        if not self.enabled or self._next_pass_at is None:
            return False
        return self._after_id > 0 or self._monotonic() >= self._next_pass_at

    def next_batch(self, now: datetime) -> BatchPlan:
        """Read the next batch and check it; runs in a worker thread."""
        with self.sessions() as session:
            rows = store.read_reconcile_batch(session, self._after_id, self.batch_size)
        return plan_batch(self.planner, rows, now)

    def record(self, plan: BatchPlan, results: Sequence[AdvanceResult], epoch: int) -> None:
        """Log and count the batch's corrections, then move to the next batch or end the pass."""
        self._log_forward(plan.forward, results, epoch)
        self._log_backward(plan.backward)
        self._pass_broken.update(plan.broken)
        metrics.RECONCILE_CHECKED.inc(plan.checked)
        if plan.checked < self.batch_size:
            self._finish_pass()
        else:
            self._after_id = plan.last_id

    def _log_forward(
        self, corrections: Sequence[Correction], results: Sequence[AdvanceResult], epoch: int
    ) -> None:
        applied = {result.schedule_id: result for result in results}
        for correction in corrections:
            result = applied.get(correction.schedule_id)
            if result is not None and result.applied:
                self._pass_corrections += 1
                metrics.RECONCILE_CORRECTIONS.labels("applied").inc()
                logger.info(
                    "reconcile: schedule %d cursor %s corrected to %s (revision %d, epoch %d)",
                    correction.schedule_id,
                    _iso(correction.cursor),
                    _iso(correction.target),
                    correction.revision,
                    epoch,
                )
            else:
                metrics.RECONCILE_CORRECTIONS.labels("rejected").inc()
                logger.info(
                    "reconcile: schedule %d changed or was deleted since it was read "
                    "(revision %d); "
                    "the next pass checks it again",
                    correction.schedule_id,
                    correction.revision,
                )

    def _log_backward(self, corrections: Sequence[Correction]) -> None:
        for correction in corrections:
            metrics.RECONCILE_CORRECTIONS.labels("backward_not_applied").inc()
            logger.warning(
                "reconcile: schedule %d cursor %s skips the unfired slot %s; "
                "the brain moves cursors "
                "forward only, so it is not corrected: edit the schedule to recompute its cursor",
                correction.schedule_id,
                _iso(correction.cursor),
                _iso(correction.target),
            )

    def _finish_pass(self) -> None:
        if self._pass_broken:
            ids = sorted(self._pass_broken)
            logger.warning(
                "reconcile: %d schedules cannot be parsed and were not checked, ids %s; "
                "first error: %s",
                len(ids),
                ids[:20],
                self._pass_broken[ids[0]],
            )
        logger.info("reconcile pass done: %d cursors corrected", self._pass_corrections)
        metrics.RECONCILE_PASSES.inc()
        self._after_id = 0
        self._pass_corrections = 0
        self._pass_broken = {}
        self._next_pass_at = self._monotonic() + self.interval


def _iso(value: datetime | None) -> str:
    return "none" if value is None else value.isoformat()
