"""Celery dispatcher against real Redis and RabbitMQ brokers and a real worker."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.dispatchers.support import (
    HANG_DEADLINE,
    SilentServer,
    TcpProxy,
    closed_port,
    declare_queue_with_max_length,
    delete_amqp_queues,
    delete_redis_keys,
    make_request,
    unique_name,
    with_port,
)
from tests.workers import Worker, start_celery_worker, wait_for_runs
from z4j_brain_plugin.dispatchers.celery import CeleryDispatcher
from z4j_brain_plugin.errors import ConfigurationError, DispatchError

pytestmark = [pytest.mark.redis, pytest.mark.slow]

RECORD_RUN = "examples.celery_app.tasks.record_run"


@dataclass(frozen=True)
class CeleryTarget:
    """A broker with a worker consuming two queues of its own."""

    url: str
    queues: tuple[str, str]
    worker: Worker
    output: Path


@pytest.fixture(scope="module")
def celery_on_redis(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CeleryTarget]:
    queues = (unique_name("celery_a"), unique_name("celery_b"))
    output = tmp_path_factory.mktemp("celery-redis") / "runs.jsonl"
    try:
        with start_celery_worker(redis_url, queues, output) as worker:
            yield CeleryTarget(redis_url, queues, worker, output)
    finally:
        for queue in queues:
            delete_redis_keys(redis_url, queue)


@pytest.fixture(scope="module")
def celery_on_rabbitmq(
    rabbitmq_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CeleryTarget]:
    queues = (unique_name("celery_a"), unique_name("celery_b"))
    output = tmp_path_factory.mktemp("celery-rabbitmq") / "runs.jsonl"
    try:
        with start_celery_worker(rabbitmq_url, queues, output) as worker:
            yield CeleryTarget(rabbitmq_url, queues, worker, output)
    finally:
        delete_amqp_queues(rabbitmq_url, list(queues))


@pytest.fixture(params=["redis", "rabbitmq"])
def celery_target(request: pytest.FixtureRequest) -> CeleryTarget:
    target: CeleryTarget = request.getfixturevalue(f"celery_on_{request.param}")
    return target


@pytest.fixture
def dispatcher(celery_target: CeleryTarget) -> Iterator[CeleryDispatcher]:
    dispatcher = CeleryDispatcher(celery_target.url)
    yield dispatcher
    dispatcher.close()


@pytest.mark.parametrize("queue_index", [0, 1])
def test_worker_runs_dispatched_task(
    celery_target: CeleryTarget, dispatcher: CeleryDispatcher, queue_index: int
) -> None:
    queue = celery_target.queues[queue_index]
    request = make_request(RECORD_RUN, "nightly", 7, "seven", queue=queue, flag=True, size=3)

    task_id = dispatcher.dispatch(request)

    assert task_id == request.fire_id
    [run] = wait_for_runs(
        celery_target.output, lambda run: run["task_id"] == task_id, worker=celery_target.worker
    )
    assert run["label"] == "nightly"
    assert run["args"] == [7, "seven"]
    assert run["kwargs"] == {"flag": True, "size": 3}
    assert run["queue"] == queue
    assert run["pid"] == celery_target.worker.pid


def test_example_report_tasks_write_and_delete(celery_on_redis: CeleryTarget) -> None:
    dispatcher = CeleryDispatcher(celery_on_redis.url)
    queue = celery_on_redis.queues[0]
    try:
        report = dispatcher.dispatch(
            make_request("examples.celery_app.tasks.send_report", "weekly", queue=queue)
        )
        wait_for_runs(
            celery_on_redis.output,
            lambda run: run["task_id"] == report,
            worker=celery_on_redis.worker,
        )
        report_path = celery_on_redis.output.parent / "reports" / "weekly.txt"
        assert report_path.read_text(encoding="utf-8").startswith("report weekly at ")

        cleanup = dispatcher.dispatch(
            make_request("examples.celery_app.tasks.cleanup", queue=queue, days=0)
        )
    finally:
        dispatcher.close()

    [run] = wait_for_runs(
        celery_on_redis.output, lambda run: run["task_id"] == cleanup, worker=celery_on_redis.worker
    )
    assert run["label"] == "cleanup"
    assert run["queue"] == queue
    assert not report_path.exists()


def test_dispatch_many_returns_results_in_order(
    celery_target: CeleryTarget, dispatcher: CeleryDispatcher
) -> None:
    queue = celery_target.queues[0]
    first = make_request(RECORD_RUN, "batch-1", queue=queue)
    blank = make_request("", queue=queue)
    last = make_request(RECORD_RUN, "batch-3", queue=queue)

    results = dispatcher.dispatch_many([first, blank, last])

    assert results[0] == first.fire_id
    assert isinstance(results[1], DispatchError)
    assert results[1].retryable is False
    assert results[1].fire_id == blank.fire_id
    assert results[2] == last.fire_id
    runs = wait_for_runs(
        celery_target.output,
        lambda run: run["task_id"] in {first.fire_id, last.fire_id},
        count=2,
        worker=celery_target.worker,
    )
    assert sorted(run["label"] for run in runs) == ["batch-1", "batch-3"]


def test_dispatch_reconnects_after_connection_drop(
    celery_on_redis: CeleryTarget, redis_proxy: TcpProxy
) -> None:
    dispatcher = CeleryDispatcher(with_port(celery_on_redis.url, redis_proxy.port))
    queue = celery_on_redis.queues[0]
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
        celery_on_redis.output,
        lambda run: run["task_id"] == after.fire_id,
        worker=celery_on_redis.worker,
    )


def test_amqp_dispatch_reconnects_after_connection_drop(
    celery_on_rabbitmq: CeleryTarget, rabbitmq_proxy: TcpProxy
) -> None:
    dispatcher = CeleryDispatcher(with_port(celery_on_rabbitmq.url, rabbitmq_proxy.port))
    queue = celery_on_rabbitmq.queues[1]
    try:
        before = make_request(RECORD_RUN, "before-drop", queue=queue)
        assert dispatcher.dispatch(before) == before.fire_id
        rabbitmq_proxy.drop_connections()

        after = make_request(RECORD_RUN, "after-drop", queue=queue)
        assert dispatcher.dispatch(after) == after.fire_id
    finally:
        dispatcher.close()

    assert rabbitmq_proxy.accepted >= 2
    wait_for_runs(
        celery_on_rabbitmq.output,
        lambda run: run["task_id"] == after.fire_id,
        worker=celery_on_rabbitmq.worker,
    )


@pytest.mark.parametrize("scheme_url", ["redis://127.0.0.1/0", "amqp://guest:guest@127.0.0.1//"])
def test_down_broker_raises_retryable(scheme_url: str) -> None:
    dispatcher = CeleryDispatcher(with_port(scheme_url, closed_port()))
    request = make_request(RECORD_RUN, "down", queue=unique_name("down"))
    started = time.monotonic()
    try:
        with pytest.raises(DispatchError) as caught:
            dispatcher.dispatch(request)
    finally:
        dispatcher.close()

    assert time.monotonic() - started < HANG_DEADLINE
    assert caught.value.retryable is True
    assert caught.value.engine == "celery"
    assert caught.value.fire_id == request.fire_id


@pytest.mark.parametrize("scheme_url", ["redis://127.0.0.1/0", "amqp://guest:guest@127.0.0.1//"])
def test_silent_broker_times_out_retryable(scheme_url: str, silent_server: SilentServer) -> None:
    dispatcher = CeleryDispatcher(with_port(scheme_url, silent_server.port), timeout=1.0)
    request = make_request(RECORD_RUN, "silent", queue=unique_name("silent"))
    started = time.monotonic()
    try:
        with pytest.raises(DispatchError) as caught:
            dispatcher.dispatch(request)
    finally:
        dispatcher.close()

    assert time.monotonic() - started < HANG_DEADLINE
    assert caught.value.retryable is True


def test_dispatch_many_stops_at_down_amqp_broker() -> None:
    dispatcher = CeleryDispatcher(with_port("amqp://guest:guest@127.0.0.1//", closed_port()))
    requests = [make_request(RECORD_RUN, f"down-{n}", queue=unique_name("down")) for n in range(3)]
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


def test_redis_batch_fails_once_at_down_broker(caplog: pytest.LogCaptureFixture) -> None:
    dispatcher = CeleryDispatcher(with_port("redis://127.0.0.1/0", closed_port()))
    queues = (unique_name("down"), unique_name("down"))
    requests = [make_request(RECORD_RUN, f"down-{n}", queue=queues[n % 2]) for n in range(4)]
    started = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, logger="z4j_brain_plugin.dispatchers"):
            results = dispatcher.dispatch_many(requests)
    finally:
        dispatcher.close()

    assert time.monotonic() - started < HANG_DEADLINE
    assert [result.fire_id for result in results if isinstance(result, DispatchError)] == [
        request.fire_id for request in requests
    ]
    assert all(isinstance(result, DispatchError) and result.retryable for result in results)
    assert all("Connection refused" in str(result) for result in results)
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "4 fire(s)" in warnings[0].getMessage()


def test_redis_batch_sends_send_task_message(celery_on_redis: CeleryTarget) -> None:
    queue = celery_on_redis.queues[0]
    worker_paused_queue = unique_name("inspect")
    dispatcher = CeleryDispatcher(celery_on_redis.url)
    request = make_request(RECORD_RUN, "same", [1, {"deep": True}], queue=worker_paused_queue, key="value")
    client = redis.Redis.from_url(celery_on_redis.url)
    try:
        dispatcher._send(request)
        assert dispatcher.dispatch_many([request]) == [request.fire_id]
        raw = client.lrange(worker_paused_queue, 0, -1)
    finally:
        dispatcher.close()
        delete_redis_keys(celery_on_redis.url, worker_paused_queue)
        client.close()

    assert len(raw) == 2
    batched, single = (json.loads(item) for item in raw)
    for message in (batched, single):
        # A fresh tag per message; the reply queue is named after the sending thread.
        del message["properties"]["delivery_tag"]
        del message["properties"]["reply_to"]
    assert batched == single
    assert batched["headers"]["id"] == request.fire_id
    assert queue != worker_paused_queue


def test_redis_batch_keeps_order_per_queue(celery_on_redis: CeleryTarget) -> None:
    queues = (unique_name("order_a"), unique_name("order_b"))
    dispatcher = CeleryDispatcher(celery_on_redis.url)
    requests = [make_request(RECORD_RUN, f"order-{n}", queue=queues[n % 2]) for n in range(6)]
    client = redis.Redis.from_url(celery_on_redis.url)
    try:
        results = dispatcher.dispatch_many(requests)
        # Workers pop from the right end of the list (BRPOP), so the oldest message is last.
        popped = {queue: [json.loads(raw)["headers"]["id"] for raw in reversed(client.lrange(queue, 0, -1))] for queue in queues}
    finally:
        dispatcher.close()
        for queue in queues:
            delete_redis_keys(celery_on_redis.url, queue)
        client.close()

    assert results == [request.fire_id for request in requests]
    assert popped[queues[0]] == [request.fire_id for request in requests[0::2]]
    assert popped[queues[1]] == [request.fire_id for request in requests[1::2]]


def test_redis_batch_wrong_key_type_fails_only_its_queue(celery_on_redis: CeleryTarget) -> None:
    broken, healthy = unique_name("broken"), celery_on_redis.queues[0]
    client = redis.Redis.from_url(celery_on_redis.url)
    client.set(broken, "not a list")
    dispatcher = CeleryDispatcher(celery_on_redis.url)
    to_broken = make_request(RECORD_RUN, "to-broken", queue=broken)
    to_healthy = make_request(RECORD_RUN, "to-healthy", queue=healthy)
    try:
        results = dispatcher.dispatch_many([to_broken, to_healthy])
    finally:
        dispatcher.close()
        delete_redis_keys(celery_on_redis.url, broken)
        client.close()

    assert isinstance(results[0], DispatchError)
    # kombu counts a Redis ResponseError as recoverable, and send_task retries it too.
    assert results[0].retryable is True
    assert "WRONGTYPE" in str(results[0])
    assert results[1] == to_healthy.fire_id
    wait_for_runs(
        celery_on_redis.output, lambda run: run["task_id"] == to_healthy.fire_id, worker=celery_on_redis.worker
    )


def test_non_json_argument_is_not_retryable(celery_on_redis: CeleryTarget) -> None:
    dispatcher = CeleryDispatcher(celery_on_redis.url)
    request = make_request(RECORD_RUN, {1, 2}, queue=celery_on_redis.queues[0])
    try:
        with pytest.raises(DispatchError) as caught:
            dispatcher.dispatch(request)
    finally:
        dispatcher.close()

    assert caught.value.retryable is False
    assert "EncodeError" in str(caught.value)


def test_mismatched_amqp_queue_not_retryable(celery_on_rabbitmq: CeleryTarget) -> None:
    conflicting = unique_name("conflict")
    declare_queue_with_max_length(celery_on_rabbitmq.url, conflicting)
    dispatcher = CeleryDispatcher(celery_on_rabbitmq.url)
    try:
        with pytest.raises(DispatchError, match="PRECONDITION_FAILED") as caught:
            dispatcher.dispatch(make_request(RECORD_RUN, "conflict", queue=conflicting))
        after = make_request(RECORD_RUN, "after-conflict", queue=celery_on_rabbitmq.queues[0])
        task_id = dispatcher.dispatch(after)
    finally:
        dispatcher.close()
        delete_amqp_queues(celery_on_rabbitmq.url, [conflicting])

    assert caught.value.retryable is False
    assert task_id == after.fire_id
    wait_for_runs(
        celery_on_rabbitmq.output,
        lambda run: run["task_id"] == after.fire_id,
        worker=celery_on_rabbitmq.worker,
    )


def test_failure_message_and_log_hide_password(caplog: pytest.LogCaptureFixture) -> None:
    url = with_port("amqp://guest:s3cret-pw@127.0.0.1//", closed_port())
    dispatcher = CeleryDispatcher(url)
    request = make_request(RECORD_RUN, "secret", queue=unique_name("down"))
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
    assert "celery" in warnings[0].getMessage()
    assert "s3cret-pw" not in caplog.text
    assert "s3cret-pw" not in str(caught.value)


def test_repr_masks_password() -> None:
    dispatcher = CeleryDispatcher("amqp://guest:s3cret-pw@127.0.0.1:5672//")
    try:
        text = repr(dispatcher)
    finally:
        dispatcher.close()

    assert text == "<CeleryDispatcher amqp://guest:***@127.0.0.1:5672//>"


@pytest.mark.parametrize("url", ["sqs://127.0.0.1", "", "memory://"])
def test_rejects_unsupported_broker_scheme(url: str) -> None:
    scheme = url.partition(":")[0] if url else ""

    with pytest.raises(ConfigurationError, match=f"scheme {scheme!r} is not supported"):
        CeleryDispatcher(url)


def test_closed_dispatcher_raises_retryable() -> None:
    dispatcher = CeleryDispatcher("redis://127.0.0.1:6379/11")
    dispatcher.close()
    dispatcher.close()
    request = make_request(RECORD_RUN, "closed")

    with pytest.raises(DispatchError, match="dispatcher is closed") as caught:
        dispatcher.dispatch(request)

    assert caught.value.retryable is True
    assert "closed" in repr(dispatcher)
