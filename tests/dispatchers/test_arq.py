"""arq dispatcher against a real Redis and a real arq worker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from arq.connections import RedisSettings, create_pool
from arq.constants import (
    expires_extra_ms,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.jobs import deserialize_job_raw

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
from tests.workers import Run, Worker, read_runs, wait_for_runs
from tests.workers_arq_taskiq import start_arq_worker, wait_until
from z4j_brain_plugin.dispatchers.arq import ArqDispatcher, ArqQueueConfig, parse_arq_url
from z4j_brain_plugin.dispatchers.base import DispatchRequest
from z4j_brain_plugin.errors import ConfigurationError, DispatchError

pytestmark = [pytest.mark.redis, pytest.mark.slow]

RECORD_RUN = "record_run"

# The arq and taskiq tests keep their keys in this database.
DATABASE = 8

JOB_KEY_PREFIXES = (job_key_prefix, result_key_prefix, retry_key_prefix, in_progress_key_prefix)


@dataclass
class ArqTarget:
    """A queue with an arq worker, and the job ids sent to it for clean-up."""

    url: str
    queue: str
    worker: Worker
    output: Path
    job_ids: list[str] = field(default_factory=list)

    def request(self, task_name: str, *args: Any, **kwargs: Any) -> DispatchRequest:
        """Build a request and remember its fire id, whose job keys the fixture deletes."""
        request = make_request(task_name, *args, **kwargs)
        self.job_ids.append(request.fire_id)
        return request

    def runs_of(self, job_id: str) -> list[Run]:
        return [run for run in read_runs(self.output) if run["task_id"] == job_id]


def url_with_database(url: str, database: int) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def delete_job_keys(url: str, job_ids: list[str]) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = [prefix + job_id for job_id in job_ids for prefix in JOB_KEY_PREFIXES]
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="module")
def arq_redis_url(redis_url: str) -> str:
    return url_with_database(redis_url, DATABASE)


@pytest.fixture(scope="module")
def arq_target(arq_redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArqTarget]:
    queue = unique_name("arq")
    url = with_query(arq_redis_url, queue_name=queue)
    output = tmp_path_factory.mktemp("arq") / "runs.jsonl"
    target: ArqTarget | None = None
    try:
        with start_arq_worker(url, output) as worker:
            target = ArqTarget(url, queue, worker, output)
            yield target
    finally:
        delete_redis_keys(arq_redis_url, queue)
        if target is not None:
            delete_job_keys(arq_redis_url, target.job_ids)


@pytest.fixture
def dispatcher(arq_target: ArqTarget) -> Iterator[ArqDispatcher]:
    dispatcher = ArqDispatcher(arq_target.url)
    yield dispatcher
    dispatcher.close()


@pytest.fixture
def redis_client(arq_redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(arq_redis_url)
    yield client
    client.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_worker_runs_dispatched_job(arq_target: ArqTarget, dispatcher: ArqDispatcher) -> None:
    request = arq_target.request(RECORD_RUN, "nightly", 7, "seven", flag=True, size=3)

    job_id = dispatcher.dispatch(request)

    assert job_id == request.fire_id
    [run] = wait_for_runs(
        arq_target.output, lambda run: run["task_id"] == job_id, worker=arq_target.worker
    )
    assert run["label"] == "nightly"
    assert run["args"] == [7, "seven"]
    assert run["kwargs"] == {"flag": True, "size": 3}
    assert run["queue"] == arq_target.queue
    assert run["pid"] == arq_target.worker.pid


def test_example_report_tasks_write_and_delete(
    arq_target: ArqTarget, dispatcher: ArqDispatcher
) -> None:
    report = dispatcher.dispatch(arq_target.request("send_report", "weekly"))
    wait_for_runs(arq_target.output, lambda run: run["task_id"] == report, worker=arq_target.worker)
    report_path = arq_target.output.parent / "reports" / "weekly.txt"
    assert report_path.read_text(encoding="utf-8").startswith("report weekly at ")

    cleanup = dispatcher.dispatch(arq_target.request("cleanup", days=0))
    [run] = wait_for_runs(
        arq_target.output, lambda run: run["task_id"] == cleanup, worker=arq_target.worker
    )
    assert run["label"] == "cleanup"
    assert run["kwargs"] == {"days": 0}
    assert not report_path.exists()


def test_queue_overrides_url_queue(arq_target: ArqTarget, arq_redis_url: str) -> None:
    other = unique_name("other")
    dispatcher = ArqDispatcher(with_query(arq_redis_url, queue_name=other))
    request = arq_target.request(RECORD_RUN, "override", queue=arq_target.queue)
    try:
        assert dispatcher.dispatch(request) == request.fire_id
    finally:
        dispatcher.close()

    [run] = wait_for_runs(
        arq_target.output, lambda run: run["task_id"] == request.fire_id, worker=arq_target.worker
    )
    assert run["queue"] == arq_target.queue


def test_resent_fire_runs_once_while_result_kept(
    arq_target: ArqTarget, dispatcher: ArqDispatcher, redis_client: redis.Redis
) -> None:
    request = arq_target.request(RECORD_RUN, "resent")

    assert dispatcher.dispatch(request) == request.fire_id
    assert dispatcher.dispatch(request) == request.fire_id
    wait_for_runs(
        arq_target.output, lambda run: run["task_id"] == request.fire_id, worker=arq_target.worker
    )
    wait_until(
        lambda: redis_client.exists(result_key_prefix + request.fire_id) == 1,
        "arq result key written",
    )
    assert dispatcher.dispatch(request) == request.fire_id

    # A job is in the queue from enqueue until its run has been logged, so
    # once it has left the queue every run of it is in the run log.
    assert redis_client.zscore(arq_target.queue, request.fire_id) is None
    assert len(arq_target.runs_of(request.fire_id)) == 1


def test_resent_fire_runs_again_after_result_expired(
    arq_target: ArqTarget, dispatcher: ArqDispatcher, redis_client: redis.Redis
) -> None:
    request = arq_target.request(RECORD_RUN, "expired")
    dispatcher.dispatch(request)
    wait_for_runs(
        arq_target.output, lambda run: run["task_id"] == request.fire_id, worker=arq_target.worker
    )
    result_key = result_key_prefix + request.fire_id
    wait_until(lambda: redis_client.exists(result_key) == 1, "arq result key written")
    # Deleting the result is what its expiry after keep_result seconds does.
    redis_client.delete(result_key)

    dispatcher.dispatch(request)

    runs = wait_for_runs(
        arq_target.output,
        lambda run: run["task_id"] == request.fire_id,
        count=2,
        worker=arq_target.worker,
    )
    assert [run["label"] for run in runs] == ["expired", "expired"]


def test_dispatch_many_returns_results_in_order(
    arq_target: ArqTarget, dispatcher: ArqDispatcher
) -> None:
    first = arq_target.request(RECORD_RUN, "batch-1")
    blank = make_request(" ")
    last = arq_target.request(RECORD_RUN, "batch-3")

    results = dispatcher.dispatch_many([first, blank, last])

    assert results[0] == first.fire_id
    assert isinstance(results[1], DispatchError)
    assert results[1].retryable is False
    assert results[2] == last.fire_id
    runs = wait_for_runs(
        arq_target.output,
        lambda run: run["task_id"] in {first.fire_id, last.fire_id},
        count=2,
        worker=arq_target.worker,
    )
    assert sorted(run["label"] for run in runs) == ["batch-1", "batch-3"]


def test_no_queue_enqueues_in_url_queue(arq_redis_url: str, redis_client: redis.Redis) -> None:
    queue = unique_name("idle")
    dispatcher = ArqDispatcher(with_query(arq_redis_url, queue_name=queue))
    request = make_request(RECORD_RUN, "idle", 1, size=2)
    before_ms = time.time() * 1000
    try:
        dispatcher.dispatch(request)
        score = cast(float | None, redis_client.zscore(queue, request.fire_id))
        payload = cast(bytes, redis_client.get(job_key_prefix + request.fire_id))
        ttl_ms = cast(int, redis_client.pttl(job_key_prefix + request.fire_id))
    finally:
        dispatcher.close()
        delete_redis_keys(arq_redis_url, queue)
        delete_job_keys(arq_redis_url, [request.fire_id])

    function, args, kwargs, job_try, enqueue_ms = deserialize_job_raw(payload)
    assert function == RECORD_RUN
    assert args == ("idle", 1)
    assert kwargs == {"size": 2}
    assert job_try is None
    assert score == enqueue_ms
    assert enqueue_ms >= before_ms - 1
    assert 0 < ttl_ms <= expires_extra_ms


@pytest.mark.anyio
async def test_job_matches_enqueue_job(arq_redis_url: str, redis_client: redis.Redis) -> None:
    queue = unique_name("compare")
    dispatcher = ArqDispatcher(with_query(arq_redis_url, queue_name=queue))
    ours = make_request(RECORD_RUN, "compare", [1, 2], {"a": None}, size=2.5, name="x")
    theirs_id = f"{ours.fire_id}-arq"
    pool = await create_pool(RedisSettings.from_dsn(arq_redis_url))
    try:
        dispatcher.dispatch(ours)
        await pool.enqueue_job(
            RECORD_RUN, *ours.args, _job_id=theirs_id, _queue_name=queue, **ours.kwargs
        )
        our_data = cast(bytes, redis_client.get(job_key_prefix + ours.fire_id))
        their_data = cast(bytes, redis_client.get(job_key_prefix + theirs_id))
        members = cast(list[bytes], redis_client.zrange(queue, 0, -1))
    finally:
        await pool.aclose()
        dispatcher.close()
        delete_redis_keys(arq_redis_url, queue)
        delete_job_keys(arq_redis_url, [ours.fire_id, theirs_id])

    # Everything but the enqueue time, the last field, is the same.
    assert deserialize_job_raw(our_data)[:4] == deserialize_job_raw(their_data)[:4]
    assert sorted(members) == sorted([ours.fire_id.encode(), theirs_id.encode()])


def test_wrong_type_queue_key_not_retryable(arq_redis_url: str, redis_client: redis.Redis) -> None:
    queue = unique_name("wrongtype")
    redis_client.set(queue, "not a sorted set")
    dispatcher = ArqDispatcher(with_query(arq_redis_url, queue_name=queue))
    request = make_request(RECORD_RUN, "wrong type")
    try:
        with pytest.raises(DispatchError, match="WRONGTYPE") as caught:
            dispatcher.dispatch(request)
        job_left = redis_client.exists(job_key_prefix + request.fire_id)
    finally:
        dispatcher.close()
        delete_redis_keys(arq_redis_url, queue)
        delete_job_keys(arq_redis_url, [request.fire_id])

    assert caught.value.retryable is False
    assert job_left == 0


def test_dispatch_reconnects_after_connection_drop(
    arq_redis_url: str, redis_proxy: TcpProxy
) -> None:
    queue = unique_name("proxied")
    url = with_query(with_port(arq_redis_url, redis_proxy.port), queue_name=queue)
    dispatcher = ArqDispatcher(url)
    before = make_request(RECORD_RUN, "before-drop")
    after = make_request(RECORD_RUN, "after-drop")
    try:
        assert dispatcher.dispatch(before) == before.fire_id
        redis_proxy.drop_connections()
        assert dispatcher.dispatch(after) == after.fire_id
    finally:
        dispatcher.close()
        delete_redis_keys(arq_redis_url, queue)
        delete_job_keys(arq_redis_url, [before.fire_id, after.fire_id])

    assert redis_proxy.accepted >= 2


def test_down_redis_raises_retryable() -> None:
    dispatcher = ArqDispatcher(f"redis://127.0.0.1:{closed_port()}/{DATABASE}")
    request = make_request(RECORD_RUN, "down")
    started = time.monotonic()
    try:
        with pytest.raises(DispatchError) as caught:
            dispatcher.dispatch(request)
    finally:
        dispatcher.close()

    assert time.monotonic() - started < HANG_DEADLINE
    assert caught.value.retryable is True
    assert caught.value.engine == "arq"
    assert caught.value.fire_id == request.fire_id


def test_silent_redis_times_out_retryable(silent_server: SilentServer) -> None:
    dispatcher = ArqDispatcher(f"redis://127.0.0.1:{silent_server.port}/0", timeout=1.0)
    started = time.monotonic()
    try:
        with pytest.raises(DispatchError) as caught:
            dispatcher.dispatch(make_request(RECORD_RUN, "silent"))
    finally:
        dispatcher.close()

    assert time.monotonic() - started < HANG_DEADLINE
    assert caught.value.retryable is True


def test_repr_masks_password() -> None:
    dispatcher = ArqDispatcher("redis://:s3cret-pw@127.0.0.1:6379/8?queue_name=jobs")
    try:
        text = repr(dispatcher)
    finally:
        dispatcher.close()

    assert text == "<ArqDispatcher redis://:***@127.0.0.1:6379/8?queue_name=jobs>"


def test_closed_dispatcher_raises_retryable() -> None:
    dispatcher = ArqDispatcher("redis://127.0.0.1:6379/8")
    dispatcher.close()
    dispatcher.close()

    with pytest.raises(DispatchError, match="dispatcher is closed") as caught:
        dispatcher.dispatch(make_request(RECORD_RUN, "closed"))

    assert caught.value.retryable is True


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis://127.0.0.1:6379/2?queue_name=jobs",
            ArqQueueConfig("redis://127.0.0.1:6379/2", "jobs"),
        ),
        (
            "redis://127.0.0.1:6379/0",
            ArqQueueConfig("redis://127.0.0.1:6379/0", "arq:queue"),
        ),
        (
            "rediss://:pw@127.0.0.1:6380/0?queue_name=q&ssl_cert_reqs=required",
            ArqQueueConfig("rediss://:pw@127.0.0.1:6380/0?ssl_cert_reqs=required", "q"),
        ),
        (
            "unix:///run/redis/redis.sock?db=3&queue_name=q",
            ArqQueueConfig("unix:///run/redis/redis.sock?db=3", "q"),
        ),
    ],
)
def test_parse_arq_url_accepts(url: str, expected: ArqQueueConfig) -> None:
    assert parse_arq_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("amqp://127.0.0.1//", "scheme 'amqp' is not supported"),
        ("", "scheme '' is not supported"),
        ("redis://127.0.0.1:6379/0?queue_name=", "queue_name is empty"),
        ("redis://127.0.0.1:6379/0?queue_name=a&queue_name=b", "['queue_name'] given twice"),
        ("redis://127.0.0.1:6379/jobs", "database 'jobs' is not a number"),
    ],
)
def test_parse_arq_url_rejects(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_arq_url(url)

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
        ArqDispatcher(url)

    assert message in str(caught.value)


def test_parse_arq_url_error_hides_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_arq_url("redis://:s3cret-pw@127.0.0.1:6379/0?queue_name=")

    assert "s3cret-pw" not in str(caught.value)
