"""`lanedesk smtpd`: SMTP and LMTP ingress over real sockets on loopback, into the real database."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import queue
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest
from celery import Celery
from click.testing import CliRunner
from sqlalchemy import select

from tasks.celery_app import create_celery
from tasks.jobs import ingest
from tasks.smtpd import IngestHandler, base_address, main, serve
from workflows.app import Desk, build_desk
from workflows.inbound import process_or_quarantine
from workflows.models import MailMessage

REPO = Path(__file__).resolve().parents[2]
MAX_SIZE = 20_000
DEADLINE_SECONDS = 30.0
SENDER = "jana@customer.example"


BODY = "The printer is on fire.\r\n.A line that starts with a dot.\r\n"


def message(n: int = 1, *, body: str = BODY) -> bytes:
    head = f"From: Jana <{SENDER}>\r\nTo: support@desk.test\r\nSubject: Printer {n}\r\n"
    return f"{head}Message-ID: <p{n}@customer.example>\r\n\r\n{body}".encode()


@pytest.fixture
def app(desk: Desk, tmp_path: Path) -> Iterator[Celery]:
    """Queues processing on an embedded broker of this test's own; no worker consumes it."""
    built = create_celery(dataclasses.replace(desk.settings, broker_url=f"sqla+sqlite:///{tmp_path}/b.db"))
    yield built
    built.close()


def _stored(desk: Desk) -> list[MailMessage]:
    with desk.unit_of_work(readonly=True) as session:
        return list(session.scalars(select(MailMessage).order_by(MailMessage.id)))


@contextmanager
def listening(handler: IngestHandler, *, lmtp: bool = False, max_size: int = MAX_SIZE) -> Iterator[int]:
    """Run :func:`serve` on its own loop in a thread, on a free port; stop it as SIGTERM would."""
    started: queue.Queue[tuple[int, asyncio.AbstractEventLoop, asyncio.Event] | BaseException] = queue.Queue()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        await serve(
            handler,
            host="127.0.0.1",
            port=0,
            lmtp=lmtp,
            max_size=max_size,
            hostname="desk.test",
            stop=stop,
            ready=lambda port: started.put((port, loop, stop)),
        )

    def thread_main() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:
            started.put(exc)
            raise

    thread = threading.Thread(target=thread_main, name="smtpd")
    thread.start()
    first = started.get(timeout=DEADLINE_SECONDS)
    if isinstance(first, BaseException):
        raise first
    port, loop, stop = first
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=DEADLINE_SECONDS)
        assert not thread.is_alive(), "the listener did not stop"
        assert started.empty(), started.get()  # no exception while stopping


def deliver(
    client: smtplib.SMTP, raw: bytes, recipients: list[str], *, replies: int = 1
) -> list[tuple[int, bytes]]:
    """MAIL, RCPT, DATA; the DATA replies (LMTP: one per accepted recipient), then none left over."""
    assert client.mail(SENDER)[0] == 250
    for rcpt in recipients:
        client.rcpt(rcpt)
    answers = [client.data(raw)] + [client.getreply() for _ in range(replies - 1)]
    assert client.noop() == (250, b"OK")  # an unread extra reply would have been read here
    return answers


def test_smtp_stores_a_message_once_and_answers_with_its_id(desk: Desk, app: Celery) -> None:
    handler = IngestHandler(partial(ingest, app, desk), source="smtp")
    recipients = ["support@desk.test", "Sales@Desk.test"]
    with listening(handler) as port, smtplib.SMTP("127.0.0.1", port, timeout=DEADLINE_SECONDS) as client:
        client.ehlo("mx.customer.example")
        assert client.esmtp_features["size"] == str(MAX_SIZE)
        first = deliver(client, message(), recipients)
        again = deliver(client, message(), recipients)
    [row] = _stored(desk)
    assert first == [(250, f"OK stored as mail {row.id}".encode())]
    assert again == [(250, f"OK stored as mail {row.id} (already had it)".encode())]
    assert row.raw == message()  # CRLF kept, the dot-stuffing smtplib added taken out again
    assert (row.source, row.envelope_from, row.state) == ("smtp", SENDER, "stored")
    assert (row.envelope_to, row.mailbox) == (["support@desk.test", "sales@desk.test"], "support@desk.test")


