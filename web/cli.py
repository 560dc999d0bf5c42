"""`lanedesk web` (gunicorn serving create_app), `lanedesk user password`; the `lanedesk` entry point.

The command line is assembled bottom-up: workflows/cli.py defines the group and the desk's
commands, tasks/cli.py adds the Celery and mail processes, this module adds the web server.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from tasks.cli import main
from workflows.cli import EXIT_USAGE, desk, fail
from workflows.users import get_user, set_password

__all__ = ["main"]


class _Gunicorn:  # built lazily: gunicorn is Unix-only and imports cost 100 ms
    @staticmethod
    def serve(app: Any, options: dict[str, Any]) -> None:
        from gunicorn.app.base import BaseApplication

        class Server(BaseApplication):
            def load_config(self) -> None:
                for key, value in options.items():
                    self.cfg.set(key, value)

            def load(self) -> Any:
                return app

        Server().run()


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

    app = create_app(desk=desk(ctx))
    click.echo(f"Lanedesk web on http://{host}:{port}/ (log in at /login); Ctrl-C stops.")
    _Gunicorn.serve(
        app,
        {
            "bind": f"{host}:{port}",
            "workers": workers,
            "threads": threads,
            "worker_class": "gthread",
            "accesslog": "-",
            "errorlog": "-",
            "graceful_timeout": 20,
            "forwarded_allow_ips": "127.0.0.1",
        },
    )


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
