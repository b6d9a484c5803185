"""Real brain and scheduler processes for the benchmarks, started and stopped by PID.

The brain runs ``z4j-brain serve`` with its gRPC endpoint on and no embedded
scheduler. Schedulers run as separate ``z4j-scheduler serve`` processes, so a
benchmark can start, kill and count them one by one. Every address is on
127.0.0.1.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from z4j_brain_plugin.pki import MintedPki, mint_pki

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
SECRET = "z4j-benchmark-secret"
CLIENT_CN = "z4j-scheduler"
# Seconds to wait for a process to become ready, and to exit after SIGTERM.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until(
    predicate: Callable[[], object], what: str, timeout: float, interval: float = 0.01
) -> float:
    """Poll ``predicate`` until it is truthy; return the time.time() it first was."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.time()
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class Service:
    """One started process with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    started_at: float

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def check_running(self) -> None:
        if not self.running():
            raise RuntimeError(
                f"{self.name} (pid {self.pid}) exited with {self.process.returncode}:\n{self.log_tail()}"
            )

    def stop(self) -> None:
        """Send SIGTERM to this PID, then SIGKILL after ``STOP_TIMEOUT`` seconds."""
        if self.running():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                logger.warning("%s (pid %d) ignored SIGTERM; killing it", self.name, self.pid)
                self.process.kill()
                self.process.wait()

    def kill(self) -> float:
        """Send SIGKILL to this PID and return the time.time() it was sent."""
        sent = time.time()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        return sent


@dataclass
class Stack:
    """The processes of one benchmark run and the settings they share."""

    workdir: Path
    database_url: str
    broker_url: str
    pki: MintedPki
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    brain: Service | None = None
    schedulers: list[Service] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def brain_env(self, extra: Mapping[str, str]) -> dict[str, str]:
        return {
            **_base_env(),
            "Z4J_DATABASE_URL": self.database_url,
            "Z4J_HTTP_HOST": "127.0.0.1",
            "Z4J_HTTP_PORT": str(self.http_port),
            "Z4J_SCHEDULER_GRPC_ENABLED": "true",
            "Z4J_SCHEDULER_GRPC_HOST": "127.0.0.1",
            "Z4J_SCHEDULER_GRPC_PORT": str(self.grpc_port),
            "Z4J_SCHEDULER_GRPC_TLS_CA": str(self.pki.ca_cert),
            "Z4J_SCHEDULER_GRPC_TLS_CERT": str(self.pki.server.cert),
            "Z4J_SCHEDULER_GRPC_TLS_KEY": str(self.pki.server.key),
            "Z4J_SECRET": SECRET,
            "Z4J_CELERY_BROKER_URL": self.broker_url,
            **extra,
        }

    def scheduler_env(self, instance_id: str) -> dict[str, str]:
        client = self.pki.clients[CLIENT_CN]
        return {
            **_base_env(),
            "Z4J_DATABASE_URL": self.database_url,
            "Z4J_BRAIN_GRPC_TARGET": f"127.0.0.1:{self.grpc_port}",
            "Z4J_TLS_CA": str(client.ca_cert),
            "Z4J_TLS_CERT": str(client.cert),
            "Z4J_TLS_KEY": str(client.key),
            "Z4J_SECRET": SECRET,
            "Z4J_INSTANCE_ID": instance_id,
        }

    def start_brain(self, extra_env: Mapping[str, str] = {}) -> Service:
        """Start ``z4j-brain serve`` and wait until ``/readyz`` returns 200."""
        command = [sys.executable, "-m", "z4j_brain_plugin.cli", "serve"]
        brain = spawn("brain", command, self.brain_env(extra_env), self.workdir)
        self.brain = brain
        wait_until(lambda: self._brain_ready(brain), "the brain's /readyz", START_TIMEOUT, 0.05)
        return brain

    def start_scheduler(self, instance_id: str) -> Service:
        """Start ``z4j-scheduler serve`` without waiting for it."""
        command = [sys.executable, "-m", "z4j_scheduler", "serve"]
        service = spawn(
            f"scheduler {instance_id}", command, self.scheduler_env(instance_id), self.workdir
        )
        self.schedulers.append(service)
        return service

    def stop_schedulers(self) -> None:
        for service in self.schedulers:
            service.stop()
        self.schedulers.clear()

    def stop(self) -> None:
        self.stop_schedulers()
        if self.brain is not None:
            self.brain.stop()
            self.brain = None

    def _brain_ready(self, brain: Service) -> bool:
        brain.check_running()
        try:
            return httpx.get(self.base_url + "/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False


def make_stack(workdir: Path, database_url: str, broker_url: str) -> Stack:
    pki = mint_pki(
        workdir / "pki", server_names=["127.0.0.1"], client_cns=[CLIENT_CN], valid_days=2
    )
    return Stack(workdir, database_url, broker_url, pki)


def _base_env() -> dict[str, str]:
    # The benchmark processes log at INFO, as a production brain would.
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}


def spawn(name: str, command: list[str], env: Mapping[str, str], workdir: Path) -> Service:
    log_path = workdir / f"{name.replace(' ', '-')}-{int(time.time() * 1000)}.log"
    with log_path.open("wb") as log:
        started = time.time()
        process = subprocess.Popen(
            command, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT
        )
    logger.info("started %s as pid %d (log %s)", name, process.pid, log_path)
    return Service(name, process, log_path, started)
