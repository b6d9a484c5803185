"""Engine-independent dispatcher logic: batching, request checks, URL masking."""

from __future__ import annotations

import pytest

from tests.dispatchers.support import make_request
from z4j_brain_plugin.dispatchers.base import (
    DispatchRequest,
    check_request,
    dispatch_each,
    mask_url,
)
from z4j_brain_plugin.errors import DispatchError


class RecordingSender:
    """A stand-in for a broker client that raises for the fire ids in ``failures``."""

    def __init__(self, failures: dict[str, bool]) -> None:
        self.failures = failures
        self.sent: list[str] = []

    def __call__(self, request: DispatchRequest) -> str:
        retryable = self.failures.get(request.fire_id)
        if retryable is not None:
            raise DispatchError("test", request.fire_id, "refused", retryable=retryable)
        self.sent.append(request.fire_id)
        return f"task-{request.fire_id}"


def test_dispatch_each_keeps_request_order() -> None:
    requests = [make_request("tasks.add", n) for n in range(5)]
    sender = RecordingSender({})

    results = dispatch_each("test", sender, requests)

    assert results == [f"task-{request.fire_id}" for request in requests]
    assert sender.sent == [request.fire_id for request in requests]


def test_dispatch_each_continues_after_permanent_error() -> None:
    first, bad, last = (make_request("tasks.add", n) for n in range(3))
    sender = RecordingSender({bad.fire_id: False})

    results = dispatch_each("test", sender, [first, bad, last])

    assert results[0] == f"task-{first.fire_id}"
    assert isinstance(results[1], DispatchError)
    assert results[1].retryable is False
    assert results[2] == f"task-{last.fire_id}"


def test_dispatch_each_skips_rest_after_retryable_error() -> None:
    first, failing, *rest = (make_request("tasks.add", n) for n in range(4))
    sender = RecordingSender({failing.fire_id: True})

    results = dispatch_each("test", sender, [first, failing, *rest])

    assert sender.sent == [first.fire_id]
    assert results[0] == f"task-{first.fire_id}"
    assert len(results) == 4
    for request, result in zip([failing, *rest], results[1:], strict=True):
        assert isinstance(result, DispatchError)
        assert result.retryable is True
        assert result.fire_id == request.fire_id
    assert all("not attempted" in str(result) for result in results[2:])


def test_dispatch_each_of_nothing_is_empty() -> None:
    assert dispatch_each("test", RecordingSender({}), []) == []


@pytest.mark.parametrize("task_name", ["", "   "])
def test_check_request_rejects_blank_task_name(task_name: str) -> None:
    request = make_request(task_name)

    with pytest.raises(DispatchError, match="task_name is empty") as caught:
        check_request("celery", request)

    assert caught.value.retryable is False
    assert caught.value.fire_id == request.fire_id


def test_check_request_rejects_non_string_kwargs_key() -> None:
    request = DispatchRequest("f1", 1, "tasks.add", (), {1: "one"}, None)  # type: ignore[dict-item]

    with pytest.raises(DispatchError, match=r"kwargs keys must be strings, got \[1\]") as caught:
        check_request("celery", request)

    assert caught.value.retryable is False


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("amqp://guest:s3cret@127.0.0.1:5672//", "amqp://guest:***@127.0.0.1:5672//"),
        ("amqp://guest@127.0.0.1:5672//", "amqp://guest@127.0.0.1:5672//"),
        ("redis://user:p%40ss@127.0.0.1/1?name=app", "redis://user:***@127.0.0.1/1?name=app"),
        ("sqlite:///tmp/huey.db?name=app", "sqlite:///tmp/huey.db?name=app"),
    ],
)
def test_mask_url_hides_only_password(url: str, expected: str) -> None:
    assert mask_url(url) == expected
