"""The Celery beat yardstick: ENTRIES entries that all fall due at one instant.

Configured from the environment by ``benchmarks.beat``:
``Z4J_BENCH_BEAT_BROKER`` (broker URL), ``Z4J_BENCH_BEAT_ENTRIES`` (count),
``Z4J_BENCH_BEAT_DUE_AT`` (the instant, in Unix seconds) and
``Z4J_BENCH_BEAT_QUEUE`` (the queue every entry sends to).
Run as ``celery -A benchmarks.beat_app beat``.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from typing import Any

from celery import Celery, schedules

BROKER_URL = os.environ.get("Z4J_BENCH_BEAT_BROKER", "redis://127.0.0.1:6379/6")
ENTRIES = int(os.environ.get("Z4J_BENCH_BEAT_ENTRIES", "10000"))
DUE_AT = float(os.environ.get("Z4J_BENCH_BEAT_DUE_AT", "0"))
QUEUE = os.environ.get("Z4J_BENCH_BEAT_QUEUE", "z4j_bench_beat")
# Seconds until beat looks at an entry again once it has run.
RECHECK = 3600.0

app = Celery("benchmarks.beat_app", broker=BROKER_URL)


class At(schedules.BaseSchedule):  # type: ignore[misc]
    """Due once, at ``due_at`` (Unix seconds), and never again."""

    def __init__(self, due_at: float) -> None:
        super().__init__(app=app)
        self.due_at = due_at

    def __reduce__(self) -> tuple[type[At], tuple[float]]:
        return (At, (self.due_at,))

    def remaining_estimate(self, last_run_at: datetime) -> Any:
        return max(self.due_at - time.time(), 0.0)

    def is_due(self, last_run_at: datetime) -> Any:
        now = time.time()
        if last_run_at.timestamp() < self.due_at <= now:
            return schedules.schedstate(True, RECHECK)
        if now < self.due_at:
            return schedules.schedstate(False, self.due_at - now)
        return schedules.schedstate(False, RECHECK)


app.conf.beat_schedule = {
    f"beat-{index}": {
        "task": "benchmarks.noop",
        "schedule": At(DUE_AT),
        "args": ("bench",),
        "options": {"queue": QUEUE},
    }
    for index in range(ENTRIES)
}
