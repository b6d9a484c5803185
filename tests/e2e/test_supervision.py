"""The embedded scheduler child under real signals: restart, give-up and clean shutdown."""

from __future__ import annotations

import fcntl
import os
import signal
from pathlib import Path

from tests.brain_process import process_exists, run_brain, stop_brain


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'z4j.db'}"


def test_killed_child_is_restarted(tmp_path: Path) -> None:
    with run_brain(tmp_path, sqlite_url(tmp_path)) as brain:
        first = brain.child_pid()
        assert first is not None
        os.kill(first, signal.SIGKILL)
        second = brain.wait_for(
            lambda: (pid := brain.child_pid()) and pid != first and pid, "a new child pid"
        )
        assert process_exists(second)
        assert brain.readyz()["checks"]["scheduler"]["restarts"] >= 1
        assert brain.get("/readyz").status_code == 200


def test_supervisor_gives_up_after_crash_loop(tmp_path: Path) -> None:
    # Holding the scheduler's lock file makes every child exit at once,
    # the way a second scheduler on the same SQLite file would.
    lock_path = tmp_path / "z4j.db.scheduler.lock"
    with lock_path.open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        env = {"Z4J_SUPERVISOR_MAX_CRASHES": "3", "Z4J_SUPERVISOR_CRASH_WINDOW": "120"}
        with run_brain(tmp_path, sqlite_url(tmp_path), env, wait_ready=False) as brain:
            brain.wait_for(
                lambda: brain.get("/readyz").status_code == 503, "readyz to report the give-up"
            )
            scheduler = brain.readyz()["checks"]["scheduler"]
            assert scheduler["state"] == "gave_up"
            assert scheduler["pid"] is None or not process_exists(scheduler["pid"])
            assert "only one instance may run" in brain.log()


def test_sigterm_stops_child_without_orphan(tmp_path: Path) -> None:
    with run_brain(tmp_path, sqlite_url(tmp_path)) as brain:
        child = brain.child_pid()
        assert child is not None
        brain.wait_for(lambda: "leader gained" in brain.log(), "the child to lead")
        status = stop_brain(brain)
        # uvicorn re-raises the signal after a graceful shutdown.
        assert status in (0, -signal.SIGTERM), brain.log()
        assert not process_exists(child)
        log = brain.log()
        assert "received SIGTERM: finishing the fires in flight" in log
        assert f"scheduler child pid {child} exited with code 0" in log
        assert "brain stopped" in log
