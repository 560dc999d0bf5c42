"""The processes of the command line: `lanedesk worker`, `lanedesk beat` and `lanedesk run`.

This module is the entry point (``lanedesk = tasks.cli:main``): it adds the Celery processes
to the commands of :mod:`workflows.cli`. The web UI's `lanedesk web` joins them here.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import click

from workflows.cli import EXIT_USAGE, desk, fail, main, prepare_desk
from workflows.inbound import Envelope
from workflows.sla import load_sla_config

from .celery_app import QUEUES, create_celery
from .jobs import ingest

#: Loggers that write a line per task (a scan every few seconds): kept at WARNING unless DEBUG.
CHATTY_LOGGERS = ("celery.app.trace", "celery.worker.strategy", "celery.beat")

#: How long `lanedesk run` waits for its processes to finish their current task on Ctrl-C.
STOP_GRACE_SECONDS = 20.0


@main.command("worker")
@click.option(
    "--concurrency", "-c", type=click.IntRange(min=1), help="Worker processes (LANEDESK_WORKER_CONCURRENCY)."
)
@click.option("--loglevel", "-l", default="INFO", show_default=True, help="Celery log level.")
@click.option("--hostname", "-n", help="Node name (default: lanedesk@<host>).")
@click.option(
    "--queues",
    "-Q",
    help=f"Only these queues, comma-separated: {', '.join(QUEUES)} (default: all, taken in turn).",
)
@click.pass_context
def worker(
    ctx: click.Context, concurrency: int | None, loglevel: str, hostname: str | None, queues: str | None
) -> None:
    """Run a Celery worker: wakes due timers, processes inbound mail and delivers outgoing mail."""
    chosen = [q.strip() for q in (queues or "").split(",") if q.strip()]
    if unknown := [q for q in chosen if q not in QUEUES]:
        fail(f"no queue {', '.join(unknown)}; the desk's queues are {', '.join(QUEUES)}", EXIT_USAGE)
    settings = desk(ctx).settings
    load_sla_config(settings)  # a broken SLA file stops the worker here, not at the next timer
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_celery(settings)
    argv = ["worker", f"--loglevel={loglevel}", f"--concurrency={concurrency or settings.worker_concurrency}"]
    argv.append(f"--hostname={hostname or 'lanedesk@%h'}")
    if chosen:
        argv.append(f"--queues={','.join(chosen)}")
    if settings.embedded_broker:
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    _quiet(loglevel)
    app.worker_main(argv)


@main.command("beat")
@click.option("--loglevel", "-l", default="INFO", show_default=True, help="Celery log level.")
@click.pass_context
def beat(ctx: click.Context, loglevel: str) -> None:
    """Run Celery beat: the timer scan every few seconds. Run exactly one per desk."""
    settings = desk(ctx).settings
    load_sla_config(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_celery(settings)
    schedule = Path(settings.data_dir) / "celerybeat-schedule"
    _quiet(loglevel)
    app.Beat(schedule=str(schedule), loglevel=loglevel, quiet=True).run()


@main.command("run")
@click.option("--no-demo", is_flag=True, help="Do not add demo users and tickets to an empty desk.")
@click.option("--once", is_flag=True, help="Prepare the desk and exit instead of starting the processes.")
@click.option(
    "--smtp-port",
    type=click.IntRange(min=0, max=65535),
    default=2525,
    show_default=True,
    help="Also receive mail on 127.0.0.1 at this port (0: no SMTP listener).",
)
@click.option(
    "--web-port",
    type=click.IntRange(min=0, max=65535),
    default=8000,
    show_default=True,
    help="Serve the web workspace on 127.0.0.1 at this port (0: no web server).",
)
@click.pass_context
def run(ctx: click.Context, no_demo: bool, once: bool, smtp_port: int, web_port: int) -> None:
    """All-in-one for a laptop: migrate, deploy, demo data, then the web workspace, a worker, beat
    and an SMTP listener."""
    d = desk(ctx)
    load_sla_config(d.settings)
    prepare_desk(d, demo=not no_demo)
    if once:
        return
    where = (
        "embedded broker" if d.settings.embedded_broker else "broker " + d.settings.broker_url.split("@")[-1]
    )
    # `python -m web` is the whole command line (web/ adds `lanedesk web` above this layer).
    processes = [[sys.executable, "-m", "web", "worker"], [sys.executable, "-m", "web", "beat"]]
    if smtp_port:
        processes.append(
            [sys.executable, "-m", "web", "smtpd", "--host", "127.0.0.1", "--port", str(smtp_port)]
        )
    if web_port:
        processes.append(
            [
                sys.executable,
                "-m",
                "web",
                "web",
                "--host",
                "127.0.0.1",
                "--port",
                str(web_port),
                "--workers",
                "1",
            ]
        )
    mail = f"; mail to any address at 127.0.0.1:{smtp_port} opens tickets" if smtp_port else ""
    smtp = d.settings.smtp
    outbox_dir = d.settings.data_dir / "outbox"
    sent = f"{smtp.host}:{smtp.port}" if smtp else f"{outbox_dir}/*.eml (no LANEDESK_SMTP_URL)"
    if web_port:
        click.echo(f"The workspace: http://127.0.0.1:{web_port}/login")
    click.echo(
        f"Starting a worker and beat ({where}); timers are scanned every "
        f"{d.settings.timer_scan_seconds} s{mail}; outgoing mail goes to {sent}. Ctrl-C stops."
    )
    supervise(processes)
    click.echo("stopped")


#: sysexits.h EX_TEMPFAIL: the MTA keeps the message and tries again later.
EX_TEMPFAIL = 75


@main.command("mailgate")
@click.option("--mailbox", help="The desk address this pipe serves (routing; default: the first recipient).")
@click.option("--from", "mail_from", help="Envelope sender (Postfix: ${sender}).")
@click.option(
    "--to", "recipients", multiple=True, help="Envelope recipient (Postfix: ${recipient}); repeatable."
)
@click.pass_context
def mailgate(
    ctx: click.Context, mailbox: str | None, mail_from: str | None, recipients: tuple[str, ...]
) -> None:
    """Take one RFC 5322 message on stdin (an MTA pipe). Exit 0 once stored, 75 to make the MTA retry."""
    raw = sys.stdin.buffer.read()
    if not raw.strip():
        click.echo("error: no message on stdin", err=True)
        sys.exit(EXIT_USAGE)
    try:
        d = desk(ctx)
        stored = ingest(
            create_celery(d.settings), d, raw, Envelope("mailgate", mail_from, recipients, mailbox)
        )
    except Exception as exc:  # nothing stored: the MTA keeps the message and retries
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        click.echo(f"error: could not store the message, try again later: {detail}", err=True)
        sys.exit(EX_TEMPFAIL)
    click.echo(f"stored as mail {stored.id}" + (" (already had it)" if stored.duplicate else ""))


def _quiet(loglevel: str) -> None:
    if loglevel.upper() != "DEBUG":
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


def supervise(commands: list[list[str]], *, grace: float = STOP_GRACE_SECONDS) -> int:
    """Run ``commands`` side by side until one exits or we are told to stop; then stop them all.

    Ctrl-C in a terminal reaches every process of the group; SIGTERM (from a service manager)
    reaches only us, so it is passed on. Returns the first non-zero exit code, else 0.
    """
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    processes = [subprocess.Popen(command) for command in commands]
    try:
        while not stopping and all(p.poll() is None for p in processes):
            time.sleep(0.2)
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in processes:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                logging.getLogger(__name__).warning(
                    "process %s did not stop in time; killing it", process.args
                )
                process.kill()
                process.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    codes = [p.returncode for p in processes]
    return next((c for c in codes if c not in (0, -signal.SIGTERM)), 0)


# Commands defined beside the code they run (registered on `main` when imported).
from . import imap as _imap  # noqa: E402, F401
from . import smtpd as _smtpd  # noqa: E402, F401
