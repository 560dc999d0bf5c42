"""Outgoing mail delivered for real: the outbox state machine against an SMTP sink on loopback.

What a customer would notice is what is asserted: the headers that make their reply thread,
exactly one copy of every mail whatever fails (4xx, 5xx, a server that is down, a worker that
crashes or stalls mid-transfer), and an address that refuses mail marked as bouncing. Time is
an explicit clock object; nothing sleeps.
"""

from __future__ import annotations

import dataclasses
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import pytest
import trustme
from sqlalchemy import func, select

from tests.mailsink import Sink, free_port, smtp_sink
from workflows import outbox
from workflows.app import Desk
from workflows.inbound import Envelope, Outcome, process_mail, store_raw
from workflows.mailparse import LOOP_HEADER, REPLY_MARKER
from workflows.models import (
    AuditEvent,
    ConversationEntry,
    Customer,
    OutboxMessage,
    PendingMessage,
    Ticket,
    WorkflowInstance,
)
from workflows.outbox import SEND_LEASE, Delivery, Transport, due_for_delivery
from workflows.outmail import compose
from workflows.secrets import ticket_from_message_id, ticket_from_token
from workflows.settings import Settings, parse_smtp_url
from workflows.tickets import open_ticket
from workflows.transports import DirectoryTransport, SmtpTransport

REPO = Path(__file__).resolve().parents[2]
CUSTOMER = "jana@customer.example"
WAIT = 30  # seconds a test waits for another thread before calling it hung


# -- helpers -----------------------------------------------------------------------------------
@dataclasses.dataclass
class Clock:
    """The one clock every delivery and sweep in a test reads; tests move it by hand."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        self.now += delta
        return self.now


class Counting:
    """Wraps a transport and counts the times delivery reached it (a connection attempt each)."""

    def __init__(self, inner: Transport):
        self.inner, self.calls = inner, 0

    def send(self, delivery: Delivery, commit_sent: Callable[[], bool]) -> str:
        self.calls += 1
        return self.inner.send(delivery, commit_sent)


class Stalling:
    """A transport that stops just before ``commit_sent`` (the message transferred, end-of-data
    not sent) until released: a worker stuck on a slow database or a paused VM."""

    def __init__(self, inner: Transport):
        self.inner = inner
        self.transferred, self.release = threading.Event(), threading.Event()
        self.commit_results: list[bool] = []

    def send(self, delivery: Delivery, commit_sent: Callable[[], bool]) -> str:
        def stalled_commit() -> bool:
            self.transferred.set()
            assert self.release.wait(WAIT), "the test never released the stalled worker"
            result = commit_sent()
            self.commit_results.append(result)
            return result

        return self.inner.send(delivery, stalled_commit)


class Worker:
    """:func:`deliver` in a thread of its own, through a :class:`Stalling` transport."""

    def __init__(self, desk: Desk, transport: Transport, outbox_id: int, clock: Clock):
        self.transport = Stalling(transport)
        self.results: list[str] = []
        self.thread = threading.Thread(
            target=lambda: self.results.append(deliver(desk, self.transport, outbox_id, clock)), daemon=True
        )
        self.thread.start()

    def wait_transferred(self) -> None:
        assert self.transport.transferred.wait(WAIT), "the worker never got to commit_sent"

    def release(self) -> None:
        self.transport.release.set()
        self.thread.join(WAIT)

    def finish(self) -> str:
        """Let it go on; what deliver() returned."""
        self.release()
        assert not self.thread.is_alive() and len(self.results) == 1, self.results
        return self.results[0]


def smtp(settings: Settings, url: str) -> SmtpTransport:
    return SmtpTransport(parse_smtp_url(url), local_hostname=settings.mail_domain)


def deliver(desk: Desk, transport: Transport, outbox_id: int, clock: Clock) -> str:
    return outbox.deliver(desk.sessions, desk.settings, transport, outbox_id, clock=clock, compose=compose)


def sweep(desk: Desk, now: datetime) -> list[int]:
    with desk.unit_of_work() as session:
        return due_for_delivery(session, now, recover=True)


def row_of(desk: Desk, outbox_id: int) -> OutboxMessage:
    with desk.unit_of_work(readonly=True) as session:
        return session.get_one(OutboxMessage, outbox_id)


def customer(desk: Desk, email: str = CUSTOMER) -> Customer:
    with desk.unit_of_work(readonly=True) as session:
        found = session.scalar(select(Customer).where(Customer.email == email))
        assert found is not None
        return found


def audit_count(desk: Desk, ticket_id: int | None, action: str) -> int:
    with desk.unit_of_work(readonly=True) as session:
        query = select(func.count()).where(AuditEvent.ticket_id == ticket_id, AuditEvent.action == action)
        return session.scalar(query) or 0


def acknowledgement(desk: Desk, ticket_id: int) -> int:
    """The id of the ticket's (queued) acknowledgement."""
    with desk.unit_of_work(readonly=True) as session:
        found = session.scalar(
            select(OutboxMessage).where(
                OutboxMessage.ticket_id == ticket_id, OutboxMessage.template == "acknowledgement"
            )
        )
        assert found is not None and found.state == "queued", found and (found.state, found.reason)
        return found.id


