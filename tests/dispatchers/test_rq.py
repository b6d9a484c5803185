"""RQ dispatcher against a real Redis and real ``rq worker`` processes.

The tests use Redis database 9 and queue names of their own, and delete
only the keys of those queues, their jobs and their workers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from rq import Queue
from rq.job import Job

from tests.dispatchers.support import (
    HANG_DEADLINE,
    SilentServer,
    TcpProxy,
    closed_port,
    make_request,
    unique_name,
    with_port,
    with_query,
)
from tests.workers import Worker, wait_for_runs
from tests.workers_rq_dramatiq import start_rq_worker
from z4j_brain_plugin.dispatchers.rq import RQConnectionConfig, RQDispatcher, parse_rq_url
from z4j_brain_plugin.errors import ConfigurationError, DispatchError

pytestmark = [pytest.mark.redis, pytest.mark.slow]

RECORD_RUN = "examples.rq_app.tasks.record_run"

# Keys of rq 3.0: the set of all queue keys, and the job hashes.
QUEUES_KEY = "rq:queues"
JOB_KEY_PREFIX = "rq:job:"


@dataclass(frozen=True)
class RQTarget:
    """A Redis database with a worker consuming two queues of its own.

    ``dispatcher_url`` is ``redis_url`` with the dispatcher's parameters.
    """

    redis_url: str
    dispatcher_url: str
    queues: tuple[str, str]
    worker: Worker
    output: Path


@pytest.fixture(scope="module")
def rq_redis_url(redis_url: str) -> str:
    """The test Redis server's database 9, which only the RQ and Dramatiq tests use."""
    return urlunsplit(urlsplit(redis_url)._replace(path="/9"))


def delete_rq_keys(url: str, queues: list[str], fragment: str) -> None:
    """Delete the jobs of ``queues`` and the keys naming a queue or ``fragment``."""
    client = redis.Redis.from_url(url)
    try:
        origins = {queue.encode() for queue in queues}
        job_ids = [
            key.decode().removeprefix(JOB_KEY_PREFIX)
            for key in client.scan_iter(match=f"{JOB_KEY_PREFIX}*", count=500)
            if cast(bytes | None, client.hget(key, "origin")) in origins
        ]
        names = [*queues, fragment, *job_ids]
        keys = {key for name in names for key in client.scan_iter(match=f"*{name}*", count=500)}
        if keys:
            client.delete(*keys)
        for queue in queues:
            client.srem(QUEUES_KEY, f"rq:queue:{queue}")
    finally:
        client.close()


def _start_target(
    redis_url: str, directory: Path, serializer: str, dispatcher_url: str
) -> Iterator[RQTarget]:
    queues = (unique_name("rq_a"), unique_name("rq_b"))
    name = unique_name("rq_worker")
    output = directory / "runs.jsonl"
    try:
        with start_rq_worker(redis_url, queues, output, name=name, serializer=serializer) as worker:
            yield RQTarget(redis_url, dispatcher_url, queues, worker, output)
    finally:
        delete_rq_keys(redis_url, list(queues), name)


@pytest.fixture(scope="module")
def rq_target(rq_redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RQTarget]:
    directory = tmp_path_factory.mktemp("rq-pickle")
    yield from _start_target(rq_redis_url, directory, "pickle", rq_redis_url)


@pytest.fixture(scope="module")
def rq_json_target(
    rq_redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RQTarget]:
    directory = tmp_path_factory.mktemp("rq-json")
    dispatcher_url = with_query(rq_redis_url, serializer="json")
    yield from _start_target(rq_redis_url, directory, "json", dispatcher_url)


@pytest.fixture
def dispatcher(rq_target: RQTarget) -> Iterator[RQDispatcher]:
    dispatcher = RQDispatcher(rq_target.dispatcher_url)
    yield dispatcher
    dispatcher.close()


@pytest.fixture
def idle_queue(rq_redis_url: str) -> Iterator[str]:
    """A queue name that no worker consumes, its keys deleted afterwards."""
    name = unique_name("rq_idle")
    yield name
    delete_rq_keys(rq_redis_url, [name], name)


@contextmanager
def open_queue(url: str, name: str) -> Iterator[Queue]:
    """Open the RQ queue ``name`` on its own client, closed on exit."""
    client = redis.Redis.from_url(url)
    try:
        yield Queue(name, connection=client)
    finally:
        client.close()


