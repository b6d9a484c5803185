"""The Celery application, with its broker URL from ``Z4J_CELERY_BROKER_URL``."""

from __future__ import annotations

import os

from celery import Celery

BROKER_URL = os.environ.get("Z4J_CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")

app = Celery("examples.celery_app", broker=BROKER_URL, include=["examples.celery_app.tasks"])
app.conf.update(
    broker_connection_retry_on_startup=True,
    # The tasks report through the run log, so no result backend is needed.
    task_ignore_result=True,
)
