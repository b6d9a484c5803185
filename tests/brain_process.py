"""A real ``z4j-brain serve`` process with its embedded scheduler child, for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def brain_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "z4j_brain_plugin.cli", *args]


@dataclass
class BrainProcess:
    process: subprocess.Popen[bytes]
    base_url: str
    env: dict[str, str]
    workdir: Path
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.base_url + path, timeout=10, **kwargs)

    def cli(self, *args: str) -> str:
        """Run ``z4j-brain ARGS`` against this brain's database and return its output."""
        result = subprocess.run(
            brain_command(*args),
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, f"z4j-brain {' '.join(args)} failed: {result.stderr}"
        return result.stdout.strip()

    def readyz(self) -> dict[str, Any]:
        body: dict[str, Any] = self.get("/readyz").json()
        return body

    def wait_for(self, predicate: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"brain exited with {self.process.returncode} "
                    f"while waiting for {what}:\n{self.log()}"
                )
            try:
                value = predicate()
            except httpx.TransportError:
                value = None
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}:\n{self.log()}")

    def child_pid(self) -> int | None:
        scheduler = self.readyz()["checks"].get("scheduler", {})
        pid = scheduler.get("pid") if scheduler.get("state") == "running" else None
        return int(pid) if pid else None


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


@contextmanager
def run_brain(
    workdir: Path, database_url: str, extra_env: Mapping[str, str] = {}, *, wait_ready: bool = True
) -> Iterator[BrainProcess]:
    """Start ``z4j-brain serve`` with the embedded scheduler; stop it with SIGTERM on exit."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "Z4J_DATABASE_URL": database_url,
        "Z4J_EMBEDDED_SCHEDULER": "true",
        "Z4J_SCHEDULER_GRPC_ENABLED": "true",
        "Z4J_SCHEDULER_GRPC_PORT": "0",
        "Z4J_HTTP_PORT": str(port),
        "Z4J_SECRET": "e2e-test-secret",
        "Z4J_DISPATCH_RETRY_INITIAL": "0.2",
        "Z4J_DISPATCH_RETRY_MAX": "2",
        **extra_env,
    }
    log_path = workdir / "brain.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            brain_command("serve"), env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT
        )
    brain = BrainProcess(process, f"http://127.0.0.1:{port}", env, workdir, log_path)
    try:
        if wait_ready:
            brain.wait_for(lambda: brain.child_pid(), "the scheduler child to run", START_TIMEOUT)
        yield brain
    finally:
        stop_brain(brain)


def stop_brain(brain: BrainProcess) -> int:
    if brain.process.poll() is None:
        brain.process.send_signal(signal.SIGTERM)
        try:
            brain.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            brain.process.kill()
            brain.process.wait()
    return brain.process.returncode