@pytest.mark.parametrize("queue_index", [0, 1])
def test_worker_runs_dispatched_job(
    rq_target: RQTarget, dispatcher: RQDispatcher, queue_index: int
) -> None:
    queue = rq_target.queues[queue_index]
    request = make_request(RECORD_RUN, "nightly", 7, "seven", queue=queue, flag=True, size=3)

    job_id = dispatcher.dispatch(request)

    assert job_id == request.fire_id
    [run] = wait_for_runs(
        rq_target.output, lambda run: run["task_id"] == job_id, worker=rq_target.worker
    )
    assert run["label"] == "nightly"
    assert run["args"] == [7, "seven"]
    assert run["kwargs"] == {"flag": True, "size": 3}
    assert run["queue"] == queue


def test_json_serializer_worker_runs_job(rq_json_target: RQTarget) -> None:
    dispatcher = RQDispatcher(rq_json_target.dispatcher_url)
    queue = rq_json_target.queues[0]
    request = make_request(RECORD_RUN, "as-json", [1, 2], {"a": None}, queue=queue, ok=False)
    try:
        job_id = dispatcher.dispatch(request)
    finally:
        dispatcher.close()

    [run] = wait_for_runs(
        rq_json_target.output, lambda run: run["task_id"] == job_id, worker=rq_json_target.worker
    )
    assert run["args"] == [[1, 2], {"a": None}]
    assert run["kwargs"] == {"ok": False}
    assert run["queue"] == queue


def test_example_report_jobs_write_and_delete(
    rq_target: RQTarget, dispatcher: RQDispatcher
) -> None:
    queue = rq_target.queues[0]
    report = dispatcher.dispatch(
        make_request("examples.rq_app.tasks.send_report", "weekly", queue=queue)
    )
    wait_for_runs(rq_target.output, lambda run: run["task_id"] == report, worker=rq_target.worker)
    report_path = rq_target.output.parent / "reports" / "weekly.txt"
    assert report_path.read_text(encoding="utf-8").startswith("report weekly at ")

    cleanup = dispatcher.dispatch(
        make_request("examples.rq_app.tasks.cleanup", queue=queue, days=0)
    )
    [run] = wait_for_runs(
        rq_target.output, lambda run: run["task_id"] == cleanup, worker=rq_target.worker
    )
    assert run["label"] == "cleanup"
    assert run["kwargs"] == {"days": 0}
    assert not report_path.exists()


def test_resent_fire_runs_once(rq_target: RQTarget, dispatcher: RQDispatcher) -> None:
    queue = rq_target.queues[1]
    request = make_request(RECORD_RUN, "resent", queue=queue)
    marker = make_request(RECORD_RUN, "after-resent", queue=queue)

    first = dispatcher.dispatch(request)
    second = dispatcher.dispatch(request)
    dispatcher.dispatch(marker)

    assert first == request.fire_id
    assert second == request.fire_id
    # One worker runs a queue in order, so once the marker, enqueued last,
    # has run, a second copy of the fire would have run too.
    runs = wait_for_runs(
        rq_target.output,
        lambda run: run["task_id"] in {request.fire_id, marker.fire_id},
        count=2,
        worker=rq_target.worker,
    )
    assert [run["task_id"] for run in runs] == [request.fire_id, marker.fire_id]


def test_resent_fire_enqueued_once(rq_redis_url: str, idle_queue: str) -> None:
    dispatcher = RQDispatcher(rq_redis_url)
    request = make_request(RECORD_RUN, "twice", 1, queue=idle_queue, size=2)
    try:
        dispatcher.dispatch(request)
        dispatcher.dispatch(request)
    finally:
        dispatcher.close()

    with open_queue(rq_redis_url, idle_queue) as queue:
        job_ids = queue.job_ids
        job = Job.fetch(request.fire_id, connection=queue.connection)
    assert job_ids == [request.fire_id]
    assert job.func_name == RECORD_RUN
    assert job.args == ["twice", 1]
    assert job.kwargs == {"size": 2}
    assert job.origin == idle_queue


def test_no_queue_enqueues_on_default_queue(rq_redis_url: str) -> None:
    dispatcher = RQDispatcher(rq_redis_url)
    request = make_request(RECORD_RUN, "default-queue")
    try:
        dispatcher.dispatch(request)
    finally:
        dispatcher.close()

    with open_queue(rq_redis_url, "default") as queue:
        job_ids = queue.job_ids
        job = Job.fetch(request.fire_id, connection=queue.connection)
        job.delete()
        job_ids_after_delete = queue.job_ids
        if not job_ids_after_delete:
            queue.connection.srem(QUEUES_KEY, queue.key)
    assert request.fire_id in job_ids
    assert job.origin == "default"
    assert request.fire_id not in job_ids_after_delete


