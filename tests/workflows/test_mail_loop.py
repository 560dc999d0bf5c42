"""Mail loops (notes/email.md §5.6): two parties answer each other for a simulated 24 h.

A party is either a complete desk, built as ``lanedesk`` builds one (its own SQLite file,
``load_settings``, ``build_desk``, the migrations, the default groups and the bundled lifecycle,
one agent in tier-1), or a naive autoresponder that answers every mail with a brand-new one.
A ``Wire`` connects them: a desk's transport commits the outbox row as sent and hands the
bytes to the wire, which gives them to the party owning the recipient's domain (a desk stores
them with ``store_raw``, commits, then runs ``process_or_quarantine``) and counts the crossing.
Mail to anyone else (agent notifications from the SLA timers) goes to a sink, uncounted.

Time is one ``FakeClock`` shared by both parties; nothing sleeps. Each hop is 5 s: every desk
wakes its due instances (``lanedesk tick``) and delivers its due outbox rows (``lanedesk outbox
send``), and the naive responder sends the answers it wrote a hop earlier. When nothing is due
the clock jumps straight to the next timer, retry or answer; the run ends at 24 h, or sooner
when nothing is due before then.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Protocol

import pytest
from sqlalchemy import func, select

from tests.conftest import MONDAY_9, seed
from workflows import migrate, outbox
from workflows.app import Desk, build_desk
from workflows.inbound import Envelope, process_or_quarantine, store_raw
from workflows.models import MailMessage, OutboxMessage, Ticket, WorkflowInstance
from workflows.outbox import Delivery, Superseded, deliver, due_for_delivery
from workflows.outmail import compose
from workflows.settings import load_settings
from workflows.users import add_user
from workflows.wakeups import wake_due_instances

HOP = timedelta(seconds=5)
HORIZON = timedelta(hours=24)
DESK_A, DESK_B, NAIVE = "desk-a.example", "desk-b.example", "naive.example"
_ids = itertools.count(1)


@dataclass
class FakeClock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclass(frozen=True)
class Crossing:
    at: datetime
    sender: str  # the From header
    recipient: str
    subject: str
    auto_submitted: str | None


class Party(Protocol):
    domain: str

    def receive(self, raw: bytes, mail_from: str, recipient: str) -> None: ...
    def step(self) -> None: ...
    def next_due(self) -> datetime | None: ...


@dataclass
class Wire:
    clock: FakeClock
    parties: dict[str, Party] = field(default_factory=dict)  # by mail domain
    crossings: list[Crossing] = field(default_factory=list)
    sink: list[str] = field(default_factory=list)  # recipients of mail that left the two parties
    after_horizon: datetime | None = None  # set by simulate(): the first thing due after the run

    def carry(self, raw: bytes, mail_from: str, recipient: str) -> None:
        party = self.parties.get(recipient.rpartition("@")[2])
        if party is None:
            self.sink.append(recipient)
            return
        msg = BytesParser(policy=default_policy).parsebytes(raw)
        self.crossings.append(
            Crossing(
                self.clock.now,
                parseaddr(str(msg["From"]))[1],
                recipient,
                str(msg["Subject"]),
                msg["Auto-Submitted"],
            )
        )
        party.receive(raw, mail_from, recipient)


def plain_mail(sender: str, to: str, subject: str, now: datetime, body: str = "Hello.") -> bytes:
    """What a person or a naive robot sends: no Auto-Submitted, no In-Reply-To, no References."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = f"<{next(_ids)}@{sender.rpartition('@')[2]}>"
    msg.set_content(body)
    return bytes(msg)


