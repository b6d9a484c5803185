"""Dramatiq dispatcher against real Redis and RabbitMQ brokers and real ``dramatiq`` workers.

On Redis the tests use database 9 and a key namespace of their own, and on
RabbitMQ queue names of their own. They delete only those keys and queues.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit, urlunsplit

import pika  # type: ignore[import-untyped]
import pika.exceptions  # type: ignore[import-untyped]
import pytest
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker

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
from tests.workers_rq_dramatiq import start_dramatiq_worker
from z4j_brain_plugin.dispatchers.base import DispatchRequest
from z4j_brain_plugin.dispatchers.dramatiq import (
    DramatiqBrokerConfig,
    DramatiqDispatcher,
    parse_dramatiq_url,
)
from z4j_brain_plugin.errors import ConfigurationError, DispatchError

pytestmark = [pytest.mark.redis, pytest.mark.slow]

# pika writes the default virtual host "/" as %2F.
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"

KEEPER_THREAD = "z4j-dramatiq-heartbeat"


@dataclass(frozen=True)
class DramatiqTarget:
    """A broker with a worker consuming two queues of its own.

    ``url`` has the dispatcher's form. ``namespace`` is the Redis key prefix,
    None on RabbitMQ.
    """

    backend: str
    url: str
    namespace: str | None
    queues: tuple[str, str]
    worker: Worker
    output: Path


@pytest.fixture(scope="module")
def dramatiq_redis_url(redis_url: str) -> str:
    """The test Redis server's database 9, which only the RQ and Dramatiq tests use."""
    return urlunsplit(urlsplit(redis_url)._replace(path="/9"))


@pytest.fixture(scope="module")
def dramatiq_rabbitmq_url() -> str:
    return os.environ.get("Z4J_TEST_DRAMATIQ_RABBITMQ_URL", DEFAULT_RABBITMQ_URL)


def delete_rabbitmq_queues(url: str, queues: list[str]) -> None:
    """Delete each queue with its Dramatiq delay (.DQ) and dead-letter (.XQ) queues."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for queue in queues:
            for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
                channel.queue_delete(name)
    finally:
        connection.close()


def rabbitmq_message_count(url: str, queue: str) -> int:
    """Return the number of ready messages in an existing queue."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        declared = connection.channel().queue_declare(queue, passive=True)
        count: int = declared.method.message_count
        return count
    finally:
        connection.close()


@pytest.fixture(scope="module")
def dramatiq_on_redis(
    dramatiq_redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DramatiqTarget]:
    namespace = unique_name("dramatiq")
    url = with_query(dramatiq_redis_url, namespace=namespace)
    queues = (unique_name("dramatiq_a"), unique_name("dramatiq_b"))
    output = tmp_path_factory.mktemp("dramatiq-redis") / "runs.jsonl"
    try:
        with start_dramatiq_worker(url, queues, output) as worker:
            yield DramatiqTarget("redis", url, namespace, queues, worker, output)
    finally:
        delete_redis_keys(dramatiq_redis_url, namespace)


@pytest.fixture(scope="module")
def dramatiq_on_rabbitmq(
    dramatiq_rabbitmq_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DramatiqTarget]:
    url = dramatiq_rabbitmq_url
    queues = (unique_name("dramatiq_a"), unique_name("dramatiq_b"))
    output = tmp_path_factory.mktemp("dramatiq-rabbitmq") / "runs.jsonl"
    try:
        with start_dramatiq_worker(url, queues, output) as worker:
            yield DramatiqTarget("rabbitmq", url, None, queues, worker, output)
    finally:
        delete_rabbitmq_queues(url, list(queues))


@pytest.fixture(params=["redis", "rabbitmq"])
def dramatiq_target(request: pytest.FixtureRequest) -> DramatiqTarget:
    target: DramatiqTarget = request.getfixturevalue(f"dramatiq_on_{request.param}")
    return target


@pytest.fixture
def dispatcher(dramatiq_target: DramatiqTarget) -> Iterator[DramatiqDispatcher]:
    dispatcher = DramatiqDispatcher(dramatiq_target.url)
    yield dispatcher
    dispatcher.close()


@pytest.fixture
def idle_rabbitmq_queue(dramatiq_rabbitmq_url: str) -> Iterator[str]:
    """A RabbitMQ queue name that no worker consumes, deleted afterwards."""
    name = unique_name("dramatiq_idle")
    yield name
    delete_rabbitmq_queues(dramatiq_rabbitmq_url, [name])


def keeper_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == KEEPER_THREAD]


