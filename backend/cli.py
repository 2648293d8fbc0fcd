"""``iac-backend``: ``serve`` (the default) runs the API under uvicorn; ``migrate`` only
migrates. Bad configuration ends the process at once with one line saying why (exit 2).

``serve`` migrates in a short-lived child process (``python -m backend.migrate``) before it
loads the application, so the long-running server never imports Alembic and Mako; the
child reports a failure the same way, one line and exit 2, and the server passes it on.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from backend.config import Settings
from backend.crypto import SecretsUnreadable
from backend.db import SqliteInUse, hold_sqlite, is_current, migrate
from backend.errors import Invalid

EXIT_CONFIG = 2


def fail(reason: str) -> NoReturn:
    print(f"iac-backend: {reason}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_CONFIG)


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings.load(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"]) or "settings"
            problems.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
        fail("bad configuration: " + "; ".join(problems))


def _db_reason(exc: BaseException, url: str) -> str:
    shown = make_url(url).render_as_string(hide_password=True)
    original = getattr(exc, "orig", None) or exc
    text = " ".join(str(original).split()) or type(original).__name__
    return f"database {shown} is unreachable or unusable: {text}"


def run_checked(coro: Any, database_url: str) -> Any:
    """Run start-up work, turning the failures a user can fix into one line and exit 2."""
    try:
        return asyncio.run(coro)
    except SecretsUnreadable as exc:
        fail(str(exc))
    except Invalid as exc:
        fail(str(exc))
    except (DBAPIError, SQLAlchemyError, OSError, TimeoutError) as exc:
        fail(_db_reason(exc, database_url))


def migrate_in_child(database_url: str) -> None:
    """Migrate in ``python -m backend.migrate`` (the URL goes over stdin, never argv, where
    any user could read its password). The child's one-line reason is already on stderr
    when it fails; this process then exits with its status."""
    # -P: the child imports this installation's `backend`, not one in the working directory.
    child = [sys.executable, "-P", "-m", "backend.migrate"]
    try:
        done = subprocess.run(child, input=database_url, text=True, check=False)
    except OSError as exc:
        fail(f"could not start the migration process {sys.executable}: {exc}")
    if done.returncode < 0:
        fail(f"the migration process was killed by signal {-done.returncode}")
    if done.returncode != 0:
        raise SystemExit(done.returncode)


def migrate_main() -> None:
    """The child's side of `migrate_in_child`: migrate the database named on stdin."""
    database_url = sys.stdin.read().strip()
    run_checked(migrate(database_url), database_url)


def print_config(settings: Settings) -> None:
    print("iac-backend configuration:", flush=True)
    for name, value in settings.display().items():
        print(f"  {name} = {value}", flush=True)


def serve(settings: Settings) -> int:
    print_config(settings)
    try:
        hold_sqlite(settings.database_url)  # held until this process ends
    except SqliteInUse as exc:
        fail(str(exc))
    # At the newest schema already (every start but the first after an upgrade): no child.
    if not asyncio.run(is_current(settings.database_url)):
        migrate_in_child(settings.database_url)
    import uvicorn

    from backend.app import create_app, prepare

    async def preflight() -> None:
        database, _ = await prepare(settings, migrate_schema=False)
        await database.dispose()

    run_checked(preflight(), settings.database_url)
    config = uvicorn.Config(
        create_app(settings, migrated=True),
        host=settings.host,
        port=settings.port,
        log_level="info",
        proxy_headers=False,
        # Longer than clients keep idle connections, so a request rarely meets a close.
        timeout_keep_alive=75,
    )
    server = uvicorn.Server(config)
    try:
        server.run()
    except KeyboardInterrupt:
        # uvicorn shut down cleanly, then re-raised the Ctrl-C it caught: a normal stop.
        return 0
    return 0 if server.started else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iac-backend",
        description="The iac-runner control plane. Settings come from env vars and .env; "
        "see the printed configuration on start.",
    )
    listen = argparse.ArgumentParser(add_help=False)
    listen.add_argument("--host", default=argparse.SUPPRESS, help="listen address (IAC_HOST)")
    listen.add_argument(
        "--port", type=int, default=argparse.SUPPRESS, help="listen port (IAC_PORT)"
    )
    parser.add_argument("--host", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=None, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", parents=[listen], help="run the API (default)")
    sub.add_parser("migrate", help="migrate the database to the latest schema and exit")
    audit_parser = sub.add_parser("audit", help="the audit log")
    audit_sub = audit_parser.add_subparsers(dest="audit_command", required=True)
    audit_sub.add_parser(
        "verify",
        help="walk the audit log's hash chain: exit 0 when it holds, 1 with the first "
        "entry that does not (edited, or after a removed one)",
    )
    return parser


async def verify_audit(database_url: str) -> int:
    from backend.db import Database  # only here: serve does not need it at import
    from backend.store import audit

    database = Database(database_url)
    try:
        async with database.session() as session:
            verdict = await audit.verify(session)
    finally:
        await database.dispose()
    if verdict.ok:
        print(
            f"iac-backend: audit log verified: {verdict.entries} entries, the chain holds; "
            f"head: entry {verdict.head_id} {verdict.head}"
        )
        return 0
    print(
        f"iac-backend: audit log broken at entry {verdict.broken_at}: {verdict.reason} "
        f"({verdict.entries} entries read)",
        file=sys.stderr,
    )
    return 1


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Whatever the backend writes (the data dir, the SQLite database) is its user's alone.
    os.umask(0o077)
    command = args.command or "serve"
    settings = load_settings(host=args.host, port=args.port)
    if command == "audit":
        code: int = run_checked(verify_audit(settings.database_url), settings.database_url)
        return code
    if command == "migrate":
        run_checked(migrate(settings.database_url), settings.database_url)
        shown = make_url(settings.database_url).render_as_string(hide_password=True)
        print(f"iac-backend: database {shown} is at the latest schema", flush=True)
        return 0
    return serve(settings)


# glibc's malloc as the backend wants it, set in its environment by whoever starts it (the
# image, `make run`, `make bench`): see Dockerfile.combined for why.
MALLOC_ENV = {
    "MALLOC_ARENA_MAX": "2",
    "MALLOC_MMAP_THRESHOLD_": "131072",
    "MALLOC_TRIM_THRESHOLD_": "262144",
}


def main() -> None:
    sys.exit(run())
