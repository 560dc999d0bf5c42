"""The Celery app's contract: JSON only, declared retries, one schedule, thin id-only tasks."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy
from celery import Celery
from click.testing import CliRunner
from sqlalchemy import func, select

from tasks import jobs
from tasks.celery_app import MAIL_IN, MAIL_OUT, QUEUE, create_celery
from tasks.schedule import beat_schedule
from workflows.app import Desk
from workflows.inbound import Envelope, store_raw
from workflows.models import AuditEvent, OutboxMessage, WorkflowInstance
from workflows.settings import Settings

from ..workflows.helpers import new_ticket


@pytest.fixture
def rabbit_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, broker_url="amqp://guest:guest@127.0.0.1:5672//")


def test_messages_are_json_only_and_the_queue_is_durable(rabbit_settings: Settings) -> None:
    app = create_celery(rabbit_settings)
    assert (app.conf.task_serializer, app.conf.result_serializer, app.conf.accept_content) == (
        "json",
        "json",
        ["json"],
    )
    assert [(q.name, q.durable, q.auto_delete) for q in app.conf.task_queues] == [
        (QUEUE, True, False),
        (MAIL_IN, True, False),
        (MAIL_OUT, True, False),
    ]
    assert app.conf.task_default_delivery_mode == "persistent"
    assert app.conf.task_ignore_result is True


def test_mail_in_and_mail_out_have_their_own_queues_and_timers_the_default_one(
    rabbit_settings: Settings,
) -> None:
    # A burst of mail must not queue in front of the timers (a worker takes from each in turn).
    app = create_celery(rabbit_settings)
    app.loader.import_default_modules()
    queue_of = {
        name: app.amqp.router.route({}, name)["queue"].name
        for name in app.tasks
        if name.startswith("lanedesk.")
    }
    assert queue_of["lanedesk.process_mail"] == MAIL_IN
    assert queue_of["lanedesk.deliver_mail"] == MAIL_OUT
    assert {
        queue_of[t] for t in ("lanedesk.wake_instance", "lanedesk.scan_due_timers", "lanedesk.sweep_mail")
    } == {QUEUE}


def test_tasks_declare_how_they_are_acknowledged_and_retried(rabbit_settings: Settings) -> None:
    app = create_celery(rabbit_settings)
    app.loader.import_default_modules()
    wake = app.tasks["lanedesk.wake_instance"]
    scan = app.tasks["lanedesk.scan_due_timers"]
    assert wake.acks_late is True  # idempotent: a redelivery finds nothing due
    assert scan.acks_late is False  # the next scan replaces a lost one
    assert sqlalchemy.exc.OperationalError in wake.autoretry_for and wake.max_retries == 8


def test_beat_scans_every_few_seconds_and_drops_scans_it_could_not_start(rabbit_settings: Settings) -> None:
    schedule = beat_schedule(rabbit_settings)
    assert list(schedule) == ["scan-due-timers", "sweep-outbox", "sweep-mail"]  # no broker upkeep on RabbitMQ
    for frequent in ("scan-due-timers", "sweep-outbox"):  # outgoing mail waits no longer than timers
        assert schedule[frequent]["schedule"] == rabbit_settings.timer_scan_seconds
        assert schedule[frequent]["options"]["expires"] == rabbit_settings.timer_scan_seconds


def test_the_embedded_broker_gets_its_delivered_messages_purged(settings: Settings) -> None:
    assert settings.embedded_broker
    assert set(beat_schedule(settings)) == {"scan-due-timers", "sweep-outbox", "sweep-mail", "purge-broker"}
    app = create_celery(settings)
    assert app.conf.worker_enable_remote_control is False  # the SQL transport has no fanout


def test_purging_the_embedded_broker_keeps_undelivered_messages(tmp_path: Path) -> None:
    url = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    assert jobs.purge_delivered(url) == 0  # no table yet: nothing to do
    engine = sqlalchemy.create_engine(url.removeprefix("sqla+"))
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("CREATE TABLE kombu_message (id INTEGER PRIMARY KEY, visible BOOLEAN)"))
        conn.execute(sqlalchemy.text("INSERT INTO kombu_message (visible) VALUES (0), (0), (1)"))
    assert jobs.purge_delivered(url) == 2
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("SELECT count(*) FROM kombu_message")).scalar() == 1
    engine.dispose()


def _eager(settings: Settings, now: datetime) -> Celery:
    app = create_celery(dataclasses.replace(settings, broker_url="memory://"))
    app.conf.task_always_eager = True
    app.loader.import_default_modules()
    jobs._desks.clear()
    return app


def test_a_scan_hands_each_due_instance_to_one_wake(
    desk: Desk, now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    with desk.unit_of_work() as session:
        ticket_ids = [new_ticket(session, desk.settings, now, subject=f"T{i}").id for i in range(3)]
    app = _eager(desk.settings, now)
    later = now + timedelta(hours=9)  # P3 first response (8 h) is overdue on all three
    monkeypatch.setattr(jobs, "build_desk", lambda s: Desk(s, desk.engine, desk.sessions, lambda: later))
    assert app.tasks["lanedesk.scan_due_timers"].apply().get() == 3
    assert app.tasks["lanedesk.scan_due_timers"].apply().get() == 0
    with desk.unit_of_work(readonly=True) as session:
        fired = session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "timer_fired")
        )
        assert fired == 3
        rows = session.scalars(
            select(WorkflowInstance).where(WorkflowInstance.ticket_id.in_(ticket_ids))
        ).all()
        assert all(r.wake_claimed_until is None for r in rows)


def test_a_wake_of_an_instance_that_is_not_due_does_nothing(
    desk: Desk, now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    with desk.unit_of_work() as session:
        ticket_id = new_ticket(session, desk.settings, now).id
        instance_id = session.scalar(
            select(WorkflowInstance.id).where(WorkflowInstance.ticket_id == ticket_id)
        )
    app = _eager(desk.settings, now)
    monkeypatch.setattr(jobs, "build_desk", lambda s: Desk(s, desk.engine, desk.sessions, lambda: now))
    assert app.tasks["lanedesk.wake_instance"].apply((instance_id,)).get() is False
    with desk.unit_of_work(readonly=True) as session:  # a stray or duplicate wake changes nothing
        assert (
            session.scalar(
                select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "timer_fired")
            )
            == 0
        )


def test_processing_a_mail_hands_its_acknowledgement_to_delivery_without_a_dispatch_scan(
    desk: Desk, now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _eager(desk.settings, now)
    monkeypatch.setattr(jobs, "build_desk", lambda s: Desk(s, desk.engine, desk.sessions, lambda: now))
    published: list[tuple[str, list[int]]] = []
    monkeypatch.setattr(jobs, "publish", lambda _app, name, ids: published.append((name, list(ids))))
    monkeypatch.setattr(jobs, "dispatch_outbox", lambda *a, **k: pytest.fail("no dispatch transaction"))
    raw = b"From: Jana <jana@customer.example>\r\nTo: support@desk.example\r\nSubject: VPN down\r\n"
    raw += b"Message-ID: <vpn@customer.example>\r\n\r\nSince this morning.\r\n"
    broken = b"Subject: no sender at all\r\n\r\nwho am I?\r\n"
    with desk.unit_of_work() as session:
        good = store_raw(session, raw, Envelope("smtp", recipients=("support@desk.example",)), now=now).id
        bad = store_raw(session, broken, Envelope("smtp", recipients=("support@desk.example",)), now=now).id

    assert app.tasks["lanedesk.process_mail"].apply((good,)).get() == "processed"
    assert app.tasks["lanedesk.process_mail"].apply((bad,)).get() == "quarantined"

    with desk.unit_of_work(readonly=True) as session:
        ack = session.scalars(select(OutboxMessage).where(OutboxMessage.template == "acknowledgement")).one()
        assert ack.state == "queued"
    assert published == [("lanedesk.deliver_mail", [ack.id]), ("lanedesk.deliver_mail", [])]


def test_lanedesk_worker_takes_only_the_queues_it_is_told_and_refuses_unknown_ones(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks import cli  # registers `lanedesk worker`

    argv: list[list[str]] = []
    monkeypatch.setattr(Celery, "worker_main", lambda self, args: argv.append(list(args)))

    ran = CliRunner().invoke(cli.main, ["worker", "-Q", f"{MAIL_IN}, {MAIL_OUT}"], obj=desk)
    refused = CliRunner().invoke(cli.main, ["worker", "-Q", "lanedesk,mail"], obj=desk)
    everything = CliRunner().invoke(cli.main, ["worker"], obj=desk)

    assert ran.exit_code == 0, ran.output
    assert f"--queues={MAIL_IN},{MAIL_OUT}" in argv[0]
    assert refused.exit_code == 2
    assert (
        "no queue mail; the desk's queues are lanedesk, lanedesk.mail-in, lanedesk.mail-out" in refused.output
    )
    assert everything.exit_code == 0 and not any(a.startswith("--queues") for a in argv[1])
