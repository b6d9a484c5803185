"""Loopback servers, request builders and clean-up for the dispatcher tests."""

from __future__ import annotations

import selectors
import socket
import threading
import uuid
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import kombu  # type: ignore[import-untyped]
import redis

from z4j_brain_plugin.dispatchers.base import DispatchRequest

# Seconds a dispatch to a dead or silent broker may take before the test calls
# it a hang. Far above the dispatchers' own timeouts, so a busy machine does
# not fail it.
HANG_DEADLINE = 30.0


def unique_name(prefix: str) -> str:
    """Return a queue or Huey name that no other test run uses (letters, digits, ``_``)."""
    return f"z4j_test_{prefix}_{uuid.uuid4().hex[:10]}"


def make_request(
    task_name: str, *args: Any, queue: str | None = None, schedule_id: int = 1, **kwargs: Any
) -> DispatchRequest:
    """Build a request with a fresh fire id."""
    return DispatchRequest(
        fire_id=str(uuid.uuid4()),
        schedule_id=schedule_id,
        task_name=task_name,
        args=args,
        kwargs=kwargs,
        queue=queue,
    )


def with_port(url: str, port: int) -> str:
    """Return ``url`` pointing at ``port`` on 127.0.0.1, keeping credentials and path."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{port}" if credentials else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def with_query(url: str, **params: str) -> str:
    """Return ``url`` with ``params`` added to its query string."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query)))


def closed_port() -> int:
    """Return a loopback TCP port that nothing listens on.

    The port is bound and released, so connecting to it is refused unless
    another process takes it in between, which is unlikely in a test run.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class SilentServer:
    """A loopback port that completes TCP handshakes but never reads or replies.

    The kernel accepts connections into the listen backlog, so a client's
    connect succeeds and its first read waits until its own timeout.
    """

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port: int = self._socket.getsockname()[1]

    def close(self) -> None:
        self._socket.close()


class TcpProxy:
    """Forwards loopback connections to a server and can cut them all at once.

    One thread runs a selector loop over the listener and every connection
    pair. ``drop_connections`` signals that thread to close them, which looks
    to a client like a broker restart.
    """

    def __init__(self, target_port: int, listen_port: int = 0) -> None:
        self._target = ("127.0.0.1", target_port)
        self._listener = socket.create_server(("127.0.0.1", listen_port))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self.accepted = 0
        self._peers: dict[socket.socket, socket.socket] = {}
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._drop_requested = threading.Event()
        self._dropped = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)
        self._thread.start()

    def drop_connections(self, timeout: float = 10.0) -> None:
        """Close every open connection pair and wait until the proxy thread has done so."""
        self._dropped.clear()
        self._drop_requested.set()
        if not self._dropped.wait(timeout):
            raise TimeoutError(f"proxy did not drop its connections within {timeout} s")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._close_pairs()
        self._selector.close()
        self._listener.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._drop_requested.is_set():
                self._drop_requested.clear()
                self._close_pairs()
                self._dropped.set()
            for key, _ in self._selector.select(timeout=0.05):
                if key.fileobj is self._listener:
                    self._accept()
                else:
                    self._forward(key.fileobj)  # type: ignore[arg-type]

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        upstream = socket.create_connection(self._target, timeout=10)
        self.accepted += 1
        for one, other in ((client, upstream), (upstream, client)):
            one.setblocking(True)
            self._peers[one] = other
            self._selector.register(one, selectors.EVENT_READ)

    def _forward(self, source: socket.socket) -> None:
        try:
            data = source.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._close_pair(source)
            return
        self._peers[source].sendall(data)

    def _close_pairs(self) -> None:
        for sock in list(self._peers):
            self._close_pair(sock)

    def _close_pair(self, sock: socket.socket) -> None:
        if sock not in self._peers:
            return
        other = self._peers.pop(sock)
        del self._peers[other]
        for one in (sock, other):
            self._selector.unregister(one)
            one.close()


def delete_redis_keys(url: str, fragment: str) -> None:
    """Delete the keys of the Redis database at ``url`` whose names contain ``fragment``."""
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"*{fragment}*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def delete_amqp_queues(url: str, names: list[str]) -> None:
    """Delete RabbitMQ queues and the same-named exchanges that Celery declared for them."""
    with kombu.Connection(url, connect_timeout=10) as connection:
        channel = connection.channel()
        try:
            for name in names:
                channel.queue_delete(name)
                channel.exchange_delete(name)
        finally:
            channel.close()


def declare_queue_with_max_length(url: str, name: str) -> None:
    """Declare a RabbitMQ queue with an ``x-max-length`` argument that Celery does not set."""
    exchange = kombu.Exchange(name, "direct")
    queue = kombu.Queue(name, exchange, routing_key=name, queue_arguments={"x-max-length": 5})
    with kombu.Connection(url, connect_timeout=10) as connection:
        queue(connection.default_channel).declare()