class DeskParty:
    """A whole desk; it is also its own transport (workflows/outbox.py's ``Transport``)."""

    def __init__(self, tmp_path: Path, domain: str, wire: Wire):
        data_dir = tmp_path / domain
        data_dir.mkdir()
        settings = load_settings(
            {
                "LANEDESK_DATA_DIR": str(data_dir),
                "LANEDESK_DATABASE_URL": f"sqlite:///{data_dir / 'desk.db'}",
                "LANEDESK_MAIL_DOMAIN": domain,
                "LANEDESK_MAILBOXES": f"support@{domain}",
                "LANEDESK_SECRET_KEY": (domain.encode().hex() * 4)[:64],
            }
        )
        self.domain, self.wire = domain, wire
        self.desk: Desk = build_desk(settings, clock=wire.clock)
        migrate.upgrade(self.desk.engine)
        with self.desk.unit_of_work() as session:
            seed(session, settings)
            add_user(session, email=f"alice@staff.{domain}", role="agent", groups=["tier-1"], now=MONDAY_9)
        wire.parties[domain] = self

    def send(self, delivery: Delivery, commit_sent: Callable[[], bool]) -> str:
        if not commit_sent():
            raise Superseded()
        self.wire.carry(delivery.raw, delivery.sender, delivery.recipient)
        return "250 2.0.0 carried"

    def receive(self, raw: bytes, mail_from: str, recipient: str) -> None:
        now = self.wire.clock()
        with self.desk.unit_of_work() as session:
            stored = store_raw(session, raw, Envelope("smtp", mail_from, (recipient,)), now=now)
        outcome = process_or_quarantine(self.desk.sessions, self.desk.settings, stored.id, now=now)
        assert outcome.state != "quarantined", outcome.decision

    def step(self) -> None:
        d = self.desk
        report = wake_due_instances(d.sessions, d.settings, now=d.clock)
        assert not report.failed, report.failed
        with d.unit_of_work() as session:
            due = due_for_delivery(session, d.clock(), recover=True)
        for outbox_id in due:
            deliver(d.sessions, d.settings, self, outbox_id, clock=d.clock, compose=compose)

    def next_due(self) -> datetime | None:
        with self.desk.unit_of_work(readonly=True) as session:
            wake = session.scalar(
                select(func.min(WorkflowInstance.next_wake_at)).where(WorkflowInstance.status == "running")
            )
            send = session.scalar(
                select(func.min(OutboxMessage.next_attempt_at)).where(OutboxMessage.state == "queued")
            )
        return min((t for t in (wake, send) if t is not None), default=None)

    # -- what the test looks at afterwards
    def tickets(self) -> list[Ticket]:
        with self.desk.unit_of_work(readonly=True) as session:
            return list(session.scalars(select(Ticket).order_by(Ticket.id)))

    def mails(self) -> list[MailMessage]:
        with self.desk.unit_of_work(readonly=True) as session:
            return list(session.scalars(select(MailMessage).order_by(MailMessage.id)))

    def outbox_to(self, recipient: str) -> list[OutboxMessage]:
        with self.desk.unit_of_work(readonly=True) as session:
            query = select(OutboxMessage).where(OutboxMessage.recipient == recipient)
            return list(session.scalars(query.order_by(OutboxMessage.id)))


class NaiveResponder:
    """Answers every mail, a hop later, with a new mail from ``address`` to the mail's From."""

    def __init__(self, address: str, wire: Wire, *, keep_subject: bool):
        self.address, self.domain, self.wire = address, address.rpartition("@")[2], wire
        self.keep_subject = keep_subject
        self.pending: list[tuple[datetime, bytes, str]] = []
        wire.parties[self.domain] = self

    def receive(self, raw: bytes, mail_from: str, recipient: str) -> None:
        msg = BytesParser(policy=default_policy).parsebytes(raw)
        to = parseaddr(str(msg["From"]))[1]
        subject = f"Re: {msg['Subject']}" if self.keep_subject else "Thank you for contacting us"
        now = self.wire.clock()
        self.pending.append((now + HOP, plain_mail(self.address, to, subject, now, "We got it."), to))

    def step(self) -> None:
        now = self.wire.clock()
        due, self.pending = [p for p in self.pending if p[0] <= now], [p for p in self.pending if p[0] > now]
        for _, raw, to in due:
            self.wire.carry(raw, self.address, to)

    def next_due(self) -> datetime | None:
        return min((due for due, _, _ in self.pending), default=None)


def kick_off(wire: Wire, sender: str, to: str) -> None:
    """One ordinary first mail, carried (and counted) like any other."""
    wire.carry(plain_mail(sender, to, "VPN drops every hour", wire.clock()), sender, to)


def simulate(wire: Wire) -> list[Crossing]:
    """Run every party hop by hop until nothing is due before the 24 h are over."""
    end = wire.clock.now + HORIZON
    while True:
        upcoming = [t for party in wire.parties.values() if (t := party.next_due()) is not None]
        wire.after_horizon = max(wire.clock.now + HOP, min(upcoming)) if upcoming else None
        if wire.after_horizon is None or wire.after_horizon > end:
            return wire.crossings
        wire.clock.now = wire.after_horizon
        for party in wire.parties.values():
            party.step()


