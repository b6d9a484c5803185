"""The ``z4j-brain`` command: serve, migrate, projects, tokens, declarative specs, PKI, audit."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError as SettingsError
from sqlalchemy import select
from sqlalchemy.orm import Session

from z4j_brain_plugin.errors import BrainError, ValidationError
from z4j_brain_plugin.settings import BrainSettings
from z4j_scheduler.settings import describe_settings_error

logger = logging.getLogger("z4j_brain_plugin")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        settings = BrainSettings(**_overrides(args))
    except SettingsError as error:
        print(f"z4j-brain: {describe_settings_error(error)}", file=sys.stderr)
        return 2
    try:
        status: int = args.handler(settings, args)
    except (BrainError, SettingsError) as error:
        print(f"z4j-brain: {_one_line(error)}", file=sys.stderr)
        return 2
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="z4j-brain", description="Run and administer the z4j brain."
    )
    parser.add_argument("--database-url", help="SQLAlchemy URL of the database (Z4J_DATABASE_URL)")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="run the REST API, gRPC server and (embedded) scheduler"
    )
    serve.add_argument("--host", dest="http_host", help="HTTP bind address (Z4J_HTTP_HOST)")
    serve.add_argument("--port", dest="http_port", type=int, help="HTTP port (Z4J_HTTP_PORT)")
    serve.add_argument(
        "--embedded-scheduler",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="spawn and supervise the scheduler child (Z4J_EMBEDDED_SCHEDULER)",
    )
    serve.set_defaults(handler=_serve)

    commands.add_parser("migrate", help="create or upgrade the database schema").set_defaults(
        handler=_migrate
    )

    project = commands.add_parser("project", help="manage projects").add_subparsers(
        dest="action", required=True
    )
    create_project = project.add_parser("create", help="create a project")
    create_project.add_argument("slug")
    create_project.add_argument("--name")
    create_project.set_defaults(handler=_project_create)

    token = commands.add_parser("token", help="manage API tokens").add_subparsers(
        dest="action", required=True
    )
    create_token = token.add_parser("create", help="create a bearer token and print it once")
    create_token.add_argument("--role", required=True, choices=["viewer", "operator", "admin"])
    create_token.add_argument(
        "--project", help="project slug the token is bound to (required unless admin)"
    )
    create_token.add_argument(
        "--name", default="cli", help="a label shown in logs and the audit log"
    )
    create_token.set_defaults(handler=_token_create)

    apply = commands.add_parser("apply", help="apply a declarative schedule file (TOML or JSON)")
    apply.add_argument("file", type=Path)
    apply.add_argument("--project", help="project slug; overrides the file's 'project' key")
    apply.add_argument(
        "--prune", action="store_true", help="delete declarative schedules absent from the file"
    )
    apply.set_defaults(handler=_apply)

    pki = commands.add_parser("pki", help="certificates for standalone schedulers").add_subparsers(
        dest="action", required=True
    )
    mint = pki.add_parser("mint", help="mint a CA, a server and client certificates into DIRECTORY")
    mint.add_argument("directory", type=Path)
    mint.add_argument(
        "--server-name",
        action="append",
        required=True,
        help="DNS name or IP of the brain (repeatable)",
    )
    mint.add_argument(
        "--client-cn",
        action="append",
        default=None,
        help="client certificate CN (repeatable; default z4j-scheduler)",
    )
    mint.add_argument("--days", type=int, default=365, help="validity in days")
    mint.set_defaults(handler=_pki_mint)

    audit = commands.add_parser("audit", help="the HMAC-chained audit log").add_subparsers(
        dest="action", required=True
    )
    audit.add_parser("verify", help="check every link of the chain").set_defaults(
        handler=_audit_verify
    )
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = ("database_url", "http_host", "http_port", "embedded_scheduler")
    overrides = {name: getattr(args, name, None) for name in names}
    if overrides["embedded_scheduler"]:
        overrides["scheduler_grpc_enabled"] = True
    return {name: value for name, value in overrides.items() if value is not None}


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _serve(settings: BrainSettings, _args: argparse.Namespace) -> int:
    from z4j_brain_plugin.api import create_app
    from z4j_brain_plugin.http_server import serve_http

    serve_http(create_app(settings), settings.http_host, settings.http_port)
    return 0


def _with_session(settings: BrainSettings, work: Callable[[Any, Session], Any]) -> Any:
    from z4j_brain_plugin.lifespan import open_brain

    brain = open_brain(settings)
    try:
        with brain.writes.begin() as session:
            return work(brain, session)
    finally:
        brain.engine.dispose()


def _migrate(settings: BrainSettings, _args: argparse.Namespace) -> int:
    from z4j_brain_plugin.migrate import current_revision, upgrade
    from z4j_brain_plugin.models import make_engine

    engine = make_engine(settings.database_url)
    upgrade(engine)
    print(f"database at revision {current_revision(engine)}")
    return 0


def _project_create(settings: BrainSettings, args: argparse.Namespace) -> int:
    from z4j_brain_plugin.models import Project

    def work(brain: Any, session: Session) -> None:
        if session.scalar(select(Project).where(Project.slug == args.slug)) is not None:
            print(f"project {args.slug!r} exists")
            return
        session.add(Project(slug=args.slug, name=args.name or args.slug, created_at=brain.clock()))
        print(f"created project {args.slug!r}")

    _with_session(settings, work)
    return 0


def _project(session: Session, slug: str | None) -> Any:
    from z4j_brain_plugin.models import Project

    if slug is None:
        return None
    project = session.scalar(select(Project).where(Project.slug == slug))
    if project is None:
        raise ValidationError(
            "project",
            slug,
            f"project {slug!r} not found; create it with `z4j-brain project create {slug}`",
        )
    return project


def _token_create(settings: BrainSettings, args: argparse.Namespace) -> int:
    from z4j_brain_plugin.api.auth import create_token

    def work(brain: Any, session: Session) -> str:
        project = _project(session, args.project)
        return create_token(
            session, name=args.name, role=args.role, project=project, now=brain.clock()
        )

    print(_with_session(settings, work))
    return 0


def _apply(settings: BrainSettings, args: argparse.Namespace) -> int:
    from z4j_brain_plugin.declarative import apply_spec, load_spec

    spec = load_spec(args.file)
    slug = args.project or spec.get("project")
    if not slug:
        raise ValidationError(
            "project", None, "missing project: pass --project or set 'project' in the file"
        )

    def work(brain: Any, session: Session) -> Any:
        project = _project(session, slug)
        return apply_spec(
            session,
            brain.service,
            project,
            spec["schedules"],
            prune=args.prune,
            actor=f"apply:{args.file.name}",
            now=brain.clock(),
        )

    report = _with_session(settings, work)
    print(json.dumps({"project": slug, **vars(report)}))
    return 0


def _pki_mint(settings: BrainSettings, args: argparse.Namespace) -> int:
    from z4j_brain_plugin.pki import mint_pki

    result = mint_pki(
        args.directory,
        server_names=args.server_name,
        client_cns=args.client_cn or ["z4j-scheduler"],
        valid_days=args.days,
    )
    print(result)
    return 0


def _audit_verify(settings: BrainSettings, _args: argparse.Namespace) -> int:
    from z4j_brain_plugin.audit import verify_chain
    from z4j_brain_plugin.keys import signing_secrets
    from z4j_brain_plugin.models import AuditEntry

    def work(brain: Any, session: Session) -> list[str]:
        entries = session.scalars(select(AuditEntry).order_by(AuditEntry.id))
        return verify_chain(entries, signing_secrets(settings))

    problems = _with_session(settings, work)
    for problem in problems:
        print(problem)
    print(
        "audit chain intact" if not problems else f"audit chain broken: {len(problems)} problem(s)"
    )
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
