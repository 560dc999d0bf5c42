"""Outgoing mail through real Celery processes: the acknowledgement of a new ticket reaches the
customer exactly once, by SMTP (worker + beat's outbox sweep, to an aiosmtpd sink in this
process) or, with no SMTP server configured, as ``<data_dir>/outbox/<8-digit id>.eml``
(worker + a dispatch from this process, as a step's own dispatch does).

The processes, the environment and the polling with a deadline are test_worker_smoke's.
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection
from sqlalchemy import select

from tasks.celery_app import QUEUE, create_celery
from tasks.jobs import dispatch_outbox
from workflows.app import Desk
from workflows.models import OutboxMessage
from workflows.tickets import open_ticket

from ..mailsink import Sink, smtp_sink
from . import test_worker_smoke as smoke

Start = Callable[..., subprocess.Popen[bytes]]
#: test_worker_smoke's fixture: start `python -m tasks ...`; killed and their logs printed after.
processes = smoke.processes


def _open(desk: Desk, requester: str) -> int:
    """Open a ticket from ``requester``; the id of the acknowledgement its step queued."""
    with desk.unit_of_work() as session:
        ticket = open_ticket(
            session,
            desk.settings,
            requester=requester,
            subject="Printer prints blank pages",
            body="Since this morning the printer on floor 2 prints only blank pages.",
            now=datetime.now(UTC),  # the workers' clock is the real one: due at once
        )
        [row] = session.scalars(select(OutboxMessage).where(OutboxMessage.ticket_id == ticket.id)).all()
        assert (row.template, row.state) == ("acknowledgement", "queued")
        return row.id


def _row(desk: Desk, outbox_id: int) -> OutboxMessage:
    with desk.unit_of_work(readonly=True) as session:
        return session.get_one(OutboxMessage, outbox_id)


def _delivered(desk: Desk, outbox_id: int) -> bool:
    """Sent and the server's answer to end-of-data recorded (the last step of a delivery)."""
    row = _row(desk, outbox_id)
    assert row.state in ("queued", "sending", "sent"), (row.state, row.reason, row.last_error)
    return row.state == "sent" and row.server_reply is not None


def _worker_and_sweep_deliver_each_acknowledgement_once(
    desk: Desk, broker_url: str, tmp_path: Path, start: Start, sink: Sink
) -> None:
    first = _open(desk, "jana@customer.example")
    env = smoke._env(desk, broker_url, tmp_path)
    env["LANEDESK_SMTP_URL"] = sink.url()
    running = [start("worker", env=env), start("beat", env=env)]
    smoke._wait_for(lambda: _delivered(desk, first), "acknowledgement delivered", running)
    # A second ticket's acknowledgement goes out through a later sweep, which finds the first
    # row delivered: it must not hand it out again.
    second = _open(desk, "erik@customer.example")
    smoke._wait_for(lambda: _delivered(desk, second), "second acknowledgement delivered", running)
    assert [smoke._stop(p) for p in running] == [0, 0]

    rows = [_row(desk, first), _row(desk, second)]
    assert [(r.state, r.attempts, r.last_error) for r in rows] == [("sent", 1, None)] * 2
    assert [r.server_reply for r in rows] == ["250 2.0.0 Ok: queued"] * 2  # the sink's own answer
    assert len(sink.received) == 2, [r.message["Message-ID"] for r in sink.received]
    by_id = {r.message["Message-ID"]: r for r in sink.received}
    assert set(by_id) == {r.message_id for r in rows}  # one copy of each, none of anything else
    for row in rows:
        got = by_id[row.message_id]
        assert got.raw.replace(b"\r\n", b"\n") == (row.raw or b"").replace(b"\r\n", b"\n")
        assert got.rcpt_tos == [row.recipient] and got.mail_from == row.sender
        assert got.message["Auto-Submitted"] == "auto-replied"
        assert got.message["To"].addresses[0].addr_spec == row.recipient


@pytest.mark.skipif(
    not smoke.RABBITMQ_URL, reason="set LANEDESK_TEST_BROKER_URL (amqp://...) to run on RabbitMQ"
)
def test_a_real_worker_on_rabbitmq_delivers_the_acknowledgement_once_by_smtp(
    desk: Desk, tmp_path: Path, processes: Start
) -> None:
    with Connection(smoke.RABBITMQ_URL, connect_timeout=5) as connection:  # messages left by earlier runs
        channel: Any = connection.channel()
        channel.queue_delete(QUEUE)
    with smtp_sink() as sink:
        _worker_and_sweep_deliver_each_acknowledgement_once(
            desk, smoke.RABBITMQ_URL, tmp_path, processes, sink
        )


def test_a_real_worker_on_the_embedded_broker_delivers_the_acknowledgement_once_by_smtp(
    desk: Desk, tmp_path: Path, processes: Start
) -> None:
    broker = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    with smtp_sink() as sink:
        _worker_and_sweep_deliver_each_acknowledgement_once(desk, broker, tmp_path, processes, sink)


def test_without_smtp_a_real_worker_keeps_the_acknowledgement_as_an_eml_file(
    desk: Desk, tmp_path: Path, processes: Start
) -> None:
    outbox_id = _open(desk, "jana@customer.example")
    broker = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    app = create_celery(dataclasses.replace(desk.settings, broker_url=broker))
    try:
        with app.connection_for_write() as conn:  # the queue exists before the worker looks for it
            for queue in app.conf.task_queues:
                queue.bind(conn.default_channel).declare()
        assert dispatch_outbox(app, desk) == 1  # what a step's task does right after its commit
    finally:
        app.close()
    env = smoke._env(desk, broker, tmp_path)  # no LANEDESK_SMTP_URL: the worker's data_dir/outbox
    worker = processes("worker", env=env)
    smoke._wait_for(lambda: _delivered(desk, outbox_id), "acknowledgement kept as a file", [worker])
    assert smoke._stop(worker) == 0

    row = _row(desk, outbox_id)
    kept = tmp_path / "outbox" / f"{outbox_id:08d}.eml"
    assert (row.state, row.attempts, row.server_reply) == ("sent", 1, f"250 kept as {kept}")
    assert sorted(p.name for p in kept.parent.iterdir()) == [kept.name]  # no .partial left behind
    assert kept.read_bytes() == row.raw
    assert f"Message-ID: {row.message_id}".encode() in kept.read_bytes()