def opened_ticket(desk: Desk, now: datetime) -> tuple[int, int]:
    """Open a ticket through the bundled lifecycle: (ticket id, its acknowledgement's id)."""
    with desk.unit_of_work() as session:
        ticket = open_ticket(
            session,
            desk.settings,
            requester=CUSTOMER,
            subject="Cannot log in",
            body="The login page says my password is wrong.",
            now=now,
        )
        ticket_id = ticket.id
    return ticket_id, acknowledgement(desk, ticket_id)


def customer_mail(
    *, to: str, subject: str, body: str, message_id: str, now: datetime, **headers: str
) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Jana Novak <{CUSTOMER}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    msg["Date"] = format_datetime(now)
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return bytes(msg)


def receive(desk: Desk, raw: bytes, recipient: str, now: datetime) -> Outcome:
    """Mail arriving over SMTP: stored, committed, then processed (as the workers do)."""
    with desk.unit_of_work() as session:
        stored = store_raw(session, raw, Envelope("smtp", CUSTOMER, (recipient,)), now=now)
    with desk.unit_of_work() as session:
        return process_mail(session, desk.settings, stored.id, now=now)


def quoted_reply(ours: EmailMessage, new_text: str, *, with_token: bool = True) -> dict[str, str]:
    """What a mail client makes of "Reply" on our message: its headers and the quoted body."""
    plain = ours.get_body(("plain",))
    assert plain is not None
    original = plain.get_content()
    quoted = "\n".join(f"> {line}" if line else ">" for line in original.splitlines())
    return {
        "to": str(ours["Reply-To"]) if with_token else str(ours["From"]),
        "subject": f"Re: {ours['Subject']}",
        "body": f"{new_text}\n\nOn {ours['Date']}, {ours['From']} wrote:\n{quoted}\n",
        "In_Reply_To": str(ours["Message-ID"]),
        "References": f"{ours.get('References', '')} {ours['Message-ID']}".strip(),
    }


def tls_sink(scheme: str, context: ssl.SSLContext) -> AbstractContextManager[Sink]:
    """A sink that wants user:secret, over SMTPS or after STARTTLS."""
    if scheme == "smtps":
        return smtp_sink(tls_context=context, credentials=("user", "secret"))
    return smtp_sink(starttls_context=context, credentials=("user", "secret"))


@pytest.fixture
def clock(now: datetime) -> Clock:
    return Clock(now)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