def test_dispatch_many_returns_results_in_order(
    rq_target: RQTarget, dispatcher: RQDispatcher
) -> None:
    queue = rq_target.queues[0]
    first = make_request(RECORD_RUN, "batch-1", queue=queue)
    invalid = make_request("examples/rq_app/tasks.py", queue=queue)
    last = make_request(RECORD_RUN, "batch-3", queue=queue)

    results = dispatcher.dispatch_many([first, invalid, last])

    assert results[0] == first.fire_id
    assert isinstance(results[1], DispatchError)
    assert results[1].retryable is False
    assert results[1].fire_id == invalid.fire_id
    assert results[2] == last.fire_id
    runs = wait_for_runs(
        rq_target.output,
        lambda run: run["task_id"] in {first.fire_id, last.fire_id},
        count=2,
        worker=rq_target.worker,
    )
    assert sorted(run["label"] for run in runs) == ["batch-1", "batch-3"]


@pytest.mark.parametrize(
    "task_name", ["examples/rq_app/tasks.py", "tasks.record-run", "1tasks.run", "tasks..run"]
)
def test_invalid_function_path_not_retryable(task_name: str) -> None:
    dispatcher = RQDispatcher(f"redis://127.0.0.1:{closed_port()}/9")
    try:
        with pytest.raises(DispatchError) as caught:
            dispatcher.dispatch(make_request(task_name, "bad"))
    finally:
        dispatcher.close()

    assert caught.value.retryable is False
    assert f"task_name {task_name!r} is not a dotted import path" in str(caught.value)


def test_non_json_argument_with_json_serializer_not_retryable(
    rq_redis_url: str, idle_queue: str
) -> None:
    dispatcher = RQDispatcher(with_query(rq_redis_url, serializer="json"))
    try:
        with pytest.raises(DispatchError) as caught:
            dispatcher.dispatch(make_request(RECORD_RUN, {1, 2}, queue=idle_queue))
    finally:
        dispatcher.close()

    assert caught.value.retryable is False
    assert "TypeError" in str(caught.value)


def test_queue_key_of_wrong_type_not_retryable(rq_redis_url: str, idle_queue: str) -> None:
    client = redis.Redis.from_url(rq_redis_url)
    client.set(f"rq:queue:{idle_queue}", "not a list")
    client.close()
    dispatcher = RQDispatcher(rq_redis_url)
    try:
        with pytest.raises(DispatchError) as caught:
            dispatcher.dispatch(make_request(RECORD_RUN, "wrong-type", queue=idle_queue))
    finally:
        dispatcher.close()

    assert caught.value.retryable is False
    assert "WRONGTYPE" in str(caught.value)


def test_dispatch_reconnects_after_connection_drop(
    rq_target: RQTarget, redis_proxy: TcpProxy
) -> None:
    dispatcher = RQDispatcher(with_port(rq_target.redis_url, redis_proxy.port))
    queue = rq_target.queues[0]
    try:
        before = make_request(RECORD_RUN, "before-drop", queue=queue)
        assert dispatcher.dispatch(before) == before.fire_id
        redis_proxy.drop_connections()

        after = make_request(RECORD_RUN, "after-drop", queue=queue)
        assert dispatcher.dispatch(after) == after.fire_id
    finally:
        dispatcher.close()

    assert redis_proxy.accepted >= 2
    wait_for_runs(
        rq_target.output, lambda run: run["task_id"] == after.fire_id, worker=rq_target.worker
    )


def test_down_redis_raises_retryable() -> None:
    dispatcher = RQDispatcher(f"redis://127.0.0.1:{closed_port()}/9")
    request = make_request(RECORD_RUN, "down", queue=unique_name("down"))
    started = time.monotonic()
    try:
        with pytest.raises(DispatchError) as caught:
            dispatcher.dispatch(request)
    finally:
        dispatcher.close()

    assert time.monotonic() - started < HANG_DEADLINE
    assert caught.value.retryable is True
    assert caught.value.engine == "rq"
    assert caught.value.fire_id == request.fire_id