def report(name: str, wire: Wire) -> None:
    crossings, after = wire.crossings, wire.after_horizon
    print(f"\n{name}: {len(crossings)} mails between the parties in 24 h (kick-off included)")
    print(
        f"  last hop {wire.clock.now:%a %H:%M:%S}, next event {f'{after:%a %H:%M}' if after else 'none'};"
        f" {len(wire.sink)} agent notices to the sink (uncounted)"
    )
    for c in crossings:
        print(f"  {c.at:%H:%M:%S} {c.sender} -> {c.recipient} [{c.auto_submitted or '-'}] {c.subject}")


@pytest.fixture
def wire() -> Iterator[Wire]:
    built = Wire(FakeClock(MONDAY_9))
    yield built
    for party in built.parties.values():
        if isinstance(party, DeskParty):
            party.desk.engine.dispose()


# -- the scenarios ----------------------------------------------------------------------------------
def test_two_desks_acknowledging_each_other_exchange_at_most_three_mails(tmp_path: Path, wire: Wire) -> None:
    a, b = DeskParty(tmp_path, DESK_A, wire), DeskParty(tmp_path, DESK_B, wire)
    kick_off(wire, f"support@{DESK_B}", f"support@{DESK_A}")

    crossings = simulate(wire)
    report("ours vs ours", wire)

    assert len(crossings) <= 3
    assert [(c.sender, c.auto_submitted) for c in crossings] == [
        (f"support@{DESK_B}", None),  # the kick-off
        (f"support@{DESK_A}", "auto-replied"),  # A's acknowledgement, and B stays quiet
    ]
    assert [t.requester.email for t in a.tickets()] == [f"support@{DESK_B}"]
    assert b.tickets() == []
    (ack,) = b.mails()
    assert ack.state == "auto_generated" and "X-Lanedesk-Loop" in (ack.decision or "")
    assert wire.sink and set(wire.sink) <= {f"alice@staff.{DESK_A}"}  # SLA notices, not counted


def test_a_naive_autoresponder_that_rewrites_the_subject_is_stopped_by_the_per_sender_rule(
    tmp_path: Path, wire: Wire
) -> None:
    a = DeskParty(tmp_path, DESK_A, wire)
    naive = NaiveResponder(f"help@{NAIVE}", wire, keep_subject=False)
    kick_off(wire, naive.address, f"support@{DESK_A}")

    crossings = simulate(wire)
    report("ours vs a naive responder rewriting the subject", wire)

    assert len(crossings) <= 3
    rows = a.outbox_to(naive.address)
    assert [(r.template, r.state) for r in rows] == [
        ("acknowledgement", "sent"),
        ("acknowledgement", "suppressed"),
    ]
    print(f"  held back: {rows[-1].reason}")
    assert "one per 7 days, RFC 3834" in (rows[1].reason or "")
    # The headers did not help: the robot's answer matched nothing and opened a second ticket.
    assert len(a.tickets()) == 2


def test_without_the_per_sender_rule_the_ceiling_still_ends_the_loop(
    tmp_path: Path, wire: Wire, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "ACK_WINDOW", timedelta(0))
    a = DeskParty(tmp_path, DESK_A, wire)
    naive = NaiveResponder(f"help@{NAIVE}", wire, keep_subject=False)
    kick_off(wire, naive.address, f"support@{DESK_A}")

    crossings = simulate(wire)
    report("ceiling only (no 7-day rule) vs a naive responder rewriting the subject", wire)

    window, per_address, _ = outbox.CEILINGS[0]
    sent = [r for r in a.outbox_to(naive.address) if r.state == "sent"]
    stopped = [r for r in a.outbox_to(naive.address) if r.state == "suppressed"]
    assert len(sent) == per_address and len(crossings) == 2 * per_address + 1
    assert crossings[-1].at - crossings[0].at < window
    print(f"  held back: {stopped[0].reason if stopped else None}")
    assert len(stopped) == 1 and (stopped[0].reason or "").startswith(f"ceiling: {per_address} automatic")


def test_a_naive_autoresponder_that_keeps_the_tag_threads_onto_the_ticket(tmp_path: Path, wire: Wire) -> None:
    a = DeskParty(tmp_path, DESK_A, wire)
    naive = NaiveResponder(f"help@{NAIVE}", wire, keep_subject=True)
    kick_off(wire, naive.address, f"support@{DESK_A}")

    crossings = simulate(wire)
    report("ours vs a naive responder keeping the subject tag", wire)

    assert len(crossings) <= 3
    (ticket,) = a.tickets()
    first, answer = a.mails()
    assert first.ticket_id == answer.ticket_id == ticket.id
    assert answer.state == "processed" and "by subject tag" in (answer.decision or "")
    assert [r.template for r in a.outbox_to(naive.address)] == ["acknowledgement"]
