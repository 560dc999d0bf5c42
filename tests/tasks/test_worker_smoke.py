"""Real Celery processes: a worker and beat on RabbitMQ and on the embedded broker, and `lanedesk run`.

A ticket is opened three days in the past, so its first-response reminder is overdue when the
processes start (as after an outage); the test waits (polling the database, with a deadline)
until beat's scan has handed it to the worker and the timer has fired, exactly once.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kombu import Connection
from sqlalchemy import func, select

from tasks.celery_app import QUEUES, create_celery
from tasks.jobs import publish
from workflows.app import Desk
from workflows.inbound import Envelope, store_raw
from workflows.models import AuditEvent, MailMessage, Ticket, WorkflowInstance

from ..workflows.helpers import new_ticket

REPO = Path(__file__).resolve().parents[2]
RABBITMQ_URL = os.environ.get("LANEDESK_TEST_BROKER_URL", "")
DEADLINE_SECONDS = 90.0


def _overdue_ticket(desk: Desk) -> int:
    with desk.unit_of_work() as session:
        ticket = new_ticket(session, desk.settings, datetime.now(UTC) - timedelta(days=3))
        return ticket.id


def _fired(desk: Desk, ticket_id: int) -> int:
    with desk.unit_of_work(readonly=True) as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.ticket_id == ticket_id, AuditEvent.action == "timer_fired")
            )
            or 0
        )


def _settled(desk: Desk, ticket_id: int) -> bool:
    with desk.unit_of_work(readonly=True) as session:
        row = session.scalar(select(WorkflowInstance).where(WorkflowInstance.ticket_id == ticket_id))
        assert row is not None
        return row.next_wake_at is None and row.wake_claimed_until is None


def _wait_for(condition: Callable[[], bool], what: str, processes: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        for process in processes:
            assert process.poll() is None, f"{process.args} exited with {process.returncode} before {what}"
        assert time.monotonic() < deadline, f"no {what} within {DEADLINE_SECONDS:g} s"
        time.sleep(0.2)  # polling another process's progress, not waiting for a timer


def _env(desk: Desk, broker_url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANEDESK_")}
    env.update(
        LANEDESK_DATABASE_URL=desk.settings.database_url,
        LANEDESK_DATA_DIR=str(data_dir),
        LANEDESK_BROKER_URL=broker_url,
        LANEDESK_TIMER_SCAN_SECONDS="1",
        LANEDESK_WORKER_CONCURRENCY="2",
    )
    return env


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (tmp_path / f"{args[0]}-{len(started)}.log").open("wb") as log:
            command = [sys.executable, "-m", "tasks", *args]
            process = subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=log)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()
    for log in sorted(tmp_path.glob("*.log")):  # shown by pytest when the test failed
        print(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}")


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    process.send_signal(sig)
    return process.wait(timeout=60)


def _worker_and_beat_fire_an_overdue_timer_once(
    desk: Desk, broker_url: str, tmp_path: Path, start: Callable[..., subprocess.Popen[bytes]]
) -> None:
    ticket_id = _overdue_ticket(desk)
    env = _env(desk, broker_url, tmp_path)
    running = [start("worker", env=env), start("beat", env=env)]
    _wait_for(lambda: _fired(desk, ticket_id) >= 1 and _settled(desk, ticket_id), "timer firing", running)
    assert _fired(desk, ticket_id) == 1
    assert [_stop(p) for p in running] == [0, 0]


@pytest.mark.skipif(not RABBITMQ_URL, reason="set LANEDESK_TEST_BROKER_URL (amqp://...) to run on RabbitMQ")
def test_a_real_worker_on_rabbitmq_fires_an_overdue_timer_once(
    desk: Desk, tmp_path: Path, processes: Callable[..., subprocess.Popen[bytes]]
) -> None:
    with Connection(RABBITMQ_URL, connect_timeout=5) as connection:  # messages left by earlier runs
        for name in QUEUES:
            connection.channel().queue_delete(name)  # the worker declares them again
    _worker_and_beat_fire_an_overdue_timer_once(desk, RABBITMQ_URL, tmp_path, processes)


def test_a_real_worker_on_the_embedded_broker_fires_an_overdue_timer_once(
    desk: Desk, tmp_path: Path, processes: Callable[..., subprocess.Popen[bytes]]
) -> None:
    broker = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    _worker_and_beat_fire_an_overdue_timer_once(desk, broker, tmp_path, processes)


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.add(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads child processes from /proc")
def test_lanedesk_run_starts_worker_beat_smtp_and_web_and_stops_them_on_ctrl_c(
    desk: Desk, tmp_path: Path, processes: Callable[..., subprocess.Popen[bytes]]
) -> None:
    pytest.importorskip("workflows.mailparse")
    ticket_id = _overdue_ticket(desk)
    env = _env(desk, f"sqla+sqlite:///{tmp_path / 'broker.db'}", tmp_path)
    port, web_port = _free_port(), _free_port()  # the SMTP listener's and the workspace's
    run = processes("run", "--no-demo", "--smtp-port", str(port), "--web-port", str(web_port), env=env)
    _wait_for(lambda: _fired(desk, ticket_id) == 1 and _settled(desk, ticket_id), "timer firing", [run])
    _wait_for(lambda: _accepts(port), "the SMTP listener", [run])
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:  # the laptop's whole mail-in loop
        client.sendmail(
            "erik@customer.example",
            ["support@desk.example"],
            b"From: erik@customer.example\r\nTo: support@desk.example\r\nSubject: Scanner jams\r\n"
            b"Message-ID: <run-smoke@customer.example>\r\n\r\nIt jams on page 2.\r\n",
        )
    _wait_for(lambda: _ticket_with_subject(desk, "Scanner jams"), "a ticket from the mail", [run])
    _wait_for(lambda: _accepts(web_port), "the web workspace", [run])
    with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/login", timeout=10) as page:
        assert page.status == 200 and b"Log in to Lanedesk" in page.read()
    children = _children(run.pid)
    assert len(children) == 4  # worker, beat, smtpd, web (gunicorn)
    assert _stop(run, signal.SIGINT) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in children), "a process outlived `lanedesk run`"
    assert "stopped" in (tmp_path / "run-0.log").read_text()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _ticket_with_subject(desk: Desk, subject: str) -> bool:
    with desk.unit_of_work(readonly=True) as session:
        return session.scalar(select(Ticket.id).where(Ticket.subject == subject)) is not None


# -- a burst of mail does not hold back the timers ------------------------------------------------
BURST = 150
StartFn = Callable[..., subprocess.Popen[bytes]]


def _burst_then_a_due_timer_fires_early(desk: Desk, broker_url: str, tmp_path: Path, start: StartFn) -> None:
    """BURST stored mails queued first, then one timer scan; one worker started after both.

    Mail has its own queue, which the worker takes from in turn with the timers' queue, so the
    overdue reminder fires while most of the burst still waits (on one FIFO queue it came last).
    """
    ticket_id = _overdue_ticket(desk)
    env = _env(desk, broker_url, tmp_path)
    settings = dataclasses.replace(desk.settings, broker_url=broker_url)
    app = create_celery(settings)
    try:
        with desk.unit_of_work() as session:
            ids = [store_raw(session, _mail(i), Envelope("smtp"), now=desk.clock()).id for i in range(BURST)]
        app.loader.import_default_modules()
        publish(app, "lanedesk.process_mail", ids)
        app.tasks["lanedesk.scan_due_timers"].apply_async()  # what beat sends; queued after the burst
    finally:
        app.close()
    worker = start("worker", "--concurrency", "1", env=env)
    _wait_for(lambda: _fired(desk, ticket_id) >= 1, "timer firing", [worker])
    _wait_for(lambda: _mails_left(desk) == 0, "the burst processed", [worker])
    assert _stop(worker) == 0
    with desk.unit_of_work(readonly=True) as session:
        fired_at = session.scalar(
            select(func.min(AuditEvent.id)).where(
                AuditEvent.ticket_id == ticket_id, AuditEvent.action == "timer_fired"
            )
        )
        mails_before = session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "mail_received", AuditEvent.id < fired_at)
        )
    assert mails_before is not None and mails_before < BURST // 2, f"{mails_before} of {BURST} mails first"


def _mail(i: int) -> bytes:
    return (
        f"From: Customer {i} <customer{i}@burst.example>\r\nTo: support@desk.example\r\n"
        f"Subject: Burst {i}\r\nMessage-ID: <burst-{i}@burst.example>\r\n\r\nMessage {i} of the burst.\r\n"
    ).encode()


def _mails_left(desk: Desk) -> int:
    with desk.unit_of_work(readonly=True) as session:
        query = select(func.count()).select_from(MailMessage).where(MailMessage.state == "stored")
        return session.scalar(query) or 0


@pytest.mark.skipif(not RABBITMQ_URL, reason="set LANEDESK_TEST_BROKER_URL (amqp://...) to run on RabbitMQ")
def test_on_rabbitmq_a_burst_of_mail_does_not_hold_back_an_overdue_timer(
    desk: Desk, tmp_path: Path, processes: StartFn
) -> None:
    with Connection(RABBITMQ_URL, connect_timeout=5) as connection:  # messages left by earlier runs
        for name in QUEUES:
            connection.channel().queue_delete(name)
    _burst_then_a_due_timer_fires_early(desk, RABBITMQ_URL, tmp_path, processes)


def test_on_the_embedded_broker_a_burst_of_mail_does_not_hold_back_an_overdue_timer(
    desk: Desk, tmp_path: Path, processes: StartFn
) -> None:
    _burst_then_a_due_timer_fires_early(desk, f"sqla+sqlite:///{tmp_path / 'broker.db'}", tmp_path, processes)
