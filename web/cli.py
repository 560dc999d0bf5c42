"""`lanedesk web` (gunicorn serving create_app), `lanedesk user password`; the `lanedesk` entry point.

The command line is assembled bottom-up: workflows/cli.py defines the group and the desk's
commands, tasks/cli.py adds the Celery and mail processes, this module adds the web server.
"""

from __future__ import annotations

import gc
import socket
import sys
from typing import Any

import click

from tasks.cli import main
from workflows.cli import EXIT_USAGE, desk, fail
from workflows.output import dump_json
from workflows.users import api_tokens, get_user, new_api_token, revoke_api_tokens, set_password

__all__ = ["main"]


class _Gunicorn:  # built lazily: gunicorn is Unix-only and imports cost 100 ms
    @staticmethod
    def serve(app: Any, options: dict[str, Any]) -> None:
        from gunicorn.app.base import BaseApplication

        class Server(BaseApplication):
            def load_config(self) -> None:
                for key, value in options.items():
                    self.cfg.set(key, value)

            def load(self) -> Any:  # in each worker, before its first request
                return long_lived(app)

        Server().run()


def long_lived(app: Any) -> Any:
    """``app``, with every object built so far (the app, SQLAlchemy's mappers, the settings...)
    moved out of the cyclic garbage collector's sight: they live as long as the process, and a
    full collection walking them all paused a worker's every thread for tens of milliseconds."""
    gc.freeze()
    return app


@main.command("web")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option(
    "--workers", type=click.IntRange(1, 64), default=2, show_default=True, help="gunicorn worker processes"
)
@click.option(
    "--threads", type=click.IntRange(1, 64), default=4, show_default=True, help="threads per worker"
)
@click.pass_context
def web(ctx: click.Context, host: str, port: int, workers: int, threads: int) -> None:
    """Serve the agent workspace and /api/v1 with gunicorn (the production server)."""
    from web import create_app

    refuse_a_taken_port(host, port)
    app = create_app(desk=desk(ctx))
    click.echo(f"Lanedesk web on http://{host}:{port}/ (log in at /login); Ctrl-C stops.")
    _Gunicorn.serve(app, gunicorn_options(host, port, workers, threads))


def gunicorn_options(host: str, port: int, workers: int, threads: int) -> dict[str, Any]:
    return {
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "accesslog": "-",
        "errorlog": "-",
        "graceful_timeout": 20,
        # Each worker listens on a socket of its own (SO_REUSEPORT) and the kernel spreads new
        # connections over them. On one shared socket the worker that wakes first takes them: a
        # burst of keep-alive connections could land on one worker (16 of 16 seen under wrk), which
        # then uses one core while the other idles. (A worker that dies drops the connections
        # still queued on its socket; gunicorn starts a new one.)
        "reuse_port": True,
    }


def refuse_a_taken_port(host: str, port: int) -> None:
    """Fail as a plain bind would when something listens on ``host:port`` already: with
    ``reuse_port`` a second server would bind beside it and quietly take half its connections."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed server's TIME_WAIT is fine
        try:
            probe.bind(address)
        except OSError as exc:
            fail(f"cannot listen on {host}:{port}: {exc.strerror}")


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    if not sys.stdin.isatty():
        fail("no terminal to ask for the password on; use --password-stdin", EXIT_USAGE)
    value: str = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    return value


user_group = main.commands["user"]
assert isinstance(user_group, click.Group)


@user_group.command("password")
@click.argument("email")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.pass_context
def user_password(ctx: click.Context, email: str, password_stdin: bool) -> None:
    """Set a user's password (they log in at /login)."""
    password = _read_password(password_stdin)
    d = desk(ctx)
    with d.unit_of_work() as session:
        user = get_user(session, email)
        set_password(session, user, password, now=d.clock())
    click.echo(f"password set for {user.email}")


@user_group.command("token")
@click.argument("email")
@click.option("--name", required=True, help="What the token is for, e.g. the integration's name.")
@click.pass_context
def user_token(ctx: click.Context, email: str, name: str) -> None:
    """Create an API token for /api/v1 and print it (once: only its hash is stored)."""
    d = desk(ctx)
    with d.unit_of_work() as session:
        user = get_user(session, email)
        plain = new_api_token(session, user, name, now=d.clock())
    click.echo(plain)
    click.echo(
        f"API token {name.strip()!r} for {user.email}: send it as `Authorization: Bearer <token>`. "
        "It is shown only now.",
        err=True,
    )


@user_group.command("revoke-token")
@click.argument("email")
@click.option("--name", required=True, help="The token's name (every live token of that name is revoked).")
@click.pass_context
def user_revoke_token(ctx: click.Context, email: str, name: str) -> None:
    """Revoke a user's API token(s) by name; calls with it are refused at once."""
    d = desk(ctx)
    with d.unit_of_work() as session:
        user = get_user(session, email)
        count = revoke_api_tokens(session, user, name, now=d.clock())
    click.echo(f"revoked {count} API token{'s' if count != 1 else ''} named {name.strip()!r} of {user.email}")


@user_group.command("tokens")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def user_tokens(ctx: click.Context, email: str, as_json: bool) -> None:
    """List a user's API tokens (names and dates; the tokens themselves are not stored)."""
    d = desk(ctx)
    with d.unit_of_work(readonly=True) as session:
        user = get_user(session, email)
        rows = [
            {
                "name": t.name,
                "created_at": t.created_at.isoformat(),
                "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
                "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
            }
            for t in api_tokens(session, user)
        ]
    if as_json:
        click.echo(dump_json(rows))
        return
    if not rows:
        click.echo(f"{user.email} has no API tokens")
    for row in rows:
        state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "live"
        used = row["last_used_at"] or "never"
        click.echo(f"{row['name']:<30} created {row['created_at']}  last used {used}  {state}")