def test_silent_redis_times_out_retryable(silent_server: SilentServer) -> None:
    dispatcher = RQDispatcher(f"redis://127.0.0.1:{silent_server.port}/9", timeout=1.0)
    started = time.monotonic()
    try:
        with pytest.raises(DispatchError) as caught:
            dispatcher.dispatch(make_request(RECORD_RUN, "silent"))
    finally:
        dispatcher.close()

    assert time.monotonic() - started < HANG_DEADLINE
    assert caught.value.retryable is True
    assert "Timeout" in str(caught.value)


def test_dispatch_many_stops_at_down_broker() -> None:
    dispatcher = RQDispatcher(f"redis://127.0.0.1:{closed_port()}/9")
    requests = [make_request(RECORD_RUN, f"down-{n}") for n in range(3)]
    try:
        results = dispatcher.dispatch_many(requests)
    finally:
        dispatcher.close()

    assert [result.fire_id for result in results if isinstance(result, DispatchError)] == [
        request.fire_id for request in requests
    ]
    assert all(isinstance(result, DispatchError) and result.retryable for result in results)
    assert "not attempted" not in str(results[0])
    assert all("not attempted" in str(result) for result in results[1:])


def test_failure_message_and_log_hide_password(caplog: pytest.LogCaptureFixture) -> None:
    dispatcher = RQDispatcher(f"redis://:s3cret-pw@127.0.0.1:{closed_port()}/9")
    request = make_request(RECORD_RUN, "secret")
    try:
        with (
            caplog.at_level(logging.DEBUG, logger="z4j_brain_plugin.dispatchers"),
            pytest.raises(DispatchError) as caught,
        ):
            dispatcher.dispatch(request)
    finally:
        dispatcher.close()

    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert request.fire_id in warnings[0].getMessage()
    assert "s3cret-pw" not in caplog.text
    assert "s3cret-pw" not in str(caught.value)


def test_repr_masks_password() -> None:
    dispatcher = RQDispatcher("redis://:s3cret-pw@127.0.0.1:6379/9?serializer=json")
    try:
        text = repr(dispatcher)
    finally:
        dispatcher.close()

    assert text == "<RQDispatcher redis://:***@127.0.0.1:6379/9?serializer=json>"


def test_closed_dispatcher_raises_retryable() -> None:
    dispatcher = RQDispatcher("redis://127.0.0.1:6379/9")
    dispatcher.close()
    dispatcher.close()

    with pytest.raises(DispatchError, match="dispatcher is closed") as caught:
        dispatcher.dispatch(make_request(RECORD_RUN, "closed"))

    assert caught.value.retryable is True
    assert "closed" in repr(dispatcher)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/9", RQConnectionConfig("redis://127.0.0.1:6379/9", "pickle")),
        (
            "redis://127.0.0.1:6379/9?serializer=json",
            RQConnectionConfig("redis://127.0.0.1:6379/9", "json"),
        ),
        (
            "rediss://:pw@127.0.0.1:6380/0?serializer=pickle&ssl_cert_reqs=required",
            RQConnectionConfig("rediss://:pw@127.0.0.1:6380/0?ssl_cert_reqs=required", "pickle"),
        ),
    ],
)
def test_parse_rq_url_accepts(url: str, expected: RQConnectionConfig) -> None:
    assert parse_rq_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://127.0.0.1:6379/9?serializer=msgpack", "serializer 'msgpack' is not supported"),
        ("redis://127.0.0.1:6379/9?serializer=", "serializer '' is not supported"),
        ("redis://127.0.0.1/9?serializer=json&serializer=pickle", "['serializer'] given twice"),
        ("amqp://127.0.0.1:5672//", "scheme 'amqp' is not supported"),
        ("", "scheme '' is not supported"),
    ],
)
def test_parse_rq_url_rejects(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_rq_url(url)

    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://127.0.0.1:6379/9?colour=blue", "'colour'"),
        ("redis://127.0.0.1:6379/9?socket_timeout=soon", "socket_timeout"),
        ("redis://127.0.0.1:port/9", "Port could not be cast"),
    ],
)
def test_invalid_redis_parameter_rejected_at_creation(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        RQDispatcher(url)

    assert message in str(caught.value)


def test_invalid_url_error_hides_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        RQDispatcher("redis://:s3cret-pw@127.0.0.1:6379/9?serializer=yaml")

    assert "s3cret-pw" not in str(caught.value)