@pytest.mark.parametrize("queue_index", [0, 1])
def test_worker_runs_dispatched_message(
    dramatiq_target: DramatiqTarget, dispatcher: DramatiqDispatcher, queue_index: int
) -> None:
    queue = dramatiq_target.queues[queue_index]
    request = make_request("record_run", "nightly", 7, "seven", queue=queue, flag=True, size=3)

    message_id = dispatcher.dispatch(request)

    assert message_id == request.fire_id
    [run] = wait_for_runs(
        dramatiq_target.output,
        lambda run: run["task_id"] == message_id,
        worker=dramatiq_target.worker,
    )
    assert run["label"] == "nightly"
    assert run["args"] == [7, "seven"]
    assert run["kwargs"] == {"flag": True, "size": 3}
    assert run["queue"] == queue


def test_example_report_actors_write_and_delete(
    dramatiq_on_redis: DramatiqTarget,
) -> None:
    dispatcher = DramatiqDispatcher(dramatiq_on_redis.url)
    queue = dramatiq_on_redis.queues[0]
    try:
        report = dispatcher.dispatch(make_request("send_report", "weekly", queue=queue))
        wait_for_runs(
            dramatiq_on_redis.output,
            lambda run: run["task_id"] == report,
            worker=dramatiq_on_redis.worker,
        )
        report_path = dramatiq_on_redis.output.parent / "reports" / "weekly.txt"
        assert report_path.read_text(encoding="utf-8").startswith("report weekly at ")

        cleanup = dispatcher.dispatch(make_request("cleanup", queue=queue, days=0))
    finally:
        dispatcher.close()

    [run] = wait_for_runs(
        dramatiq_on_redis.output,
        lambda run: run["task_id"] == cleanup,
        worker=dramatiq_on_redis.worker,
    )
    assert run["label"] == "cleanup"
    assert run["kwargs"] == {"days": 0}
    assert not report_path.exists()


def test_resent_fire_runs_twice(
    dramatiq_target: DramatiqTarget, dispatcher: DramatiqDispatcher
) -> None:
    request = make_request("record_run", "resent", queue=dramatiq_target.queues[1])

    first = dispatcher.dispatch(request)
    second = dispatcher.dispatch(request)

    assert first == second == request.fire_id
    runs = wait_for_runs(
        dramatiq_target.output,
        lambda run: run["task_id"] == request.fire_id,
        count=2,
        worker=dramatiq_target.worker,
    )
    assert [run["label"] for run in runs] == ["resent", "resent"]


def test_dispatch_many_returns_results_in_order(
    dramatiq_target: DramatiqTarget, dispatcher: DramatiqDispatcher
) -> None:
    queue = dramatiq_target.queues[0]
    first = make_request("record_run", "batch-1", queue=queue)
    invalid = make_request("record_run", "batch-2", queue="1-invalid-queue")
    last = make_request("record_run", "batch-3", queue=queue)

    results = dispatcher.dispatch_many([first, invalid, last])

    assert results[0] == first.fire_id
    assert isinstance(results[1], DispatchError)
    assert results[1].retryable is False
    assert results[1].fire_id == invalid.fire_id
    assert results[2] == last.fire_id
    runs = wait_for_runs(
        dramatiq_target.output,
        lambda run: run["task_id"] in {first.fire_id, last.fire_id},
        count=2,
        worker=dramatiq_target.worker,
    )
    assert sorted(run["label"] for run in runs) == ["batch-1", "batch-3"]


def test_no_queue_enqueues_on_default_queue(dramatiq_redis_url: str) -> None:
    namespace = unique_name("dramatiq_default")
    dispatcher = DramatiqDispatcher(with_query(dramatiq_redis_url, namespace=namespace))
    request = make_request("record_run", "idle", 1, size=2)
    client = redis.Redis.from_url(dramatiq_redis_url)
    try:
        dispatcher.dispatch(request)
        [redis_message_id] = cast(list[bytes], client.lrange(f"{namespace}:default", 0, -1))
        data = client.hget(f"{namespace}:default.msgs", redis_message_id.decode())
    finally:
        dispatcher.close()
        client.close()
        delete_redis_keys(dramatiq_redis_url, namespace)

    assert isinstance(data, bytes)
    message = json.loads(data)
    assert message["queue_name"] == "default"
    assert message["actor_name"] == "record_run"
    assert message["message_id"] == request.fire_id
    assert message["args"] == ["idle", 1]
    assert message["kwargs"] == {"size": 2}
    assert message["options"] == {"redis_message_id": redis_message_id.decode()}


