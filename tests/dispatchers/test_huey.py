"""Huey dispatcher against real SQLite and Redis storages and a real consumer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from huey.serializer import Serializer  # type: ignore[import-untyped]
from huey.storage import BaseStorage, RedisStorage, SqliteStorage  # type: ignore[import-untyped]

from tests.dispatchers.support import (
    HANG_DEADLINE,
    SilentServer,
    TcpProxy,
    closed_port,
    delete_redis_keys,
    make_request,
    unique_name,
    with_port,
    with_query,
)
from tests.workers import Worker, start_huey_consumer, wait_for_runs
from z4j_brain_plugin.dispatchers.huey import HueyDispatcher, HueyStorageConfig, parse_huey_url
from z4j_brain_plugin.errors import ConfigurationError, DispatchError

pytestmark = [pytest.mark.redis, pytest.mark.slow]

RECORD_RUN = "examples.huey_app.tasks.record_run"


@dataclass(frozen=True)
class HueyTarget:
    """A storage with a consumer of the Huey instance ``name``."""

    backend: str
    url: str
    name: str
    worker: Worker
    output: Path

    def url_with_name(self, name: str) -> str:
        return with_query(self.url, name=name)


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def huey_target(
    request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HueyTarget]:
    backend: str = request.param
    name = unique_name("huey")
    directory = tmp_path_factory.mktemp(f"huey-{backend}")
    if backend == "sqlite":
        url = f"sqlite://{directory / 'huey.db'}?name={name}"
    else:
        url = with_query(redis_url, name=name)
    output = directory / "runs.jsonl"
    try:
        with start_huey_consumer(url, output) as worker:
            yield HueyTarget(backend, url, name, worker, output)
    finally:
        if backend == "redis":
            delete_redis_keys(redis_url, name)


@pytest.fixture
def dispatcher(huey_target: HueyTarget) -> Iterator[HueyDispatcher]:
    dispatcher = HueyDispatcher(huey_target.url)
    yield dispatcher
    dispatcher.close()


def open_storage(config: HueyStorageConfig) -> BaseStorage:
    """Open a storage the way a Huey application with ``config`` does."""
    if config.backend == "sqlite":
        return SqliteStorage(name=config.name, filename=config.location)
    return RedisStorage(name=config.name, url=config.location)


def test_consumer_runs_dispatched_task(huey_target: HueyTarget, dispatcher: HueyDispatcher) -> None:
    request = make_request(RECORD_RUN, "nightly", 7, "seven", flag=True, size=3)

    task_id = dispatcher.dispatch(request)

    assert task_id == request.fire_id
    [run] = wait_for_runs(
        huey_target.output, lambda run: run["task_id"] == task_id, worker=huey_target.worker
    )
    assert run["label"] == "nightly"
    assert run["args"] == [7, "seven"]
    assert run["kwargs"] == {"flag": True, "size": 3}
    assert run["queue"] == huey_target.name
    assert run["pid"] == huey_target.worker.pid


def test_example_report_tasks_write_and_delete(
    huey_target: HueyTarget, dispatcher: HueyDispatcher
) -> None:
    report = dispatcher.dispatch(make_request("examples.huey_app.tasks.send_report", "weekly"))
    wait_for_runs(
        huey_target.output, lambda run: run["task_id"] == report, worker=huey_target.worker
    )
    report_path = huey_target.output.parent / "reports" / "weekly.txt"
    assert report_path.read_text(encoding="utf-8").startswith("report weekly at ")

    cleanup = dispatcher.dispatch(make_request("examples.huey_app.tasks.cleanup", days=0))
    [run] = wait_for_runs(
        huey_target.output, lambda run: run["task_id"] == cleanup, worker=huey_target.worker
    )
    assert run["label"] == "cleanup"
    assert run["kwargs"] == {"days": 0}
    assert not report_path.exists()


def test_queue_overrides_url_name(huey_target: HueyTarget) -> None:
    dispatcher = HueyDispatcher(huey_target.url_with_name(unique_name("other")))
    request = make_request(RECORD_RUN, "override", queue=huey_target.name)
    try:
        assert dispatcher.dispatch(request) == request.fire_id
    finally:
        dispatcher.close()

    [run] = wait_for_runs(
        huey_target.output, lambda run: run["task_id"] == request.fire_id, worker=huey_target.worker
    )
    assert run["queue"] == huey_target.name


def test_no_queue_enqueues_under_url_name(huey_target: HueyTarget) -> None:
    url = huey_target.url_with_name(unique_name("idle"))
    dispatcher = HueyDispatcher(url)
    request = make_request(RECORD_RUN, "idle", 1, size=2)
    try:
        dispatcher.dispatch(request)
    finally:
        dispatcher.close()

    storage = open_storage(parse_huey_url(url))
    try:
        [data] = storage.enqueued_items()
        storage.flush_queue()
    finally:
        storage.close()
    message = Serializer().deserialize(data)
    assert message.id == request.fire_id
    assert message.name == RECORD_RUN
    assert message.args == ("idle", 1)
    assert message.kwargs == {"size": 2}


def test_dispatch_many_returns_results_in_order(
    huey_target: HueyTarget, dispatcher: HueyDispatcher
) -> None:
    first = make_request(RECORD_RUN, "batch-1")
    blank = make_request(" ")
    last = make_request(RECORD_RUN, "batch-3")

    results = dispatcher.dispatch_many([first, blank, last])

    assert results[0] == first.fire_id
    assert isinstance(results[1], DispatchError)
    assert results[1].retryable is False
    assert results[2] == last.fire_id
    runs = wait_for_runs(
        huey_target.output,
        lambda run: run["task_id"] in {first.fire_id, last.fire_id},
        count=2,
        worker=huey_target.worker,
    )
    assert sorted(run["label"] for run in runs) == ["batch-1", "batch-3"]


def test_redis_dispatch_reconnects_after_connection_drop(
    redis_url: str, redis_proxy: TcpProxy
) -> None:
    name = unique_name("proxied")
    dispatcher = HueyDispatcher(with_query(with_port(redis_url, redis_proxy.port), name=name))
    try:
        assert dispatcher.dispatch(make_request(RECORD_RUN, "before-drop"))
        redis_proxy.drop_connections()
        after = make_request(RECORD_RUN, "after-drop")
        assert dispatcher.dispatch(after) == after.fire_id
    finally:
        dispatcher.close()
        delete_redis_keys(redis_url, name)

    assert redis_proxy.accepted >= 2


def test_down_redis_raises_retryable() -> None:
    dispatcher = HueyDispatcher(f"redis://127.0.0.1:{closed_port()}/0?name=down")
    request = make_request(RECORD_RUN, "down")
    started = time.monotonic()
    try:
        with pytest.raises(DispatchError) as caught:
            dispatcher.dispatch(request)
    finally:
        dispatcher.close()

    assert time.monotonic() - started < HANG_DEADLINE
    assert caught.value.retryable is True
    assert caught.value.engine == "huey"
    assert caught.value.fire_id == request.fire_id


def test_silent_redis_times_out_retryable(silent_server: SilentServer) -> None:
    url = f"redis://127.0.0.1:{silent_server.port}/0?name=silent"
    dispatcher = HueyDispatcher(url, timeout=1.0)
    started = time.monotonic()
    try:
        with pytest.raises(DispatchError) as caught:
            dispatcher.dispatch(make_request(RECORD_RUN, "silent"))
    finally:
        dispatcher.close()

    assert time.monotonic() - started < HANG_DEADLINE
    assert caught.value.retryable is True


def test_unopenable_sqlite_file_raises_retryable(tmp_path: Path) -> None:
    dispatcher = HueyDispatcher(f"sqlite://{tmp_path / 'missing' / 'huey.db'}?name=app")
    try:
        with pytest.raises(DispatchError, match="unable to open database file") as caught:
            dispatcher.dispatch(make_request(RECORD_RUN, "missing"))
    finally:
        dispatcher.close()

    assert caught.value.retryable is True


def test_corrupt_sqlite_file_not_retryable(tmp_path: Path) -> None:
    path = tmp_path / "huey.db"
    path.write_bytes(b"this is a text file, not a SQLite database " * 64)
    dispatcher = HueyDispatcher(f"sqlite://{path}?name=app")
    try:
        with pytest.raises(DispatchError, match="not a database") as caught:
            dispatcher.dispatch(make_request(RECORD_RUN, "garbage"))
    finally:
        dispatcher.close()

    assert caught.value.retryable is False


def test_repr_masks_password() -> None:
    dispatcher = HueyDispatcher("redis://:s3cret-pw@127.0.0.1:6379/0?name=app")
    try:
        text = repr(dispatcher)
    finally:
        dispatcher.close()

    assert text == "<HueyDispatcher redis://:***@127.0.0.1:6379/0?name=app>"


def test_closed_dispatcher_raises_retryable(tmp_path: Path) -> None:
    dispatcher = HueyDispatcher(f"sqlite://{tmp_path / 'huey.db'}?name=app")
    dispatcher.close()

    with pytest.raises(DispatchError, match="dispatcher is closed") as caught:
        dispatcher.dispatch(make_request(RECORD_RUN, "closed"))

    assert caught.value.retryable is True


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis://127.0.0.1:6379/2?name=app",
            HueyStorageConfig("redis", "redis://127.0.0.1:6379/2", "app"),
        ),
        (
            "rediss://:pw@127.0.0.1:6380/0?name=app&ssl_cert_reqs=required",
            HueyStorageConfig(
                "redis", "rediss://:pw@127.0.0.1:6380/0?ssl_cert_reqs=required", "app"
            ),
        ),
        (
            "redis://127.0.0.1:6379/0",
            HueyStorageConfig("redis", "redis://127.0.0.1:6379/0", "huey"),
        ),
        (
            "sqlite:///var/lib/app/huey.db?name=app",
            HueyStorageConfig("sqlite", "/var/lib/app/huey.db", "app"),
        ),
        (
            "sqlite:////var/lib/app/huey.db?name=app",
            HueyStorageConfig("sqlite", "/var/lib/app/huey.db", "app"),
        ),
        (
            "sqlite:///srv/my%20app/huey.db",
            HueyStorageConfig("sqlite", "/srv/my app/huey.db", "huey"),
        ),
    ],
)
def test_parse_huey_url_accepts(url: str, expected: HueyStorageConfig) -> None:
    assert parse_huey_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://huey.db?name=app", "a SQLite URL has no host ('huey.db')"),
        ("sqlite:///?name=app", "the SQLite file path is missing"),
        ("sqlite:///var/lib/app/?name=app", "the SQLite file path is missing"),
        ("sqlite:///tmp/huey.db?name=app&timeout=3", "unknown parameter(s) ['timeout']"),
        ("sqlite:///tmp/huey.db?name=a&name=b", "parameter(s) ['name'] given twice"),
        ("redis://127.0.0.1:6379/0?name=", "name is empty"),
        ("amqp://127.0.0.1//?name=app", "scheme 'amqp' is not supported"),
        ("", "scheme '' is not supported"),
    ],
)
def test_parse_huey_url_rejects(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_huey_url(url)

    assert message in str(caught.value)


def test_parse_huey_url_error_hides_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_huey_url("redis://:s3cret-pw@127.0.0.1:6379/0?name=")

    assert "s3cret-pw" not in str(caught.value)
