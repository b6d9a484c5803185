"""Broker URLs and loopback servers for the dispatcher tests.

``Z4J_TEST_REDIS_URL`` and ``Z4J_TEST_RABBITMQ_URL`` override the local
servers. Every test names its own queues and Huey instances, and deletes only
the keys and queues under those names.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.dispatchers.support import SilentServer, TcpProxy

# Database 11 keeps these tests' keys apart from an application's database 0.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/11"
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ.get("Z4J_TEST_REDIS_URL", DEFAULT_REDIS_URL)


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    return os.environ.get("Z4J_TEST_RABBITMQ_URL", DEFAULT_RABBITMQ_URL)


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


@pytest.fixture
def redis_proxy(redis_url: str) -> Iterator[TcpProxy]:
    proxy = TcpProxy(_port_of(redis_url, 6379))
    yield proxy
    proxy.close()


@pytest.fixture
def rabbitmq_proxy(rabbitmq_url: str) -> Iterator[TcpProxy]:
    proxy = TcpProxy(_port_of(rabbitmq_url, 5672))
    yield proxy
    proxy.close()


def _port_of(url: str, default: int) -> int:
    return urlsplit(url).port or default
