"""Options of ``z4j-scheduler serve``, kept apart so the preview commands start fast.

Importing the scheduler process pulls in SQLAlchemy, gRPC and the brain's
models; ``next`` and ``catch-up`` need none of them.
"""

from __future__ import annotations

import argparse
import os
from typing import Any


def add_command(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the scheduler: lead, plan and fire due slots")
    serve.add_argument("--database-url", help="database shared with the brain (Z4J_DATABASE_URL)")
    serve.add_argument(
        "--brain",
        dest="brain_grpc_target",
        help="brain gRPC address HOST:PORT (Z4J_BRAIN_GRPC_TARGET)",
    )
    serve.add_argument("--tls-cert", help="client certificate, PEM (Z4J_TLS_CERT)")
    serve.add_argument("--tls-key", help="client private key, PEM (Z4J_TLS_KEY)")
    serve.add_argument("--tls-ca", help="CA that signed the brain's certificate (Z4J_TLS_CA)")
    serve.add_argument(
        "--tls-server-name",
        help="name in the brain's certificate, if not the host (Z4J_TLS_SERVER_NAME)",
    )
    serve.add_argument(
        "--grace",
        dest="misfire_grace_seconds",
        type=float,
        help="seconds a slot may be late and still fire on time (Z4J_MISFIRE_GRACE_SECONDS)",
    )
    serve.add_argument(
        "--instance-id",
        help="name of this instance in logs and the leader row; default HOST:PID (Z4J_INSTANCE_ID)",
    )
    serve.add_argument(
        "--http-host",
        dest="scheduler_http_host",
        help="address of /healthz, /readyz and /metrics "
        "(Z4J_SCHEDULER_HTTP_HOST, default 127.0.0.1)",
    )
    serve.add_argument(
        "--http-port",
        dest="scheduler_http_port",
        type=int,
        help="port of /healthz, /readyz and /metrics; off when unset (Z4J_SCHEDULER_HTTP_PORT)",
    )
    serve.add_argument(
        "--reconcile-interval",
        type=float,
        help="seconds between passes that correct every cursor from its definition; 0 is off "
        "(Z4J_RECONCILE_INTERVAL, default 900)",
    )
    serve.add_argument(
        "--log-level",
        default=os.environ.get("Z4J_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
    )
    serve.set_defaults(handler=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from z4j_scheduler.serve import run_serve

    return run_serve(args)
