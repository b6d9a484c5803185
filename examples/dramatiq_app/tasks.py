"""Actors of the Dramatiq example. Start the worker with ``dramatiq examples.dramatiq_app.tasks``.

Dramatiq names each actor after its function: ``record_run``,
``send_report`` and ``cleanup``. ``record_run`` consumes the queue
``default`` and the report actors the queue ``reports``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage

from examples.dramatiq_app.app import broker
from examples.runlog import append_run, delete_old_reports, write_report

__all__ = ["broker", "cleanup", "record_run", "send_report"]

logger = logging.getLogger(__name__)


def _message_id_and_queue() -> tuple[str | None, str | None]:
    message = CurrentMessage.get_current_message()
    if message is None:
        return None, None
    return message.message_id, message.queue_name


@dramatiq.actor(queue_name="default")
def record_run(label: str, *args: Any, **kwargs: Any) -> None:
    """Log this run with its arguments, message id and queue."""
    message_id, queue = _message_id_and_queue()
    append_run(label, args, kwargs, task_id=message_id, queue=queue)


@dramatiq.actor(queue_name="reports")
def send_report(name: str) -> None:
    """Write a summary of the run log to ``reports/NAME.txt``."""
    path = write_report(name, datetime.now(UTC))
    logger.info("report %s written to %s", name, path)
    message_id, queue = _message_id_and_queue()
    append_run("send_report", (name,), {}, task_id=message_id, queue=queue)


@dramatiq.actor(queue_name="reports")
def cleanup(days: float = 7) -> None:
    """Delete reports older than ``days`` days."""
    removed = delete_old_reports(days, datetime.now(UTC))
    logger.info("cleanup removed %d report(s) older than %s day(s)", len(removed), days)
    message_id, queue = _message_id_and_queue()
    append_run("cleanup", (), {"days": days}, task_id=message_id, queue=queue)
