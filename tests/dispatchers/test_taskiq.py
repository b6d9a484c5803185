"""taskiq dispatcher against a real Redis and real taskiq workers of each broker kind."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from taskiq.kicker import AsyncKicker

from examples.taskiq_app.app import create_broker
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
from tests.workers import Worker, wait_for_runs
from tests.workers_arq_taskiq import child_pids, start_taskiq_worker, wait_until
from z4j_brain_plugin.dispatchers.taskiq import (
    TaskiqBrokerConfig,
    TaskiqDispatcher,
    parse_taskiq_url,
)
from z4j_brain_plugin.errors import ConfigurationError, DispatchError

pytestmark = [pytest.mark.redis, pytest.mark.slow]

RECORD_RUN = "examples.taskiq_app.tasks:record_run"

# The arq and taskiq tests keep their keys in this database.
DATABASE = 8


@dataclass(frozen=True)
class TaskiqTarget:
    """A broker of one kind with a worker reading ``queue``."""

    kind: str
    redis_url: str
    queue: str
    worker: Worker
    output: Path

    @property
    def url(self) -> str:
        return self.url_with_queue(self.queue)

    def url_with_queue(self, queue: str) -> str:
        return with_query(self.redis_url, broker=self.kind, queue_name=queue)


def url_with_database(url: str, database: int) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def subscriber_count(url: str, channel: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        [(_, count)] = cast(list[tuple[bytes, int]], client.pubsub_numsub(channel))
    finally:
        client.close()
    return count


@pytest.fixture(scope="module")
def taskiq_redis_url(redis_url: str) -> str:
    return url_with_database(redis_url, DATABASE)


@pytest.fixture(scope="module", params=["list", "stream", "pubsub"])
def taskiq_target(
    request: pytest.FixtureRequest, taskiq_redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TaskiqTarget]:
    kind: str = request.param
    queue = unique_name(f"taskiq_{kind}")
    url = with_query(taskiq_redis_url, broker=kind, queue_name=queue)
    output = tmp_path_factory.mktemp(f"taskiq-{kind}") / "runs.jsonl"
    try:
        with start_taskiq_worker(url, output) as worker:
            if kind == "pubsub":
                # The worker subscribes after it logs that it is listening,
                # and Redis drops messages published before that.
                wait_until(
                    lambda: subscriber_count(taskiq_redis_url, queue) > 0,
                    f"taskiq worker subscribed to channel {queue}",
                )
            yield TaskiqTarget(kind, taskiq_redis_url, queue, worker, output)
    finally:
        delete_redis_keys(taskiq_redis_url, queue)


@pytest.fixture
def dispatcher(taskiq_target: TaskiqTarget) -> Iterator[TaskiqDispatcher]:
    dispatcher = TaskiqDispatcher(taskiq_target.url)
    yield dispatcher
    dispatcher.close()


@pytest.fixture
def redis_client(taskiq_redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(taskiq_redis_url)
    yield client
    client.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_worker_runs_dispatched_task(
    taskiq_target: TaskiqTarget, dispatcher: TaskiqDispatcher
) -> None:
    request = make_request(RECORD_RUN, "nightly", 7, "seven", flag=True, size=3)

    task_id = dispatcher.dispatch(request)

    assert task_id == request.fire_id
    [run] = wait_for_runs(
        taskiq_target.output, lambda run: run["task_id"] == task_id, worker=taskiq_target.worker
    )
    assert run["label"] == "nightly"
    assert run["args"] == [7, "seven"]
    assert run["kwargs"] == {"flag": True, "size": 3}
    assert run["queue"] == taskiq_target.queue
    assert run["pid"] in child_pids(taskiq_target.worker.pid)


def test_example_report_tasks_write_and_delete(
    taskiq_target: TaskiqTarget, dispatcher: TaskiqDispatcher
) -> None:
    report = dispatcher.dispatch(make_request("examples.taskiq_app.tasks:send_report", "weekly"))
    wait_for_runs(
        taskiq_target.output, lambda run: run["task_id"] == report, worker=taskiq_target.worker
    )
    report_path = taskiq_target.output.parent / "reports" / "weekly.txt"
    assert report_path.read_text(encoding="utf-8").startswith("report weekly at ")

    cleanup = dispatcher.dispatch(make_request("examples.taskiq_app.tasks:cleanup", days=0))
    [run] = wait_for_runs(
        taskiq_target.output, lambda run: run["task_id"] == cleanup, worker=taskiq_target.worker
    )
    assert run["label"] == "cleanup"
    assert run["kwargs"] == {"days": 0}
    assert not report_path.exists()


def test_queue_overrides_url_queue(taskiq_target: TaskiqTarget) -> None:
    dispatcher = TaskiqDispatcher(taskiq_target.url_with_queue(unique_name("other")))
    request = make_request(RECORD_RUN, "override", queue=taskiq_target.queue)
    try:
        assert dispatcher.dispatch(request) == request.fire_id
    finally:
        dispatcher.close()

    [run] = wait_for_runs(
        taskiq_target.output,
        lambda run: run["task_id"] == request.fire_id,
        worker=taskiq_target.worker,
    )
    assert run["queue"] == taskiq_target.queue


def test_resent_fire_runs_twice(taskiq_target: TaskiqTarget, dispatcher: TaskiqDispatcher) -> None:
    request = make_request(RECORD_RUN, "resent")

    assert dispatcher.dispatch(request) == request.fire_id
    assert dispatcher.dispatch(request) == request.fire_id

    runs = wait_for_runs(
        taskiq_target.output,
        lambda run: run["task_id"] == request.fire_id,
        count=2,
        worker=taskiq_target.worker,
    )
    assert [run["label"] for run in runs] == ["resent", "resent"]


def test_dispatch_many_returns_results_in_order(
    taskiq_target: TaskiqTarget, dispatcher: TaskiqDispatcher
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
        taskiq_target.output,
        lambda run: run["task_id"] in {first.fire_id, last.fire_id},
        count=2,
        worker=taskiq_target.worker,
    )
    assert sorted(run["label"] for run in runs) == ["batch-1", "batch-3"]


def test_pickle_serializer_worker_runs_task(taskiq_redis_url: str, tmp_path: Path) -> None:
    queue = unique_name("taskiq_pickle")
    url = with_query(taskiq_redis_url, queue_name=queue, serializer="pickle")
    output = tmp_path / "runs.jsonl"
    request = make_request(RECORD_RUN, "pickled", [1, {"a": None}], size=2.5)
    try:
        with start_taskiq_worker(url, output) as worker:
            dispatcher = TaskiqDispatcher(url)
            try:
                dispatcher.dispatch(request)
            finally:
                dispatcher.close()
            [run] = wait_for_runs(
                output, lambda run: run["task_id"] == request.fire_id, worker=worker
            )
    finally:
        delete_redis_keys(taskiq_redis_url, queue)

    assert run["args"] == [[1, {"a": None}]]
    assert run["kwargs"] == {"size": 2.5}


@pytest.mark.anyio
@pytest.mark.parametrize("serializer", ["json", "pickle"])
@pytest.mark.parametrize("with_queue", [False, True])
async def test_message_matches_kiq(
    taskiq_redis_url: str, redis_client: redis.Redis, serializer: str, with_queue: bool
) -> None:
    queue = unique_name("taskiq_compare")
    url = with_query(taskiq_redis_url, queue_name=queue, serializer=serializer)
    request = make_request(
        RECORD_RUN, "compare", [1, 2], {"a": None}, queue=queue if with_queue else None, size=2.5
    )
    broker = create_broker(url)
    kicker: AsyncKicker[Any, Any] = AsyncKicker(RECORD_RUN, broker, {})
    kicker = kicker.with_task_id(request.fire_id)
    if with_queue:
        kicker = kicker.with_labels(queue_name=queue)
    dispatcher = TaskiqDispatcher(url)
    try:
        await broker.startup()
        await kicker.kiq(*request.args, **request.kwargs)
        dispatcher.dispatch(request)
        [theirs, ours] = cast(list[bytes], redis_client.lrange(queue, 0, -1))
    finally:
        await broker.shutdown()
        dispatcher.close()
        delete_redis_keys(taskiq_redis_url, queue)

    # LPUSH puts the later message, the dispatcher's, at the head.
    assert ours == theirs


def test_stream_dispatch_creates_consumer_group(
    taskiq_redis_url: str, redis_client: redis.Redis
) -> None:
    stream = unique_name("taskiq_stream")
    url = with_query(
        taskiq_redis_url, broker="stream", queue_name=stream, consumer_group_name="late"
    )
    dispatcher = TaskiqDispatcher(url)
    requests = [make_request(RECORD_RUN, "first"), make_request(RECORD_RUN, "second")]
    try:
        for request in requests:
            dispatcher.dispatch(request)
        # What a worker of group "late" that starts now reads first.
        read = cast(
            list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]],
            redis_client.xreadgroup("late", "reader", {stream: ">"}),
        )
    finally:
        dispatcher.close()
        delete_redis_keys(taskiq_redis_url, stream)

    [(_, entries)] = read
    task_ids = [json.loads(fields[b"data"])["task_id"] for _, fields in entries]
    assert task_ids == [request.fire_id for request in requests]


def test_pubsub_without_subscriber_raises_retryable(taskiq_redis_url: str) -> None:
    channel = unique_name("taskiq_nobody")
    dispatcher = TaskiqDispatcher(with_query(taskiq_redis_url, broker="pubsub", queue_name=channel))
    try:
        with pytest.raises(DispatchError, match="no worker is subscribed") as caught:
            dispatcher.dispatch(make_request(RECORD_RUN, "unheard"))
    finally:
        dispatcher.close()

    assert caught.value.retryable is True
    assert channel in str(caught.value)


@pytest.mark.parametrize("kind", ["list", "stream"])
def test_wrong_type_key_not_retryable(
    taskiq_redis_url: str, redis_client: redis.Redis, kind: str
) -> None:
    queue = unique_name("taskiq_wrongtype")
    redis_client.set(queue, "not a list or stream")
    dispatcher = TaskiqDispatcher(with_query(taskiq_redis_url, broker=kind, queue_name=queue))
    try:
        with pytest.raises(DispatchError, match="WRONGTYPE") as caught:
            dispatcher.dispatch(make_request(RECORD_RUN, "wrong type"))
    finally:
        dispatcher.close()
        delete_redis_keys(taskiq_redis_url, queue)

    assert caught.value.retryable is False


def test_dispatch_reconnects_after_connection_drop(
    taskiq_redis_url: str, redis_proxy: TcpProxy
) -> None:
    queue = unique_name("taskiq_proxied")
    url = with_query(with_port(taskiq_redis_url, redis_proxy.port), queue_name=queue)
    dispatcher = TaskiqDispatcher(url)
    try:
        assert dispatcher.dispatch(make_request(RECORD_RUN, "before-drop"))
        redis_proxy.drop_connections()
        after = make_request(RECORD_RUN, "after-drop")
        assert dispatcher.dispatch(after) == after.fire_id
    finally:
        dispatcher.close()
        delete_redis_keys(taskiq_redis_url, queue)

    assert redis_proxy.accepted >= 2


@pytest.mark.parametrize("kind", ["list", "stream", "pubsub"])
def test_down_redis_raises_retryable(kind: str) -> None:
    dispatcher = TaskiqDispatcher(f"redis://127.0.0.1:{closed_port()}/{DATABASE}?broker={kind}")
    request = make_request(RECORD_RUN, "down")
    started = time.monotonic()
    try:
        with pytest.raises(DispatchError) as caught:
            dispatcher.dispatch(request)
    finally:
        dispatcher.close()

    assert time.monotonic() - started < HANG_DEADLINE
    assert caught.value.retryable is True
    assert caught.value.engine == "taskiq"
    assert caught.value.fire_id == request.fire_id


def test_silent_redis_times_out_retryable(silent_server: SilentServer) -> None:
    dispatcher = TaskiqDispatcher(f"redis://127.0.0.1:{silent_server.port}/0", timeout=1.0)
    started = time.monotonic()
    try:
        with pytest.raises(DispatchError) as caught:
            dispatcher.dispatch(make_request(RECORD_RUN, "silent"))
    finally:
        dispatcher.close()

    assert time.monotonic() - started < HANG_DEADLINE
    assert caught.value.retryable is True


def test_repr_masks_password() -> None:
    dispatcher = TaskiqDispatcher("redis://:s3cret-pw@127.0.0.1:6379/8?queue_name=jobs")
    try:
        text = repr(dispatcher)
    finally:
        dispatcher.close()

    assert text == "<TaskiqDispatcher redis://:***@127.0.0.1:6379/8?queue_name=jobs>"


def test_closed_dispatcher_raises_retryable() -> None:
    dispatcher = TaskiqDispatcher("redis://127.0.0.1:6379/8")
    dispatcher.close()
    dispatcher.close()

    with pytest.raises(DispatchError, match="dispatcher is closed") as caught:
        dispatcher.dispatch(make_request(RECORD_RUN, "closed"))

    assert caught.value.retryable is True


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis://127.0.0.1:6379/0",
            TaskiqBrokerConfig("redis://127.0.0.1:6379/0", "list", "taskiq", "json"),
        ),
        (
            "redis://127.0.0.1:6379/2?queue_name=jobs&broker=list&serializer=pickle",
            TaskiqBrokerConfig("redis://127.0.0.1:6379/2", "list", "jobs", "pickle"),
        ),
        (
            "redis://127.0.0.1:6379/2?broker=pubsub&queue_name=events",
            TaskiqBrokerConfig("redis://127.0.0.1:6379/2", "pubsub", "events", "json"),
        ),
        (
            "rediss://:pw@127.0.0.1:6380/1?broker=stream&consumer_group_name=g&maxlen=1000"
            "&ssl_cert_reqs=required",
            TaskiqBrokerConfig(
                "rediss://:pw@127.0.0.1:6380/1?ssl_cert_reqs=required",
                "stream",
                "taskiq",
                "json",
                consumer_group_name="g",
                maxlen=1000,
            ),
        ),
        (
            "unix:///run/redis/redis.sock?db=3&queue_name=q",
            TaskiqBrokerConfig("unix:///run/redis/redis.sock?db=3", "list", "q", "json"),
        ),
    ],
)
def test_parse_taskiq_url_accepts(url: str, expected: TaskiqBrokerConfig) -> None:
    assert parse_taskiq_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("amqp://127.0.0.1//", "scheme 'amqp' is not supported"),
        ("", "scheme '' is not supported"),
        ("redis://127.0.0.1:6379/0?broker=sentinel", "broker 'sentinel' is not supported"),
        ("redis://127.0.0.1:6379/0?serializer=msgpack", "serializer 'msgpack' is not supported"),
        ("redis://127.0.0.1:6379/0?queue_name=", "queue_name is empty"),
        ("redis://127.0.0.1:6379/0?queue_name=a&queue_name=b", "['queue_name'] given twice"),
        ("redis://127.0.0.1:6379/tasks", "database 'tasks' is not a number"),
        (
            "redis://127.0.0.1:6379/0?maxlen=10",
            "parameter(s) ['maxlen'] are valid only with broker=stream",
        ),
        (
            "redis://127.0.0.1:6379/0?broker=pubsub&consumer_group_name=g",
            "parameter(s) ['consumer_group_name'] are valid only with broker=stream",
        ),
        ("redis://127.0.0.1:6379/0?broker=stream&maxlen=0", "maxlen '0' is not a positive"),
        ("redis://127.0.0.1:6379/0?broker=stream&maxlen=lots", "maxlen 'lots' is not a positive"),
        (
            "redis://127.0.0.1:6379/0?broker=stream&consumer_group_name=",
            "consumer_group_name is empty",
        ),
    ],
)
def test_parse_taskiq_url_rejects(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_taskiq_url(url)

    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://127.0.0.1:6379/0?colour=blue", "unexpected keyword argument 'colour'"),
        ("redis://127.0.0.1:6379/0?socket_timeout=soon", "Invalid value for 'socket_timeout'"),
    ],
)
def test_bad_redis_parameter_rejected_at_creation(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        TaskiqDispatcher(url)

    assert message in str(caught.value)


def test_parse_taskiq_url_error_hides_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_taskiq_url("redis://:s3cret-pw@127.0.0.1:6379/0?broker=kafka")

    assert "s3cret-pw" not in str(caught.value)