@pytest.mark.parametrize("queue", ["1queue", "my queue", "reports.DQ", "reports.XQ", "a/b"])
def test_invalid_queue_name_not_retryable(queue: str) -> None:
    dispatcher = DramatiqDispatcher(f"redis://127.0.0.1:{closed_port()}/9")
    try:
        with pytest.raises(DispatchError) as caught:
            dispatcher.dispatch(make_request("record_run", "bad", queue=queue))
    finally:
        dispatcher.close()

    assert caught.value.retryable is False
    assert f"queue {queue!r} is not a valid Dramatiq queue name" in str(caught.value)


@pytest.mark.parametrize("scheme_url", ["redis://127.0.0.1/9", DEFAULT_RABBITMQ_URL])
def test_non_json_argument_not_retryable(scheme_url: str) -> None:
    # The broker is down: encoding fails before any connection is tried.
    dispatcher = DramatiqDispatcher(with_port(scheme_url, closed_port()))
    try:
        with pytest.raises(DispatchError) as caught:
            dispatcher.dispatch(make_request("record_run", {1, 2}))
    finally:
        dispatcher.close()

    assert caught.value.retryable is False
    assert "TypeError" in str(caught.value)


def test_mismatched_amqp_queue_not_retryable(
    dramatiq_on_rabbitmq: DramatiqTarget, idle_rabbitmq_queue: str
) -> None:
    # A queue declared without Dramatiq's dead-letter arguments, as another
    # application might have done.
    connection = pika.BlockingConnection(pika.URLParameters(dramatiq_on_rabbitmq.url))
    connection.channel().queue_declare(idle_rabbitmq_queue, durable=True)
    connection.close()
    dispatcher = DramatiqDispatcher(dramatiq_on_rabbitmq.url)
    try:
        with pytest.raises(DispatchError, match="PRECONDITION_FAILED") as caught:
            dispatcher.dispatch(make_request("record_run", "conflict", queue=idle_rabbitmq_queue))
        after = make_request("record_run", "after-conflict", queue=dramatiq_on_rabbitmq.queues[0])
        message_id = dispatcher.dispatch(after)
    finally:
        dispatcher.close()

    assert caught.value.retryable is False
    assert message_id == after.fire_id
    wait_for_runs(
        dramatiq_on_rabbitmq.output,
        lambda run: run["task_id"] == after.fire_id,
        worker=dramatiq_on_rabbitmq.worker,
    )


def test_max_priority_matches_application_queue(
    dramatiq_rabbitmq_url: str, idle_rabbitmq_queue: str
) -> None:
    application = RabbitmqBroker(url=dramatiq_rabbitmq_url, max_priority=5, middleware=[])
    application.declare_queue(idle_rabbitmq_queue, ensure=True)
    application.close()
    plain = DramatiqDispatcher(dramatiq_rabbitmq_url)
    matching = DramatiqDispatcher(with_query(dramatiq_rabbitmq_url, max_priority="5"))
    try:
        with pytest.raises(DispatchError, match="PRECONDITION_FAILED") as caught:
            plain.dispatch(make_request("record_run", "plain", queue=idle_rabbitmq_queue))
        matching.dispatch(make_request("record_run", "matching", queue=idle_rabbitmq_queue))
    finally:
        plain.close()
        matching.close()

    assert caught.value.retryable is False
    assert rabbitmq_message_count(dramatiq_rabbitmq_url, idle_rabbitmq_queue) == 1


def test_amqp_threads_share_one_connection(
    dramatiq_on_rabbitmq: DramatiqTarget, rabbitmq_proxy: TcpProxy
) -> None:
    dispatcher = DramatiqDispatcher(with_port(dramatiq_on_rabbitmq.url, rabbitmq_proxy.port))
    queue = dramatiq_on_rabbitmq.queues[0]
    requests = [make_request("record_run", f"thread-{n}", queue=queue) for n in range(3)]
    results: list[str] = []

    def dispatch_in_thread(request: DispatchRequest) -> None:
        thread = threading.Thread(target=lambda: results.append(dispatcher.dispatch(request)))
        thread.start()
        thread.join()

    try:
        for request in requests:
            dispatch_in_thread(request)
    finally:
        dispatcher.close()

    assert results == [request.fire_id for request in requests]
    assert rabbitmq_proxy.accepted == 1
    wait_for_runs(
        dramatiq_on_rabbitmq.output,
        lambda run: run["task_id"] in set(results),
        count=3,
        worker=dramatiq_on_rabbitmq.worker,
    )


