"""All six engines fired from one brain, and fires that wait out a broker outage."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from tests.brain_process import BrainProcess, run_brain
from tests.conftest import POSTGRES_URL, reset_tables
from tests.dispatchers.support import TcpProxy, closed_port
from tests.workers import Worker, read_runs, start_celery_worker, start_huey_consumer, wait_for_runs
from tests.workers_arq_taskiq import start_arq_worker, start_taskiq_worker
from tests.workers_rq_dramatiq import start_dramatiq_worker, start_rq_worker

REDIS = "redis://127.0.0.1:6379/12"
RABBIT = "amqp://guest:guest@127.0.0.1:5672/%2F"


class Client:
    def __init__(self, brain: BrainProcess) -> None:
        self.brain = brain
        brain.cli("project", "create", "demo")
        token = brain.cli("token", "create", "--role", "operator", "--project", "demo")
        self.headers = {"Authorization": f"Bearer {token}"}

    def create(self, **body: Any) -> dict[str, Any]:
        response = httpx.post(
            f"{self.brain.base_url}/api/v1/projects/demo/schedules",
            json=body,
            headers=self.headers,
            timeout=10,
        )
        assert response.status_code == 201, response.text
        document: dict[str, Any] = response.json()
        return document

    def post(self, path: str) -> httpx.Response:
        return httpx.post(
            f"{self.brain.base_url}/api/v1/projects/demo/schedules/{path}",
            headers=self.headers,
            timeout=10,
        )

    def fires(self, schedule_id: int) -> list[dict[str, Any]]:
        response = httpx.get(
            f"{self.brain.base_url}/api/v1/projects/demo/schedules/{schedule_id}/fires",
            params={"limit": 1000},
            headers=self.headers,
            timeout=10,
        )
        assert response.status_code == 200, response.text
        fires: list[dict[str, Any]] = response.json()["fires"]
        return fires


def engine_targets(tmp_path: Path) -> dict[str, dict[str, str]]:
    """Per engine (and Dramatiq on RabbitMQ too): broker URL, queue and task name."""
    tag = uuid.uuid4().hex[:8]
    return {
        "celery": {
            "url": REDIS,
            "queue": f"celery-{tag}",
            "task": "examples.celery_app.tasks.record_run",
        },
        "huey": {
            "url": f"sqlite:///{tmp_path / 'huey.db'}?name=huey-{tag}",
            "queue": f"huey-{tag}",
            "task": "examples.huey_app.tasks.record_run",
        },
        "rq": {"url": REDIS, "queue": f"rq-{tag}", "task": "examples.rq_app.tasks.record_run"},
        "dramatiq": {"url": REDIS, "queue": f"dq-{tag}", "task": "record_run"},
        "dramatiq-rabbit": {"url": RABBIT, "queue": f"dqr-{tag}", "task": "record_run"},
        "arq": {
            "url": f"{REDIS}?queue_name=arq-{tag}",
            "queue": f"arq-{tag}",
            "task": "record_run",
        },
        "taskiq": {
            "url": f"{REDIS}?queue_name=taskiq-{tag}",
            "queue": f"taskiq-{tag}",
            "task": "examples.taskiq_app.tasks:record_run",
        },
    }


def start_workers(
    stack: ExitStack, targets: dict[str, dict[str, str]], output: Path, logs: Path
) -> dict[str, Worker]:
    def log(name: str) -> Path:
        return logs / f"{name}.log"

    t = targets
    return {
        "celery": stack.enter_context(
            start_celery_worker(REDIS, [t["celery"]["queue"]], output, log_path=log("celery"))
        ),
        # The URL's Huey name is the schedule's queue, which the dispatcher uses as the name.
        "huey": stack.enter_context(
            start_huey_consumer(t["huey"]["url"], output, log_path=log("huey"))
        ),
        "rq": stack.enter_context(
            start_rq_worker(REDIS, [t["rq"]["queue"]], output, log_path=log("rq"))
        ),
        "dramatiq": stack.enter_context(
            start_dramatiq_worker(REDIS, [t["dramatiq"]["queue"]], output, log_path=log("dramatiq"))
        ),
        "dramatiq-rabbit": stack.enter_context(
            start_dramatiq_worker(
                RABBIT, [t["dramatiq-rabbit"]["queue"]], output, log_path=log("dramatiq-rabbit")
            )
        ),
        "arq": stack.enter_context(start_arq_worker(t["arq"]["url"], output, log_path=log("arq"))),
        "taskiq": stack.enter_context(
            start_taskiq_worker(t["taskiq"]["url"], output, log_path=log("taskiq"))
        ),
    }


@pytest.fixture
def postgres_url(postgres_engine: Engine) -> str:
    reset_tables(postgres_engine)
    return POSTGRES_URL


def test_one_brain_fires_all_six_engines(postgres_url: str, tmp_path: Path) -> None:
    targets = engine_targets(tmp_path)
    output = tmp_path / "runs.jsonl"
    env = {
        "Z4J_CELERY_BROKER_URL": targets["celery"]["url"],
        "Z4J_HUEY_URL": targets["huey"]["url"],
        "Z4J_RQ_REDIS_URL": targets["rq"]["url"],
        "Z4J_DRAMATIQ_BROKER_URL": targets["dramatiq"]["url"],
        "Z4J_CONNECTIONS": f'{{"dramatiq": {{"rabbit": "{RABBIT}"}}}}',
        "Z4J_ARQ_REDIS_URL": targets["arq"]["url"],
        "Z4J_TASKIQ_BROKER_URL": targets["taskiq"]["url"],
    }
    with ExitStack() as stack:
        workers = start_workers(stack, targets, output, tmp_path)
        brain = stack.enter_context(run_brain(tmp_path, postgres_url, env))
        client = Client(brain)
        schedules = {}
        for name, target in targets.items():
            engine, _, connection = name.partition("-")
            schedules[name] = client.create(
                name=f"every-second-{name}",
                engine=engine,
                connection="rabbit" if connection else "default",
                kind="interval",
                expression="1",
                task_name=target["task"],
                queue=target["queue"],
                args=[name, 42],
                kwargs={"engine": name, "nested": {"ok": True}},
            )
        for name, target in targets.items():
            runs = wait_for_runs(
                output, lambda run, label=name: run["label"] == label, count=2, worker=workers[name]
            )
            fire_ids = {
                fire["id"]
                for fire in client.fires(schedules[name]["id"])
                if fire["status"] == "dispatched"
            }
            for run in runs:
                assert run["args"] == [42], name
                assert run["kwargs"] == {"engine": name, "nested": {"ok": True}}, name
                assert run["task_id"] in fire_ids, name
                if run.get("queue") is not None:
                    assert run["queue"] == target["queue"], name


@pytest.fixture
def outage_stack(
    tmp_path: Path,
) -> Iterator[tuple[BrainProcess, Client, Path, int, dict[str, Worker]]]:
    port = closed_port()
    queue = f"outage-{uuid.uuid4().hex[:8]}"
    huey_url = f"sqlite:///{tmp_path / 'huey.db'}?name=outage-{uuid.uuid4().hex[:6]}"
    output = tmp_path / "runs.jsonl"
    env = {"Z4J_CELERY_BROKER_URL": f"redis://127.0.0.1:{port}/12", "Z4J_HUEY_URL": huey_url}
    with ExitStack() as stack:
        workers = {
            "celery": stack.enter_context(
                start_celery_worker(REDIS, [queue], output, log_path=tmp_path / "celery.log")
            ),
            "huey": stack.enter_context(
                start_huey_consumer(huey_url, output, log_path=tmp_path / "huey.log")
            ),
        }
        brain = stack.enter_context(run_brain(tmp_path, f"sqlite:///{tmp_path / 'z4j.db'}", env))
        yield brain, Client(brain), output, port, {**workers, "queue": queue}  # type: ignore[dict-item]


def test_broker_outage_loses_no_fire(
    outage_stack: tuple[BrainProcess, Client, Path, int, dict[str, Any]],
) -> None:
    brain, client, output, port, workers = outage_stack
    down = client.create(
        name="while-broker-down",
        engine="celery",
        kind="interval",
        expression="1",
        task_name="examples.celery_app.tasks.record_run",
        args=["while-down"],
        queue=workers["queue"],
    )
    client.create(
        name="other-engine",
        engine="huey",
        kind="interval",
        expression="1",
        task_name="examples.huey_app.tasks.record_run",
        args=["huey-alive"],
    )

    failed = brain.wait_for(
        lambda: [fire for fire in client.fires(down["id"]) if fire["status"] == "failed"][2:],
        "three fires failed while the broker is down",
    )
    assert all(fire["last_error"] for fire in failed)
    # The other engine keeps firing while Celery's broker is down.
    wait_for_runs(output, lambda run: run["label"] == "huey-alive", count=3, worker=workers["huey"])
    assert [run for run in read_runs(output) if run["label"] == "while-down"] == []

    proxy = TcpProxy(6379, listen_port=port)
    try:
        assert client.post(f"{down['id']}/disable").status_code == 200
        fires = brain.wait_for(
            lambda: (
                (fires := client.fires(down["id"]))
                and all(f["status"] == "dispatched" for f in fires)
                and fires
            ),
            "every fire to reach the broker after it came back",
        )
        runs = wait_for_runs(
            output,
            lambda run: run["label"] == "while-down",
            count=len(fires),
            worker=workers["celery"],
        )
    finally:
        proxy.close()
    ran = Counter(run["task_id"] for run in runs)
    assert set(ran) == {fire["id"] for fire in fires}
    assert set(ran.values()) == {1}
    assert any(fire["attempts"] > 1 for fire in fires)
