"""Observe Celery messages arriving on Redis lists, with the instant each arrived.

A Celery message published to a Redis broker is an LPUSH onto the list named
after the queue. ``QueueWatcher`` pops those lists with BLPOP in a thread
and records ``time.time()`` when each message is returned, an upper bound on
the instant it was pushed (BLPOP returns as soon as the push happens, plus
the reader's scheduling delay). ``wait_for_length`` polls LLEN instead,
which costs far less CPU for bursts of thousands of messages.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis

# Seconds one BLPOP call blocks, so the thread notices ``stop()`` this often.
POP_TIMEOUT = 0.2


@dataclass(frozen=True)
class Arrival:
    task_id: str
    queue: str
    at: float


@dataclass
class QueueWatcher:
    """Pops every message of ``queues`` and records its task id and arrival time."""

    url: str
    queues: list[str]
    arrivals: list[Arrival] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> QueueWatcher:
        self._thread = threading.Thread(target=self._run, name="queue-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def wait_for(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` messages arrived; return False on timeout."""
        deadline = time.monotonic() + timeout
        while len(self.arrivals) < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _run(self) -> None:
        client = redis.Redis.from_url(self.url)
        try:
            while not self._stop.is_set():
                popped: Any = client.blpop(self.queues, timeout=POP_TIMEOUT)  # type: ignore[arg-type]
                if popped is not None:
                    self.arrivals.append(_arrival(popped[0], popped[1], time.time()))
        finally:
            client.close()


def _arrival(queue: bytes, raw: bytes, at: float) -> Arrival:
    message = json.loads(raw)
    return Arrival(str(message["headers"]["id"]), queue.decode(), at)


def wait_for_length(
    url: str, queue: str, count: int, timeout: float, interval: float = 0.005
) -> float | None:
    """Poll LLEN until ``queue`` contains ``count`` messages; return the time.time() or None on timeout."""
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            length: Any = client.llen(queue)
            if length >= count:
                return time.time()
            time.sleep(interval)
        return None
    finally:
        client.close()


def queue_length(url: str, queue: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        length: Any = client.llen(queue)
        return int(length)
    finally:
        client.close()


def delete_keys(url: str, prefix: str) -> int:
    """Delete the queue lists and kombu binding sets whose names start with ``prefix``."""
    client = redis.Redis.from_url(url)
    try:
        keys = [
            *client.scan_iter(match=f"{prefix}*", count=1000),
            *client.scan_iter(match=f"_kombu.binding.{prefix}*", count=1000),
        ]
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()