def test_amqp_idle_connection_kept_open_by_heartbeats(
    dramatiq_on_rabbitmq: DramatiqTarget, rabbitmq_proxy: TcpProxy
) -> None:
    heartbeat = 1
    url = with_port(dramatiq_on_rabbitmq.url, rabbitmq_proxy.port)
    dispatcher = DramatiqDispatcher(url, heartbeat=heartbeat)
    queue = dramatiq_on_rabbitmq.queues[1]
    try:
        before = make_request("record_run", "before-idle", queue=queue)
        dispatcher.dispatch(before)
        # RabbitMQ closes a connection that misses two heartbeats. Staying
        # idle for four heartbeat intervals is what is under test here.
        time.sleep(4 * heartbeat)
        after = make_request("record_run", "after-idle", queue=queue)
        dispatcher.dispatch(after)
    finally:
        dispatcher.close()

    assert rabbitmq_proxy.accepted == 1
    wait_for_runs(
        dramatiq_on_rabbitmq.output,
        lambda run: run["task_id"] == after.fire_id,
        worker=dramatiq_on_rabbitmq.worker,
    )


@pytest.mark.parametrize("backend", ["redis", "rabbitmq"])
def test_dispatch_reconnects_after_connection_drop(
    backend: str, request: pytest.FixtureRequest
) -> None:
    target: DramatiqTarget = request.getfixturevalue(f"dramatiq_on_{backend}")
    proxy: TcpProxy = request.getfixturevalue(f"{backend}_proxy")
    dispatcher = DramatiqDispatcher(with_port(target.url, proxy.port))
    queue = target.queues[0]
    try:
        before = make_request("record_run", "before-drop", queue=queue)
        assert dispatcher.dispatch(before) == before.fire_id
        proxy.drop_connections()

        after = make_request("record_run", "after-drop", queue=queue)
        assert dispatcher.dispatch(after) == after.fire_id
    finally:
        dispatcher.close()

    assert proxy.accepted >= 2
    wait_for_runs(target.output, lambda run: run["task_id"] == after.fire_id, worker=target.worker)


@pytest.mark.parametrize("scheme_url", ["redis://127.0.0.1/9", DEFAULT_RABBITMQ_URL])
def test_down_broker_raises_retryable(scheme_url: str) -> None:
    dispatcher = DramatiqDispatcher(with_port(scheme_url, closed_port()))
    request = make_request("record_run", "down", queue=unique_name("down"))
    started = time.monotonic()
    try:
        with pytest.raises(DispatchError) as caught:
            dispatcher.dispatch(request)
    finally:
        dispatcher.close()

    assert time.monotonic() - started < HANG_DEADLINE
    assert caught.value.retryable is True
    assert caught.value.engine == "dramatiq"
    assert caught.value.fire_id == request.fire_id


@pytest.mark.parametrize("scheme_url", ["redis://127.0.0.1/9", DEFAULT_RABBITMQ_URL])
def test_silent_broker_times_out_retryable(scheme_url: str, silent_server: SilentServer) -> None:
    dispatcher = DramatiqDispatcher(with_port(scheme_url, silent_server.port), timeout=1.0)
    request = make_request("record_run", "silent", queue=unique_name("silent"))
    started = time.monotonic()
    try:
        with pytest.raises(DispatchError) as caught:
            dispatcher.dispatch(request)
    finally:
        dispatcher.close()

    assert time.monotonic() - started < HANG_DEADLINE
    assert caught.value.retryable is True