def cafile(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


# -- 1. headers, and the customer's reply coming back -------------------------------------------
def test_the_acknowledgement_carries_threading_headers_and_the_reply_comes_back_to_the_ticket(
    desk: Desk, settings: Settings, clock: Clock
) -> None:
    support = f"support@{settings.mail_domain}"
    first = customer_mail(
        to=support,
        subject="VPN drops every hour",
        body="Since Monday the VPN drops every hour.",
        message_id="<m1@customer.example>",
        now=clock.now,
    )
    opened = receive(desk, first, support, clock.now)
    assert opened.state == "processed" and opened.ticket_id is not None
    with desk.unit_of_work(readonly=True) as session:
        number = session.get_one(Ticket, opened.ticket_id).number
    ack = acknowledgement(desk, opened.ticket_id)

    with smtp_sink() as sink:
        assert deliver(desk, smtp(settings, sink.url()), ack, clock) == "sent"
    [received] = sink.received
    row = row_of(desk, ack)
    assert (received.mail_from, received.rcpt_tos) == (row.sender, [CUSTOMER])
    msg = received.message
    assert msg["From"].addresses[0].addr_spec == support
    assert msg["To"].addresses[0].addr_spec == CUSTOMER
    assert f"[{settings.ticket_prefix}-{number}]" in msg["Subject"]
    assert msg["Message-ID"] == row.message_id and msg["Message-ID"].endswith(f"@{settings.mail_domain}>")
    assert ticket_from_message_id(settings, [msg["Message-ID"]]) == number
    assert msg["In-Reply-To"] == "<m1@customer.example>"
    assert "<m1@customer.example>" in msg["References"].split()
    reply_to = msg["Reply-To"].addresses[0].addr_spec
    assert ticket_from_token(settings, [reply_to]) == number
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert msg[LOOP_HEADER] == settings.mail_domain
    assert msg.get_content_type() == "multipart/alternative"
    plain, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert plain is not None and html is not None
    assert REPLY_MARKER in plain.get_content()

    # Jana presses "Reply": her client writes to the Reply-To and quotes our text below hers.
    clock.advance(timedelta(hours=1))
    reply = quoted_reply(msg, "It still drops, also on the office network.")
    raw = customer_mail(message_id="<m2@customer.example>", now=clock.now, **reply)
    outcome = receive(desk, raw, reply_to, clock.now)
    assert (outcome.state, outcome.ticket_id) == ("processed", opened.ticket_id)
    assert "reply token" in outcome.decision
    with desk.unit_of_work(readonly=True) as session:
        latest = session.scalars(
            select(ConversationEntry)
            .where(ConversationEntry.ticket_id == opened.ticket_id)
            .order_by(ConversationEntry.id.desc())
        ).first()
        assert latest is not None and latest.body.strip() == "It still drops, also on the office network."
        heard = session.scalars(
            select(PendingMessage.payload)
            .join(WorkflowInstance, WorkflowInstance.id == PendingMessage.instance_id)
            .where(WorkflowInstance.ticket_id == opened.ticket_id, PendingMessage.name == "customer_replied")
        ).all()
        assert heard == [{"entry_id": latest.id}]  # the workflow was told, about this entry
    assert audit_count(desk, opened.ticket_id, "customer_replied") == 1
    with desk.unit_of_work(readonly=True) as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 1  # no second ticket


def test_a_reply_with_only_in_reply_to_still_threads(desk: Desk, settings: Settings, clock: Clock) -> None:
    ticket_id, ack = opened_ticket(desk, clock.now)
    with smtp_sink() as sink:
        assert deliver(desk, smtp(settings, sink.url()), ack, clock) == "sent"
    ours = sink.received[0].message

    clock.advance(timedelta(hours=2))
    support = f"support@{settings.mail_domain}"  # no token in the address, no tag in the subject
    raw = customer_mail(
        to=support,
        subject="Re: your message",
        body="Here is the screenshot you did not ask for yet.",
        message_id="<m9@customer.example>",
        now=clock.now,
        In_Reply_To=str(ours["Message-ID"]),
    )
    outcome = receive(desk, raw, support, clock.now)
    assert (outcome.state, outcome.ticket_id) == ("processed", ticket_id)
    assert "In-Reply-To" in outcome.decision
    assert audit_count(desk, ticket_id, "customer_replied") == 1


# -- 2. temporary refusals ------------------------------------------------------------------------
def test_a_451_at_end_of_data_is_retried_after_a_back_off_and_delivered_once(
    desk: Desk, settings: Settings, clock: Clock
) -> None:
    created = clock.now
    _, ack = opened_ticket(desk, clock.now)
    with smtp_sink() as sink:
        sink.script("data", ["451 4.3.0 try later"] * 2)
        transport = Counting(smtp(settings, sink.url()))

        assert deliver(desk, transport, ack, clock) == "queued"
        row = row_of(desk, ack)
        assert row.next_attempt_at is not None and row.next_attempt_at > clock.now
        assert row.last_error is not None and "451" in row.last_error
        assert (row.attempts, row.sent_at) == (1, None)

        # Before the back-off is over nothing goes out: not by a direct call, not by the sweep.
        assert deliver(desk, transport, ack, clock) == "queued"
        assert sweep(desk, clock.now) == []
        assert (transport.calls, row_of(desk, ack).attempts) == (1, 1)

        for _ in range(2):
            due = row_of(desk, ack).next_attempt_at
            assert due is not None
            clock.now = due
            assert sweep(desk, clock.now) == [ack]
            outcome = deliver(desk, transport, ack, clock)
        assert outcome == "sent"
    row = row_of(desk, ack)
    assert (row.state, row.attempts, transport.calls) == ("sent", 3, 3)
    assert row.server_reply is not None and row.server_reply.startswith("250")
    assert row.last_error is None
    assert clock.now - created == timedelta(minutes=1 + 2)  # the back-off grew: 1 min, then 2
    assert len(sink.received) == 1
    assert sink.received[0].message["Message-ID"] == row.message_id


# -- 3. permanent refusals ------------------------------------------------------------------------
def test_a_550_at_rcpt_fails_for_good_and_marks_the_address_bouncing(
    desk: Desk, settings: Settings, clock: Clock
) -> None:
    ticket_id, ack = opened_ticket(desk, clock.now)
    with smtp_sink() as sink:
        sink.script("rcpt", ["550 5.1.1 <jana@customer.example>: user unknown"])
        transport = Counting(smtp(settings, sink.url()))
        assert deliver(desk, transport, ack, clock) == "failed"
        row = row_of(desk, ack)
        assert row.state == "failed" and row.reason is not None and "550" in row.reason
        assert "user unknown" in row.reason
        assert audit_count(desk, ticket_id, "mail_failed") == 1
        bounced = customer(desk)
        assert bounced.bounced_at == clock.now and bounced.bounce_reason is not None
        assert "550" in bounced.bounce_reason

        # Nothing tries again: not the next call, not the sweep, not days later.
        clock.advance(timedelta(days=1))
        assert deliver(desk, transport, ack, clock) == "failed"
        assert sweep(desk, clock.now) == []
        assert (transport.calls, row_of(desk, ack).state, sink.received) == (1, "failed", [])
    assert audit_count(desk, ticket_id, "mail_failed") == 1


def test_a_554_at_end_of_data_fails_without_marking_the_address(
    desk: Desk, settings: Settings, clock: Clock
) -> None:
    _, ack = opened_ticket(desk, clock.now)
    with smtp_sink() as sink:
        sink.script("data", ["554 5.7.1 message rejected as spam"])
        assert deliver(desk, smtp(settings, sink.url()), ack, clock) == "failed"
        assert sink.received == []
    row = row_of(desk, ack)
    assert row.state == "failed" and row.reason is not None and "554" in row.reason
    assert row.sent_at is None  # the "sent" committed before end-of-data was taken back
    assert customer(desk).bounced_at is None  # the message was refused, not the address


def test_a_connection_lost_after_end_of_data_is_never_sent_again(
    desk: Desk, settings: Settings, clock: Clock
) -> None:
    ticket_id, ack = opened_ticket(desk, clock.now)
    with smtp_sink() as sink:
        sink.script("data", ["drop"])  # the server keeps it, and the answer never arrives
        assert deliver(desk, smtp(settings, sink.url()), ack, clock) == "sent"
        clock.advance(timedelta(days=1))
        assert sweep(desk, clock.now) == []
        assert deliver(desk, smtp(settings, sink.url()), ack, clock) == "sent"
    assert len(sink.received) == 1
    row = row_of(desk, ack)
    assert row.state == "sent" and row.reason is not None and row.reason.startswith("unconfirmed")
    assert audit_count(desk, ticket_id, "mail_unconfirmed") == 1


# -- 4. a server that is down ----------------------------------------------------------------------
def test_a_server_that_is_down_gets_the_mail_once_it_is_back(
    desk: Desk, settings: Settings, clock: Clock
) -> None:
    _, ack = opened_ticket(desk, clock.now)
    port = free_port()  # nothing listens here yet
    transport = Counting(smtp(settings, f"smtp://127.0.0.1:{port}?timeout=5"))
    assert deliver(desk, transport, ack, clock) == "queued"
    row = row_of(desk, ack)
    assert row.last_error is not None and f"127.0.0.1:{port}" in row.last_error
    assert row.next_attempt_at == clock.now + timedelta(minutes=1)

    with smtp_sink(port=port) as sink:
        assert sweep(desk, clock.now) == []  # the back-off holds even though it is up now
        clock.advance(timedelta(minutes=1))
        assert sweep(desk, clock.now) == [ack]
        assert deliver(desk, transport, ack, clock) == "sent"
        assert deliver(desk, transport, ack, clock) == "sent"  # again: nothing more goes out
    assert len(sink.received) == 1
    assert (row_of(desk, ack).attempts, transport.calls) == (2, 2)
    assert customer(desk).bounced_at is None


def test_three_days_of_transient_failures_give_up(desk: Desk, settings: Settings, clock: Clock) -> None:
    created = clock.now
    ticket_id, ack = opened_ticket(desk, clock.now)
    transport = smtp(settings, f"smtp://127.0.0.1:{free_port()}?timeout=5")
    longest = timedelta(0)
    outcome = deliver(desk, transport, ack, clock)
    while outcome == "queued":
        due = row_of(desk, ack).next_attempt_at
        assert due is not None
        longest = max(longest, due - clock.now)
        clock.now = due
        assert sweep(desk, clock.now) == [ack]
        outcome = deliver(desk, transport, ack, clock)
    row = row_of(desk, ack)
    assert outcome == row.state == "failed"
    assert row.reason is not None and row.reason.startswith(f"gave up after {row.attempts} attempts")
    assert outbox.GIVE_UP_AFTER <= clock.now - created < outbox.GIVE_UP_AFTER + outbox.RETRY_DELAYS[-1]
    assert longest == outbox.RETRY_DELAYS[-1]  # the back-off is capped, not doubling for ever
    assert audit_count(desk, ticket_id, "mail_failed") == 1
    assert customer(desk).bounced_at is None  # an unreachable server says nothing about the address


# -- 5. a worker process that dies mid-delivery ---------------------------------------------------
CRASHING_WORKER = """
import os, sys
from datetime import datetime
from workflows.app import build_desk
from workflows.outbox import deliver
from workflows.outmail import compose
from workflows.settings import load_settings
from workflows.transports import transport_for

mode, outbox_id, now = sys.argv[1], int(sys.argv[2]), datetime.fromisoformat(sys.argv[3])
settings = load_settings()
desk = build_desk(settings)
inner = transport_for(settings)


class Crashing:
    def send(self, delivery, commit_sent):
        def wrapped():
            if mode == "before_commit":
                os._exit(9)
            committed = commit_sent()
            if mode == "after_commit":
                os._exit(9)
            return committed

        answer = inner.send(delivery, wrapped)
        if mode == "after_answer":
            os._exit(9)
        return answer


deliver(desk.sessions, settings, Crashing(), outbox_id, clock=lambda: now, compose=compose)
sys.exit(0)  # not reached: every mode dies on the way
"""


def crash_a_worker(settings: Settings, sink: Sink, mode: str, outbox_id: int, now: datetime) -> None:
    """Deliver ``outbox_id`` in a child process that dies (``os._exit``) at ``mode``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANEDESK_")}
    env.update(
        LANEDESK_DATA_DIR=str(settings.data_dir),
        LANEDESK_DATABASE_URL=settings.database_url,
        LANEDESK_SMTP_URL=sink.url(query="timeout=10"),
    )
    child = subprocess.run(
        [sys.executable, "-c", CRASHING_WORKER, mode, str(outbox_id), now.isoformat()],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 9, child.stderr


@pytest.mark.parametrize(
    ("mode", "state_after_crash", "copies"),
    [
        # Transferred, "sent" not committed: the server threw the half message away; sent again.
        ("before_commit", "sending", 1),
        # "sent" committed, end-of-data never went out: lost (visibly), never doubled.
        ("after_commit", "sent", 0),
        # The server said 250, the bookkeeping after it never ran: delivered, never again.
        ("after_answer", "sent", 1),
    ],
)
def test_a_worker_that_crashes_mid_delivery_never_causes_a_second_copy(
    desk: Desk, settings: Settings, clock: Clock, mode: str, state_after_crash: str, copies: int
) -> None:
    _, ack = opened_ticket(desk, clock.now)
    with smtp_sink() as sink:
        crash_a_worker(settings, sink, mode, ack, clock.now)
        crashed = row_of(desk, ack)
        assert (crashed.state, crashed.attempts, crashed.server_reply) == (state_after_crash, 1, None)
        assert crashed.raw is not None  # rendered once, by the worker that died

        assert sweep(desk, clock.now) == []  # the lease still runs: nobody else may take it yet
        clock.advance(SEND_LEASE + timedelta(seconds=1))
        due = sweep(desk, clock.now)
        outcome = deliver(desk, smtp(settings, sink.url()), ack, clock)
        clock.advance(timedelta(hours=1))
        outcome_later = deliver(desk, smtp(settings, sink.url()), ack, clock)
        assert sweep(desk, clock.now) == []

    row = row_of(desk, ack)
    assert len(sink.received) == copies
    assert all(r.message["Message-ID"] == row.message_id for r in sink.received)
    assert (outcome, outcome_later, row.state) == ("sent", "sent", "sent")
    if mode == "before_commit":
        assert due == [ack]
        assert row.attempts == 2 and row.server_reply is not None and row.reason is None
    else:
        assert due == []  # a "sent" row is never handed out again ...
        assert row.attempts == 1 and row.server_reply is None
        assert row.reason is not None and row.reason.startswith("unconfirmed")  # ... but flagged


# -- 6. a stalled worker whose lease was taken over ------------------------------------------------
def test_a_stalled_worker_whose_lease_was_taken_over_sends_nothing(
    desk: Desk, settings: Settings, clock: Clock
) -> None:
    _, ack = opened_ticket(desk, clock.now)
    with smtp_sink() as sink:
        worker_a = Worker(desk, smtp(settings, sink.url()), ack, clock)
        try:
            worker_a.wait_transferred()  # A has sent the whole message but its end-of-data
            clock.advance(SEND_LEASE + timedelta(seconds=1))
            assert sweep(desk, clock.now) == [ack]  # A's lease ran out: the row is queued again
            assert deliver(desk, smtp(settings, sink.url()), ack, clock) == "sent"  # worker B
            assert worker_a.finish() == "superseded"
        finally:
            worker_a.release()
    assert worker_a.transport.commit_results == [False]
    assert len(sink.received) == 1
    row = row_of(desk, ack)
    assert (row.state, row.attempts) == ("sent", 2)
    assert row.server_reply is not None and row.server_reply.startswith("250")


def test_a_stalled_worker_waking_while_the_new_one_is_mid_transfer_sends_nothing(
    desk: Desk, settings: Settings, clock: Clock
) -> None:
    """Both hold a transferred message on an open connection; only the current lease may deliver."""
    _, ack = opened_ticket(desk, clock.now)
    with smtp_sink() as sink:
        worker_a = Worker(desk, smtp(settings, sink.url()), ack, clock)
        worker_b: Worker | None = None
        try:
            worker_a.wait_transferred()
            clock.advance(SEND_LEASE + timedelta(seconds=1))
            assert sweep(desk, clock.now) == [ack]
            worker_b = Worker(desk, smtp(settings, sink.url()), ack, clock)
            worker_b.wait_transferred()  # B claimed it (attempt 2) and is where A is
            assert worker_a.finish() == "superseded"  # A's attempt is not the row's any more
            assert worker_b.finish() == "sent"
        finally:
            worker_a.release()
            if worker_b is not None:
                worker_b.release()
    assert (worker_a.transport.commit_results, worker_b.transport.commit_results) == ([False], [True])
    assert len(sink.received) == 1
    assert (row_of(desk, ack).state, row_of(desk, ack).attempts) == ("sent", 2)


# -- 7. TLS and AUTH -------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
@pytest.mark.parametrize("scheme", ["smtps", "smtp+starttls"])
def test_delivery_over_tls_with_auth(
    desk: Desk, settings: Settings, clock: Clock, server_tls: ssl.SSLContext, cafile: str, scheme: str
) -> None:
    _, ack = opened_ticket(desk, clock.now)
    with tls_sink(scheme, server_tls) as sink:
        untrusted = smtp(settings, sink.url(scheme, "user:secret"))  # the system CAs do not know ours
        assert deliver(desk, untrusted, ack, clock) == "queued"
        error = row_of(desk, ack).last_error
        assert error is not None and "CERTIFICATE_VERIFY_FAILED" in error

        clock.advance(timedelta(minutes=1))
        trusted = smtp(settings, sink.url(scheme, "user:secret", f"cafile={cafile}"))
        assert deliver(desk, trusted, ack, clock) == "sent"
    assert len(sink.received) == 1
    assert sink.received[0].message["Message-ID"] == row_of(desk, ack).message_id


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
@pytest.mark.parametrize("scheme", ["smtps", "smtp+starttls"])
def test_a_wrong_password_is_a_transient_failure(
    desk: Desk, settings: Settings, clock: Clock, server_tls: ssl.SSLContext, cafile: str, scheme: str
) -> None:
    _, ack = opened_ticket(desk, clock.now)
    with tls_sink(scheme, server_tls) as sink:
        wrong = smtp(settings, sink.url(scheme, "user:guess", f"cafile={cafile}"))
        assert deliver(desk, wrong, ack, clock) == "queued"
        assert sink.received == []
    row = row_of(desk, ack)
    assert row.last_error is not None and "authentication failed" in row.last_error
    assert row.state == "queued" and row.reason is None
    assert customer(desk).bounced_at is None  # our password is wrong, not the customer's address


def test_a_server_without_starttls_gets_nothing_in_clear(
    desk: Desk, settings: Settings, clock: Clock
) -> None:
    _, ack = opened_ticket(desk, clock.now)
    with smtp_sink() as sink:  # plain SMTP, no STARTTLS on offer
        assert deliver(desk, smtp(settings, sink.url("smtp+starttls", "user:secret")), ack, clock) == "queued"
        assert sink.received == []
    row = row_of(desk, ack)
    assert row.last_error is not None and "does not offer STARTTLS; not sending in clear" in row.last_error
    assert customer(desk).bounced_at is None


# -- 8. the outbox directory (no SMTP server configured) ------------------------------------------
def test_the_directory_transport_keeps_each_mail_once_as_an_eml_file(
    desk: Desk, tmp_path: Path, clock: Clock
) -> None:
    _, ack = opened_ticket(desk, clock.now)
    directory = tmp_path / "outbox"
    transport = DirectoryTransport(directory)
    assert deliver(desk, transport, ack, clock) == "sent"
    kept = directory / f"{ack:08d}.eml"
    assert [p.name for p in directory.iterdir()] == [kept.name]
    msg = message_from_bytes(kept.read_bytes(), policy=policy.default)
    row = row_of(desk, ack)
    assert msg["Message-ID"] == row.message_id and msg["To"].addresses[0].addr_spec == CUSTOMER
    assert row.server_reply is not None and str(kept) in row.server_reply

    before = kept.read_bytes()
    clock.advance(timedelta(hours=1))
    assert deliver(desk, transport, ack, clock) == "sent"
    assert [p.name for p in directory.iterdir()] == [kept.name] and kept.read_bytes() == before
    assert row_of(desk, ack).attempts == 1


def test_a_superseded_directory_delivery_leaves_no_file(desk: Desk, tmp_path: Path, clock: Clock) -> None:
    _, ack = opened_ticket(desk, clock.now)
    directory = tmp_path / "outbox"
    worker_a = Worker(desk, DirectoryTransport(directory), ack, clock)
    try:
        worker_a.wait_transferred()
        assert [p.suffix for p in directory.iterdir()] == [".partial"]  # written, not in place
        clock.advance(SEND_LEASE + timedelta(seconds=1))
        assert sweep(desk, clock.now) == [ack]
        assert worker_a.finish() == "superseded"
    finally:
        worker_a.release()
    assert worker_a.transport.commit_results == [False]
    assert list(directory.iterdir()) == []
    assert row_of(desk, ack).state == "queued"

    assert deliver(desk, DirectoryTransport(directory), ack, clock) == "sent"
    assert [p.name for p in directory.iterdir()] == [f"{ack:08d}.eml"]
