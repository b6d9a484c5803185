"""A real PgBouncer in front of the test PostgreSQL, started and stopped by its PID.

PgBouncer refuses to run as root, so as root it is started with ``-u
postgres``, and its files live in a directory that user can read.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import make_url

from tests.faults.stack import free_port

START_TIMEOUT = 30.0
RUN_AS = "postgres"


def pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or next(
        (path for path in ("/usr/sbin/pgbouncer",) if os.access(path, os.X_OK)), None
    )


def _config(port: int, server_host: str, server_port: int, pool_mode: str, directory: Path) -> str:
    # server_round_robin hands each transaction to the least recently used
    # server connection, so consecutive transactions of one client run on
    # different server sessions once the pool has two of them.
    return "\n".join(
        [
            "[databases]",
            f"* = host={server_host} port={server_port}",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {port}",
            "unix_socket_dir =",
            "auth_type = trust",
            f"auth_file = {directory / 'users.txt'}",
            f"pool_mode = {pool_mode}",
            "server_round_robin = 1",
            "default_pool_size = 4",
            "ignore_startup_parameters = extra_float_digits,options",
            "",
        ]
    )


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def run_pgbouncer(postgres_url: str, pool_mode: str) -> Iterator[str]:
    """Run PgBouncer in ``pool_mode`` on a free loopback port; yield the URL through it."""
    binary = pgbouncer_binary()
    assert binary is not None, "pgbouncer is not installed"
    parsed = make_url(postgres_url)
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="z4j-pgbouncer-"))
    directory.chmod(0o755)
    (directory / "users.txt").write_text(f'"{parsed.username}" ""\n')
    config = directory / "pgbouncer.ini"
    config.write_text(
        _config(port, parsed.host or "127.0.0.1", parsed.port or 5432, pool_mode, directory)
    )
    command = [binary, *(["-u", RUN_AS] if os.geteuid() == 0 else []), str(config)]
    with (directory / "pgbouncer.log").open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _accepts(port):
            assert process.poll() is None, (directory / "pgbouncer.log").read_text(errors="replace")
            assert time.monotonic() < deadline, f"pgbouncer did not listen on 127.0.0.1:{port}"
            time.sleep(0.05)
        yield parsed.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)
