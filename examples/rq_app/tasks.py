"""Jobs of the RQ example. Their function paths are ``examples.rq_app.tasks.<function>``.

They are plain functions: RQ needs no decorator, and the worker imports each
job's function by its path.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from rq import get_current_job

from examples.runlog import append_run, delete_old_reports, write_report

logger = logging.getLogger(__name__)


def _job_id_and_queue() -> tuple[str | None, str | None]:
    job = get_current_job()
    if job is None:
        return None, None
    return job.id, job.origin


def record_run(label: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Log this run with its arguments, job id and queue."""
    job_id, queue = _job_id_and_queue()
    return append_run(label, args, kwargs, task_id=job_id, queue=queue)


def send_report(name: str) -> str:
    """Write a summary of the run log to ``reports/NAME.txt``."""
    path = write_report(name, datetime.now(UTC))
    logger.info("report %s written to %s", name, path)
    job_id, queue = _job_id_and_queue()
    append_run("send_report", (name,), {}, task_id=job_id, queue=queue)
    return str(path)


def cleanup(days: float = 7) -> list[str]:
    """Delete reports older than ``days`` days."""
    removed = delete_old_reports(days, datetime.now(UTC))
    logger.info("cleanup removed %d report(s) older than %s day(s)", len(removed), days)
    job_id, queue = _job_id_and_queue()
    append_run("cleanup", (), {"days": days}, task_id=job_id, queue=queue)
    return removed
