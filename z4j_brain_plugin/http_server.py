"""The brain's HTTP server: uvicorn, waking once a second while idle instead of ten times."""

from __future__ import annotations

import asyncio
import contextlib
from types import FrameType

import uvicorn
from starlette.types import ASGIApp

# Seconds between two housekeeping ticks of the idle server (the Date header,
# exit requests that arrive without a signal).
TICK = 1.0
# uvicorn updates its Date header on every tenth tick of its own 0.1 s loop.
_TICKS_PER_DATE = 10


class QuietServer(uvicorn.Server):
    """uvicorn's server with a one-second housekeeping tick.

    uvicorn's own loop sleeps 0.1 s between checks for an exit request, which
    is most of an idle brain's CPU. Here a signal wakes the loop at once, and
    the tick runs once a second.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._exit_requested: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._exit_requested = asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit_requested.wait(), TICK)
            counter = (counter + _TICKS_PER_DATE) % 864000
            should_exit = await self.on_tick(counter)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # A signal handler runs between two steps of the loop, not inside one,
        # so the event is set through the loop's own wake-up channel.
        if self._loop is not None and self._exit_requested is not None:
            self._loop.call_soon_threadsafe(self._exit_requested.set)


def serve_http(app: ASGIApp, host: str, port: int) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, with the brain's logging left as configured."""
    QuietServer(uvicorn.Config(app, host=host, port=port, log_config=None)).run()
