"""Schedule change notifications: PostgreSQL ``LISTEN`` on the channel the brain's triggers notify.

The leader sleeps until its next slot. Without notifications it would have
to poll the schedules table to see a new or edited schedule. With them it
re-reads at once and polls only as a fallback. The listener keeps one
connection of its own. Every (re)connection counts as a change, because
notifications sent while it was not listening are lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
import anyio.abc
import psycopg
from sqlalchemy import Engine

from z4j_brain_plugin.models import SCHEDULE_CHANGES_CHANNEL
from z4j_scheduler.leader import LOCK_CONNECT_ARGS

logger = logging.getLogger(__name__)

# Seconds between attempts to reconnect a lost listen connection.
RECONNECT_INTERVAL = 1.0


class ChangeListener:
    """Calls ``on_change`` for every notification on ``channel``, reconnecting when needed.

    ``listening`` is True while the connection is up and subscribed; the
    scheduler polls more often while it is False.
    """

    def __init__(
        self,
        engine: Engine,
        on_change: Callable[[], None],
        channel: str = SCHEDULE_CHANGES_CHANNEL,
        application_name: str = "z4j-scheduler changes",
    ) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError(
                f"invalid database {engine.dialect.name}: change notifications need PostgreSQL;"
                " on other databases the scheduler polls instead"
            )
        self._conninfo = engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        self._on_change = on_change
        self._channel = channel
        self._application_name = application_name
        self.listening = False
        self.notifications = 0
        # Failed connection attempts since the last successful one.
        self._failures = 0

    def __repr__(self) -> str:
        return f"<ChangeListener channel={self._channel} listening={self.listening}>"

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen until cancelled; connection failures are logged and retried."""
        task_status.started()
        while True:
            try:
                await self._listen()
            except psycopg.Error as error:
                self._failures += 1
                if self._failures == 1 or self._failures % 60 == 0:
                    logger.warning(
                        "schedule change notifications unavailable (%d attempts), polling"
                        " instead and reconnecting every %.0f s: %s",
                        self._failures,
                        RECONNECT_INTERVAL,
                        " ".join(str(error).split())[:300],
                    )
            finally:
                self.listening = False
            await anyio.sleep(RECONNECT_INTERVAL)

    async def _listen(self) -> None:
        connect_args = {**LOCK_CONNECT_ARGS, "application_name": self._application_name}
        connection = await psycopg.AsyncConnection.connect(
            self._conninfo, autocommit=True, **connect_args
        )
        try:
            await connection.execute(f'LISTEN "{self._channel}"')
            self.listening = True
            self._failures = 0
            logger.info("listening for schedule changes on %s", self._channel)
            self._on_change()
            while True:
                # notifies() without a timeout would wake every 0.1 s to check
                # for interrupts; waiting on the socket costs nothing while
                # idle. A readable socket without a notification is the
                # server closing it, which the drain reports as an error.
                async for _ in connection.notifies(timeout=0):
                    self.notifications += 1
                    self._on_change()
                await anyio.wait_readable(connection.pgconn.socket)
        finally:
            # Closing must finish even when the listener is being cancelled.
            with anyio.CancelScope(shield=True):
                await connection.close()
