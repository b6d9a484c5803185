"""The arq worker settings, with the Redis URL and queue from ``Z4J_ARQ_REDIS_URL``.

The URL form is the one z4j-scheduler's arq dispatcher reads:
``redis://HOST:PORT/DB?queue_name=NAME``. ``queue_name`` defaults to arq's
own default queue, ``arq:queue``. Start the worker with
``arq examples.arq_app.worker.WorkerSettings``.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from arq.connections import RedisSettings
from arq.constants import default_queue_name

from examples.arq_app.tasks import cleanup, record_run, send_report

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def split_url(url: str) -> tuple[RedisSettings, str]:
    """Return the Redis settings and the queue name of an arq URL."""
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query))
    queue_name = params.pop("queue_name", default_queue_name)
    redis_url = urlunsplit(parts._replace(query=urlencode(params)))
    return RedisSettings.from_dsn(redis_url), queue_name


REDIS_SETTINGS, QUEUE_NAME = split_url(os.environ.get("Z4J_ARQ_REDIS_URL", DEFAULT_URL))


class WorkerSettings:
    """Settings that ``arq`` reads from this class's attributes."""

    functions: ClassVar[list[Any]] = [record_run, send_report, cleanup]
    redis_settings = REDIS_SETTINGS
    queue_name = QUEUE_NAME
    # Results are kept for an hour (arq's default), and while a result is
    # kept arq rejects a new job with the same id.
    keep_result = 3600