def test_lmtp_answers_once_per_recipient_and_stores_once(desk: Desk, app: Celery) -> None:
    handler = IngestHandler(partial(ingest, app, desk), source="lmtp")
    with listening(handler, lmtp=True) as port, smtplib.LMTP("127.0.0.1", port, timeout=10) as client:
        assert client.ehlo("mx.desk.test")[0] == 250  # LHLO
        assert client.esmtp_features["size"] == str(MAX_SIZE)
        answers = deliver(client, message(), ["support@desk.test", "billing@desk.test"], replies=2)
    [row] = _stored(desk)
    assert answers == [(250, f"OK stored as mail {row.id}".encode())] * 2
    assert (row.source, row.envelope_to) == ("lmtp", ["support@desk.test", "billing@desk.test"])


def test_a_message_over_the_size_limit_gets_552_and_is_not_stored(desk: Desk, app: Celery) -> None:
    handler = IngestHandler(partial(ingest, app, desk), source="smtp")
    big = message(body=("x" * 70 + "\r\n") * (MAX_SIZE // 70))
    with listening(handler) as port, smtplib.SMTP("127.0.0.1", port, timeout=DEADLINE_SECONDS) as client:
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:  # smtplib declares SIZE=
            client.sendmail(SENDER, ["support@desk.test"], big)
        assert refused.value.smtp_code == 552
        client.rset()
        answers = deliver(client, big, ["support@desk.test"])  # no SIZE: refused at the end of DATA
        assert answers == [(552, b"Error: Too much mail data")]
        assert deliver(client, message(), ["support@desk.test"])[0][0] == 250  # the session goes on
    assert len(_stored(desk)) == 1


def test_lmtp_refuses_an_oversized_message_for_every_recipient(desk: Desk, app: Celery) -> None:
    handler = IngestHandler(partial(ingest, app, desk), source="lmtp")
    big = message(body=("x" * 70 + "\r\n") * (MAX_SIZE // 70))
    with listening(handler, lmtp=True) as port, smtplib.LMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("mx.desk.test")
        answers = deliver(client, big, ["support@desk.test", "billing@desk.test"], replies=2)
    assert answers == [(552, b"Error: Too much mail data")] * 2
    assert _stored(desk) == []


@pytest.mark.parametrize("lmtp", [False, True], ids=["smtp", "lmtp"])
def test_a_message_that_cannot_be_stored_gets_451_and_is_taken_later(
    desk: Desk, app: Celery, lmtp: bool
) -> None:
    url = "postgresql+psycopg://nobody@127.0.0.1:1/nowhere?connect_timeout=2"
    down = build_desk(dataclasses.replace(desk.settings, database_url=url))
    handler = IngestHandler(partial(ingest, app, down), source="lmtp" if lmtp else "smtp")
    recipients = ["support@desk.test", "billing@desk.test"]
    replies = 2 if lmtp else 1
    connect = smtplib.LMTP if lmtp else smtplib.SMTP
    with (
        listening(handler, lmtp=lmtp) as port,
        connect("127.0.0.1", port, timeout=DEADLINE_SECONDS) as client,
    ):
        client.ehlo("mx.customer.example")
        refused = deliver(client, message(), recipients, replies=replies)
        assert _stored(desk) == []
        handler.store = partial(ingest, app, desk)  # the database is back; the sender retries
        retried = deliver(client, message(), recipients, replies=replies)
    down.engine.dispose()
    assert refused == [(451, b"4.3.0 temporary failure, try again later")] * replies
    [row] = _stored(desk)
    assert retried == [(250, f"OK stored as mail {row.id}".encode())] * replies


def test_only_the_desk_mailboxes_and_their_plus_addresses_are_accepted(desk: Desk, app: Celery) -> None:
    handler = IngestHandler(partial(ingest, app, desk), source="smtp", mailboxes=["Support@Desk.test"])
    with listening(handler) as port, smtplib.SMTP("127.0.0.1", port, timeout=DEADLINE_SECONDS) as client:
        client.ehlo("mx.customer.example")
        assert client.mail("")[0] == 250  # MAIL FROM:<>, as bounces come
        assert client.rcpt("sales@desk.test") == (550, b"5.1.1 no such mailbox")
        assert client.rcpt("support@elsewhere.test") == (550, b"5.1.1 no such mailbox")
        assert client.rcpt("support+ld1042-k9f3@desk.test")[0] == 250  # a reply token
        assert client.data(message())[0] == 250
    [row] = _stored(desk)
    assert (row.envelope_to, row.mailbox) == (["support+ld1042-k9f3@desk.test"], "support@desk.test")
    assert row.envelope_from == ""  # the null sender, as the mailgate records it


def test_base_address_drops_the_plus_token_and_case() -> None:
    assert base_address(" Support+LD1042-x@Desk.Test ") == "support@desk.test"
    assert base_address("postmaster") == "postmaster"


def test_a_stored_message_can_be_processed_into_a_ticket(desk: Desk, app: Celery) -> None:
    handler = IngestHandler(partial(ingest, app, desk), source="smtp")
    with listening(handler) as port, smtplib.SMTP("127.0.0.1", port, timeout=DEADLINE_SECONDS) as client:
        client.ehlo("mx.customer.example")
        deliver(client, message(), ["support@desk.test"])
    [row] = _stored(desk)
    outcome = process_or_quarantine(desk.sessions, desk.settings, row.id, now=desk.clock())
    assert outcome.state == "processed", outcome.decision
    assert outcome.ticket_id is not None


# -- the command --------------------------------------------------------------------------------


def _wait_for_line(log: Path, pattern: str, process: subprocess.Popen[bytes]) -> re.Match[str]:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not (found := re.search(pattern, log.read_text())):
        assert process.poll() is None, f"smtpd exited with {process.returncode}: {log.read_text()}"
        assert time.monotonic() < deadline, f"no {pattern!r} within {DEADLINE_SECONDS:g} s"
        time.sleep(0.1)  # polling another process's output
    return found


@pytest.fixture
def smtpd(desk: Desk, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANEDESK_")}
    env.update(
        LANEDESK_DATABASE_URL=desk.settings.database_url,
        LANEDESK_DATA_DIR=str(tmp_path),
        LANEDESK_BROKER_URL=f"sqla+sqlite:///{tmp_path / 'broker.db'}",
        LANEDESK_MAILBOXES="support@desk.test",
    )

    def start(*args: str) -> subprocess.Popen[bytes]:
        # `tasks.cli` imports this module to register the command; import it here directly
        command = [sys.executable, "-c", "from tasks.smtpd import main; main()", "smtpd", *args]
        with (tmp_path / "smtpd.log").open("wb") as log:
            process = subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_lanedesk_smtpd_serves_until_told_to_stop(
    desk: Desk, tmp_path: Path, smtpd: Callable[..., subprocess.Popen[bytes]], sig: int
) -> None:
    process = smtpd("--port", "0")
    log = tmp_path / "smtpd.log"
    banner = _wait_for_line(log, r"listening for SMTP on 127\.0\.0\.1:(\d+) \((.*)\)", process)
    port = int(banner[1])
    assert banner[2] == f"mail for support@desk.test, up to {2 * desk.settings.max_upload_bytes} bytes"
    with smtplib.SMTP("127.0.0.1", port, timeout=DEADLINE_SECONDS) as idle:
        idle.ehlo("idle.example")  # an open connection must not hold up the stop
        with smtplib.SMTP("127.0.0.1", port, timeout=DEADLINE_SECONDS) as client:
            assert client.sendmail(SENDER, ["support@desk.test"], message()) == {}
        process.send_signal(sig)
        assert process.wait(timeout=DEADLINE_SECONDS) == 0, log.read_text()
        with pytest.raises(smtplib.SMTPServerDisconnected):
            idle.noop()
    assert log.read_text().rstrip().endswith("stopped")
    [row] = _stored(desk)
    assert (row.source, row.envelope_to) == ("smtp", ["support@desk.test"])


def test_lanedesk_smtpd_says_when_it_cannot_listen(desk: Desk) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["smtpd", "--port", str(port)], obj=desk)
    assert result.exit_code == 1
    assert f"error: cannot listen on 127.0.0.1:{port}: " in result.output