def test_dispatch_many_stops_at_down_broker() -> None:
    dispatcher = DramatiqDispatcher(with_port(DEFAULT_RABBITMQ_URL, closed_port()))
    requests = [make_request("record_run", f"down-{n}") for n in range(3)]
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
    url = with_port("amqp://guest:s3cret-pw@127.0.0.1/%2F", closed_port())
    dispatcher = DramatiqDispatcher(url)
    request = make_request("record_run", "secret")
    try:
        with (
            caplog.at_level(logging.DEBUG),
            pytest.raises(DispatchError) as caught,
        ):
            dispatcher.dispatch(request)
    finally:
        dispatcher.close()

    warnings = [
        record
        for record in caplog.records
        if record.levelno == logging.WARNING and record.name.startswith("z4j_brain_plugin")
    ]
    assert len(warnings) == 1
    assert request.fire_id in warnings[0].getMessage()
    assert "s3cret-pw" not in caplog.text
    assert "s3cret-pw" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "amqp://guest:s3cret-pw@127.0.0.1:5672/%2F",
            "<DramatiqDispatcher amqp://guest:***@127.0.0.1:5672/%2F>",
        ),
        (
            "redis://:s3cret-pw@127.0.0.1:6379/9?namespace=app",
            "<DramatiqDispatcher redis://:***@127.0.0.1:6379/9?namespace=app>",
        ),
    ],
)
def test_repr_masks_password(url: str, expected: str) -> None:
    dispatcher = DramatiqDispatcher(url)
    try:
        text = repr(dispatcher)
    finally:
        dispatcher.close()

    assert text == expected


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/9", DEFAULT_RABBITMQ_URL])
def test_closed_dispatcher_raises_retryable(url: str) -> None:
    dispatcher = DramatiqDispatcher(url)
    dispatcher.close()
    dispatcher.close()

    with pytest.raises(DispatchError, match="dispatcher is closed") as caught:
        dispatcher.dispatch(make_request("record_run", "closed"))

    assert caught.value.retryable is True
    assert "closed" in repr(dispatcher)


def test_close_stops_heartbeat_thread() -> None:
    before = len(keeper_threads())
    dispatcher = DramatiqDispatcher(DEFAULT_RABBITMQ_URL)
    started = len(keeper_threads())
    dispatcher.close()

    assert started == before + 1
    assert len(keeper_threads()) == before


def test_heartbeat_zero_starts_no_thread() -> None:
    before = len(keeper_threads())
    dispatcher = DramatiqDispatcher(with_query(DEFAULT_RABBITMQ_URL, heartbeat="0"))
    try:
        assert len(keeper_threads()) == before
    finally:
        dispatcher.close()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis://127.0.0.1:6379/9",
            DramatiqBrokerConfig("redis", "redis://127.0.0.1:6379/9"),
        ),
        (
            "rediss://:pw@127.0.0.1:6380/0?namespace=app&ssl_cert_reqs=required",
            DramatiqBrokerConfig(
                "redis", "rediss://:pw@127.0.0.1:6380/0?ssl_cert_reqs=required", namespace="app"
            ),
        ),
        (
            "amqp://guest:guest@127.0.0.1:5672/%2F",
            DramatiqBrokerConfig("rabbitmq", "amqp://guest:guest@127.0.0.1:5672/%2F"),
        ),
        (
            "amqps://u:p@127.0.0.1:5671/app?max_priority=10&heartbeat=30",
            DramatiqBrokerConfig(
                "rabbitmq", "amqps://u:p@127.0.0.1:5671/app?heartbeat=30", max_priority=10
            ),
        ),
    ],
)
def test_parse_dramatiq_url_accepts(url: str, expected: DramatiqBrokerConfig) -> None:
    assert parse_dramatiq_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://127.0.0.1:6379/9?namespace=", "namespace is empty"),
        ("redis://127.0.0.1:6379/9?max_priority=5", "'max_priority' applies only to a RabbitMQ"),
        ("amqp://127.0.0.1:5672/%2F?namespace=app", "'namespace' applies only to a Redis"),
        ("amqp://127.0.0.1:5672/%2F?max_priority=0", "max_priority '0' is invalid"),
        ("amqp://127.0.0.1:5672/%2F?max_priority=256", "max_priority '256' is invalid"),
        ("amqp://127.0.0.1:5672/%2F?max_priority=high", "max_priority 'high' is invalid"),
        ("redis://127.0.0.1/9?namespace=a&namespace=b", "['namespace'] given twice"),
        ("sqs://127.0.0.1", "scheme 'sqs' is not supported"),
        ("", "scheme '' is not supported"),
    ],
)
def test_parse_dramatiq_url_rejects(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_dramatiq_url(url)

    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("amqp://guest:guest@127.0.0.1:5672//", "the virtual host is empty"),
        ("amqp://127.0.0.1:5672/%2F?colour=blue", "Unknown URL parameter: 'colour'"),
        ("amqp://127.0.0.1/%2F;amqp://127.0.0.2/%2F", "several URLs separated by ';'"),
        ("redis://127.0.0.1:6379/9?colour=blue", "'colour'"),
    ],
)
def test_invalid_connection_url_rejected_at_creation(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        DramatiqDispatcher(url)

    assert message in str(caught.value)


def test_invalid_url_error_hides_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        DramatiqDispatcher("amqp://guest:s3cret-pw@127.0.0.1:5672//")

    assert "s3cret-pw" not in str(caught.value)
