"""Loop and rate rules decided when mail is queued, agent replies, and `lanedesk outbox`."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tasks.cli import main
from workflows import outbox
from workflows.app import Desk
from workflows.errors import InvalidInput, NotFound, PermissionDenied
from workflows.models import (
    AuditEvent,
    ConversationEntry,
    MailMessage,
    OutboxMessage,
    PendingMessage,
    Ticket,
    TicketParticipant,
)
from workflows.outmail import compose
from workflows.secrets import message_id
from workflows.settings import Settings
from workflows.templates import CUSTOMER_TEMPLATES
from workflows.tickets import open_ticket, reply_as_agent

from .helpers import actions, agent, new_ticket

JANA = "jana@customer.example"


# -- helpers -----------------------------------------------------------------------------------
def open_from(
    session: Session, settings: Settings, sender: str, now: datetime, subject: str = "Help"
) -> Ticket:
    return open_ticket(session, settings, requester=sender, subject=subject, body="Please help.", now=now)


def queue(
    session: Session,
    settings: Settings,
    ticket: Ticket,
    recipient: str,
    now: datetime,
    template: str = "reminder",
) -> OutboxMessage:
    return outbox.queue_mail(
        session,
        settings,
        ticket=ticket,
        template=template,
        recipient=recipient,
        kind="customer_mail" if template in CUSTOMER_TEMPLATES else "agent_notification",
        now=now,
        actor="system",
    )


def acknowledgement(session: Session, ticket: Ticket) -> OutboxMessage:
    (row,) = session.scalars(
        select(OutboxMessage).where(
            OutboxMessage.ticket_id == ticket.id, OutboxMessage.template == "acknowledgement"
        )
    ).all()
    return row


def agent_replies(session: Session, ticket: Ticket) -> list[OutboxMessage]:
    return list(
        session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.ticket_id == ticket.id, OutboxMessage.template == "agent_reply")
            .order_by(OutboxMessage.id)
        )
    )


def suppressions(session: Session, ticket: Ticket) -> list[AuditEvent]:
    return list(
        session.scalars(
            select(AuditEvent)
            .where(AuditEvent.ticket_id == ticket.id, AuditEvent.action == "mail_suppressed")
            .order_by(AuditEvent.id)
        )
    )


def assert_suppressed(session: Session, row: OutboxMessage, *fragments: str) -> None:
    assert row.state == "suppressed", (row.state, row.reason)
    assert row.reason is not None and row.next_attempt_at is None
    for fragment in fragments:
        assert fragment in row.reason, row.reason
    event = suppressions(session, session.get_one(Ticket, row.ticket_id))[-1]
    assert event.data == {"template": row.template, "recipient": row.recipient, "reason": row.reason}
    assert event.detail == f"{row.template} to {row.recipient} held back: {row.reason}"


def add_sent(
    session: Session,
    settings: Settings,
    ticket: Ticket,
    recipient: str,
    at: datetime,
    count: int,
    *,
    auto_submitted: str | None = "auto-generated",
    state: str = "sent",
) -> None:
    """``count`` earlier mails to ``recipient``, written as if they had gone out at ``at``."""
    for _ in range(count):
        session.add(
            OutboxMessage(
                ticket_id=ticket.id,
                kind="customer_mail" if auto_submitted else "agent_reply",
                template="reminder" if auto_submitted else "agent_reply",
                recipient=recipient,
                message_id=message_id(settings, ticket.number),
                auto_submitted=auto_submitted,
                state=state,
                payload={},
                attempts=1,
                created_at=at,
                sent_at=at if state == "sent" else None,
            )
        )
    session.flush()


def mail_from(session: Session, sender: str, state: str, at: datetime) -> MailMessage:
    raw = f"From: {sender}\r\nSubject: x\r\nDate: {at:%c}\r\n\r\n{state}\r\n".encode()
    row = MailMessage(
        content_hash=hashlib.sha256(raw).hexdigest(),
        raw=raw,
        size=len(raw),
        source="file",
        sender=sender,
        state=state,
        attempts=1,
        received_at=at,
        processed_at=at,
    )
    session.add(row)
    session.flush()
    return row


def count(session: Session, model: type) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


# -- RFC 3834: one acknowledgement per sender per 7 days --------------------------------------------
def test_one_automatic_acknowledgement_per_sender_in_seven_days(
    session: Session, settings: Settings, now: datetime
) -> None:
    first = open_from(session, settings, JANA, now)
    assert acknowledgement(session, first).state == "queued"
    assert "mail_queued" in actions(session, first)

    second = open_from(session, settings, JANA, now + timedelta(days=3))
    held = acknowledgement(session, second)
    assert_suppressed(
        session,
        held,
        "already acknowledged this sender at 2026-03-02 09:00 UTC",
        "one per 7 days",
        "RFC 3834",
    )
    assert "mail_queued" not in actions(session, second)

    other = open_from(session, settings, "piotr@customer.example", now + timedelta(days=3))
    assert acknowledgement(session, other).state == "queued"

    almost = open_from(session, settings, JANA, now + timedelta(days=6, hours=23, minutes=59))
    assert acknowledgement(session, almost).state == "suppressed"

    # The held-back ones do not count: seven days after the one that went, the next one goes.
    week_later = now + timedelta(days=7, minutes=1)
    renewed = open_from(session, settings, JANA, week_later)
    assert acknowledgement(session, renewed).state == "queued"
    again = open_from(session, settings, JANA, week_later + timedelta(hours=1))
    assert_suppressed(session, acknowledgement(session, again), "at 2026-03-09 09:01 UTC")


def test_other_automatic_mail_is_not_limited_by_the_acknowledgement_rule(
    session: Session, settings: Settings, now: datetime
) -> None:
    ticket = open_from(session, settings, JANA, now)
    assert queue(session, settings, ticket, JANA, now, "reminder").state == "queued"
    assert queue(session, settings, ticket, JANA, now, "resolved").state == "queued"
    assert queue(session, settings, ticket, JANA, now, "acknowledgement").state == "suppressed"


# -- ceilings --------------------------------------------------------------------------------------
def test_the_ten_minute_ceiling_across_all_tickets(
    session: Session, settings: Settings, now: datetime
) -> None:
    window, total_limit, ticket_limit = outbox.CEILINGS[0]
    busy = "busy@customer.example"
    tickets = [new_ticket(session, settings, now, subject=f"Ticket {i}") for i in range(5)]
    spread = len(tickets) - 1
    assert total_limit / spread < ticket_limit  # no single ticket reaches its own ceiling
    last = now
    for i in range(total_limit):
        last = now + timedelta(seconds=10 * i)
        assert queue(session, settings, tickets[i % spread], busy, last).state == "queued", i
    held = queue(session, settings, tickets[-1], busy, last + timedelta(seconds=10))
    assert_suppressed(session, held, f"ceiling: {total_limit} automatic mails to this address in 10 min")
    assert f"(limit {total_limit})" in (held.reason or "")
    # Other recipients are not affected.
    assert queue(session, settings, tickets[-1], JANA, last, "resolved").state == "queued"
    # Still within the window of the first one (held-back mail does not count) ...
    held_again = queue(session, settings, tickets[-1], busy, now + window - timedelta(seconds=1))
    assert_suppressed(session, held_again, f"ceiling: {total_limit} automatic mails to this address")
    # ... once the first has slid out of it, automatic mail goes again.
    assert queue(session, settings, tickets[-1], busy, now + window).state == "queued"
    assert queue(session, settings, tickets[-1], busy, now + window).state == "suppressed"


def test_the_ten_minute_ceiling_on_one_ticket(session: Session, settings: Settings, now: datetime) -> None:
    window, _, ticket_limit = outbox.CEILINGS[0]
    busy = "busy@customer.example"
    noisy, quiet = new_ticket(session, settings, now), new_ticket(session, settings, now)
    last = now
    for i in range(ticket_limit):
        last = now + timedelta(seconds=30 * i)
        assert queue(session, settings, noisy, busy, last).state == "queued", i
    held = queue(session, settings, noisy, busy, last + timedelta(seconds=30))
    assert_suppressed(
        session,
        held,
        f"ceiling: {ticket_limit} automatic mails on this ticket in 10 min (limit {ticket_limit})",
    )
    assert queue(session, settings, quiet, busy, last + timedelta(seconds=30)).state == "queued"
    assert queue(session, settings, noisy, busy, last + window + timedelta(seconds=1)).state == "queued"


@pytest.mark.parametrize("index", range(len(outbox.CEILINGS)))
@pytest.mark.parametrize("scope", ["address", "ticket"])
def test_every_ceiling_holds_for_its_whole_window(
    session: Session, settings: Settings, now: datetime, index: int, scope: str
) -> None:
    window, total_limit, ticket_limit = outbox.CEILINGS[index]
    minutes = int(window.total_seconds() // 60)
    busy = "busy@customer.example"
    # All of them just inside this window and outside every shorter one.
    at = now - window + timedelta(minutes=1)
    if scope == "ticket":
        ticket = new_ticket(session, settings, now)
        add_sent(session, settings, ticket, busy, at, ticket_limit)
        expected = (
            f"ceiling: {ticket_limit} automatic mails on this ticket in {minutes} min (limit {ticket_limit})"
        )
    else:
        ticket = new_ticket(session, settings, now, subject="A fresh one")
        spread = -(-total_limit // (ticket_limit - 1))  # tickets needed to stay under each one's ceiling
        others = [new_ticket(session, settings, now) for _ in range(spread)]
        for i, other in enumerate(others):
            add_sent(session, settings, other, busy, at, len(range(i, total_limit, spread)))
        expected = (
            f"ceiling: {total_limit} automatic mails to this address in {minutes} min (limit {total_limit})"
        )
    assert_suppressed(session, queue(session, settings, ticket, busy, now), expected)
    assert outbox.held_back(session, settings, ticket, "reminder", busy, now + timedelta(minutes=2)) is None


def test_only_automatic_mail_that_was_not_held_back_counts_toward_the_ceilings(
    session: Session, settings: Settings, now: datetime
) -> None:
    _, total_limit, ticket_limit = outbox.CEILINGS[0]
    longest = outbox.CEILINGS[-1][0]
    busy = "busy@customer.example"
    ticket = new_ticket(session, settings, now)
    recent = now - timedelta(minutes=1)
    add_sent(session, settings, ticket, busy, recent, total_limit, auto_submitted=None)  # agents wrote them
    add_sent(session, settings, ticket, busy, recent, total_limit, state="suppressed")
    add_sent(session, settings, ticket, busy, now - longest, 2 * total_limit)  # too long ago
    add_sent(session, settings, ticket, "someone@customer.example", recent, total_limit)
    assert queue(session, settings, ticket, busy, now).state == "queued"
    # Queued (not yet sent) automatic mail counts like sent mail.
    add_sent(session, settings, ticket, busy, recent, ticket_limit - 1, state="queued")
    assert_suppressed(
        session, queue(session, settings, ticket, busy, now), f"{ticket_limit} automatic mails on this ticket"
    )


# -- addresses that never get automatic mail ------------------------------------------------------
@pytest.mark.parametrize(
    "address",
    [
        "mailer-daemon@mx.customer.example",
        "MAILER-DAEMON@mx.customer.example",
        "postmaster@customer.example",
        "no-reply@shop.example",
        "noreply@shop.example",
        "no-reply+orders@shop.example",
        "do-not-reply@shop.example",
        "bounces@lists.example",
        "root@server.example",
    ],
)
def test_robots_get_no_automatic_mail(
    session: Session, settings: Settings, now: datetime, address: str
) -> None:
    ticket = open_from(session, settings, address, now)
    assert_suppressed(session, acknowledgement(session, ticket), "the address belongs to a robot")
    assert queue(session, settings, ticket, address, now, "resolved").state == "suppressed"


@pytest.mark.parametrize(
    "address", ["rooney@customer.example", "replyall@customer.example", "noah@x.example"]
)
def test_people_whose_names_look_like_robots_still_get_it(
    session: Session, settings: Settings, now: datetime, address: str
) -> None:
    ticket = open_from(session, settings, address, now)
    assert acknowledgement(session, ticket).state == "queued"


@pytest.mark.parametrize(
    "address",
    [
        "support@lanedesk.localhost",
        "SUPPORT@lanedesk.localhost",
        "support+ld1001-0123abcd@lanedesk.localhost",
    ],
)
def test_the_desks_own_address_gets_no_automatic_mail(
    session: Session, settings: Settings, now: datetime, address: str
) -> None:
    assert settings.sender[1] == "support@lanedesk.localhost"
    ticket = open_from(session, settings, address, now)
    assert_suppressed(
        session, acknowledgement(session, ticket), "the recipient is one of the desk's own addresses"
    )


def test_the_desks_mailboxes_get_no_automatic_mail_but_colleagues_on_its_domain_do(
    session: Session, settings: Settings, now: datetime
) -> None:
    configured = dataclasses.replace(settings, mailboxes=("help@support.example",))
    mailbox = open_from(session, configured, "help@support.example", now)
    assert_suppressed(session, acknowledgement(session, mailbox), "one of the desk's own addresses")
    # The same address on a desk without that mailbox is just a customer.
    assert outbox.held_back(session, settings, mailbox, "reminder", "help@support.example", now) is None
    # The address a ticket came in through is the desk's too.
    routed = open_ticket(
        session, settings, requester=JANA, subject="S", body="B", now=now, mailbox="Sales@Shop.example"
    )
    assert outbox.held_back(session, settings, routed, "reminder", "sales@shop.example", now) == (
        "the recipient is one of the desk's own addresses"
    )
    # A person on the desk's domain is a person (agents get their notifications).
    colleague = open_from(session, settings, f"colleague@{settings.mail_domain}", now)
    assert acknowledgement(session, colleague).state == "queued"


def test_a_bouncing_address_gets_no_automatic_mail_until_it_is_cleared(
    session: Session, settings: Settings, now: datetime
) -> None:
    ticket = new_ticket(session, settings, now)
    customer = ticket.requester
    customer.bounced_at, customer.bounce_reason = now - timedelta(days=1), "550 5.1.1 no such user"
    session.flush()
    held = queue(session, settings, ticket, JANA, now)
    assert_suppressed(
        session, held, "the address bounces (550 5.1.1 no such user, since 2026-03-01 09:00 UTC)"
    )
    customer.bounced_at = customer.bounce_reason = None
    session.flush()
    assert queue(session, settings, ticket, JANA, now).state == "queued"


def test_addresses_are_one_address_whatever_their_case(
    session: Session, settings: Settings, now: datetime
) -> None:
    # Opened from the command line with capitals, bouncing by mail in lower case: one customer.
    ticket = open_from(session, settings, "Jana.Novak@Customer.Example", now)
    assert ticket.requester.email == "jana.novak@customer.example"
    ticket.requester.bounced_at = now
    session.flush()
    held = queue(session, settings, ticket, "JANA.NOVAK@customer.example", now)
    assert_suppressed(session, held, "the address bounces")


def test_no_automatic_answer_to_a_sender_whose_last_mail_was_automatic(
    session: Session, settings: Settings, now: datetime
) -> None:
    ticket = new_ticket(session, settings, now)
    mail_from(session, JANA, "processed", now - timedelta(hours=2))
    mail_from(session, JANA, "auto_generated", now - timedelta(hours=1))  # her out-of-office reply
    assert_suppressed(
        session, queue(session, settings, ticket, JANA, now), "last mail to us was auto-generated"
    )
    # Mail that was not hers to count (a quarantined or duplicate one) changes nothing ...
    mail_from(session, JANA, "quarantined", now - timedelta(minutes=30))
    mail_from(session, JANA, "duplicate", now - timedelta(minutes=20))
    assert queue(session, settings, ticket, JANA, now).state == "suppressed"
    # ... other senders are not affected ...
    assert queue(session, settings, ticket, "piotr@customer.example", now).state == "queued"
    # ... and a mail she wrote herself lifts it.
    mail_from(session, JANA, "processed", now - timedelta(minutes=10))
    assert queue(session, settings, ticket, JANA, now).state == "queued"


# -- agent replies ---------------------------------------------------------------------------------
def make_unmailable(session: Session, settings: Settings, ticket: Ticket, how: str, now: datetime) -> None:
    email = ticket.requester.email
    if how == "bouncing":
        ticket.requester.bounced_at = now - timedelta(days=1)
        ticket.requester.bounce_reason = "550 no such user"
    elif how == "over the ceiling":
        add_sent(session, settings, ticket, email, now - timedelta(minutes=1), outbox.CEILINGS[0][1])
    elif how == "auto-generated":
        mail_from(session, email, "auto_generated", now - timedelta(minutes=5))
    session.flush()


@pytest.mark.parametrize(
    ("how", "requester"),
    [
        ("bouncing", JANA),
        ("over the ceiling", JANA),
        ("auto-generated", JANA),
        ("robot", "no-reply@shop.example"),
        ("robot", "mailer-daemon@mx.customer.example"),
    ],
)
def test_agent_replies_are_never_held_back(
    session: Session, settings: Settings, now: datetime, how: str, requester: str
) -> None:
    ticket = open_from(session, settings, requester, now)
    tereza = agent(session, "tereza@desk.example", "tier-1", now=now)
    later = now + timedelta(minutes=30)
    make_unmailable(session, settings, ticket, how, later)
    # Automatic mail would be held back ...
    assert outbox.held_back(session, settings, ticket, "reminder", requester, later) is not None
    # ... a person's answer goes.
    reply_as_agent(
        session, settings, ticket_ref=ticket.number, agent_email=tereza.email, body="Here you go.", now=later
    )
    (row,) = agent_replies(session, ticket)
    assert (row.state, row.reason, row.auto_submitted) == ("queued", None, None)
    assert (row.recipient, row.kind, row.next_attempt_at) == (requester, "agent_reply", later)
    compose(session, settings, row, later)
    assert row.raw is not None and b"Auto-Submitted" not in row.raw and b"Here you go." in row.raw


def test_an_agent_reply_goes_to_the_requester_and_each_cc_once(
    session: Session, settings: Settings, now: datetime
) -> None:
    ticket = new_ticket(session, settings, now)
    tereza = agent(session, "tereza@desk.example", "tier-1", now=now)
    for cc in ("boss@customer.example", "it@customer.example", JANA):
        session.add(TicketParticipant(ticket_id=ticket.id, email=cc, role="cc", created_at=now))
    session.flush()
    entry = reply_as_agent(
        session, settings, ticket_ref=f"LD-{ticket.number}", agent_email=tereza.email, body="Fixed.", now=now
    )
    rows = agent_replies(session, ticket)
    assert [r.recipient for r in rows] == [JANA, "boss@customer.example", "it@customer.example"]
    assert {r.state for r in rows} == {"queued"} and {r.auto_submitted for r in rows} == {None}
    assert all(r.payload == {"entry_id": entry.id} for r in rows)
    assert len({r.message_id for r in rows}) == 3
    compose(session, settings, rows[1], now)
    assert rows[1].raw is not None and b"To: boss@customer.example\r\n" in rows[1].raw
    reply_as_agent(
        session, settings, ticket_ref=ticket.number, agent_email=tereza.email, body="Anything else?", now=now
    )
    assert len(agent_replies(session, ticket)) == 6


def test_an_agent_reply_is_on_the_conversation_and_told_to_the_process(
    session: Session, settings: Settings, now: datetime
) -> None:
    ticket = new_ticket(session, settings, now)
    tereza = agent(session, "tereza@desk.example", "tier-1", now=now)
    later = now + timedelta(hours=1)
    entry = reply_as_agent(
        session,
        settings,
        ticket_ref=ticket.number,
        agent_email=" tereza@DESK.example ",
        body="  Please try again.\n",
        now=later,
    )
    assert (entry.kind, entry.author_id, entry.body, entry.created_at) == (
        "outbound",
        tereza.id,
        "Please try again.",
        later,
    )
    assert ticket.updated_at == later
    assert "agent_replied" in actions(session, ticket)
    event = session.scalars(
        select(AuditEvent).where(AuditEvent.ticket_id == ticket.id, AuditEvent.action == "agent_replied")
    ).one()
    assert (event.actor, event.data) == ("user:tereza@desk.example", {"entry_id": entry.id})
    message = session.scalars(select(PendingMessage).where(PendingMessage.name == "agent_replied")).one()
    assert message.payload == {"entry_id": entry.id}


def test_who_may_reply_and_with_what(session: Session, settings: Settings, now: datetime) -> None:
    ticket = new_ticket(session, settings, now)
    agent(session, "tereza@desk.example", "tier-1", now=now)
    agent(session, "olga@desk.example", "tier-2", now=now)
    agent(session, "root@desk.example", role="admin", now=now)
    models = (ConversationEntry, OutboxMessage, AuditEvent, PendingMessage)
    before = [count(session, model) for model in models]

    def reply(who: str, body: str) -> ConversationEntry:
        return reply_as_agent(
            session, settings, ticket_ref=ticket.number, agent_email=who, body=body, now=now
        )

    with pytest.raises(
        PermissionDenied, match=rf"olga@desk\.example is not in the group of LD-{ticket.number}"
    ):
        reply("olga@desk.example", "Hi")
    with pytest.raises(NotFound, match=r"no user nobody@desk\.example"):
        reply("nobody@desk.example", "Hi")
    for empty in ("", "  \n\t "):
        with pytest.raises(InvalidInput, match="a reply needs some text"):
            reply("tereza@desk.example", empty)
    with pytest.raises(InvalidInput, match="at most 100,000 characters"):
        reply("tereza@desk.example", "x" * 100_001)
    with pytest.raises(NotFound, match="no ticket LD-99999"):
        reply_as_agent(
            session, settings, ticket_ref="LD-99999", agent_email="tereza@desk.example", body="x", now=now
        )
    assert [count(session, model) for model in models] == before  # nothing was written
    reply("root@desk.example", "An admin may answer any ticket.")
    assert len(agent_replies(session, ticket)) == 1


# -- the command line ----------------------------------------------------------------------------
class Clock:
    def __init__(self, start: datetime):
        self.now = start

    def __call__(self) -> datetime:
        return self.now


Cli = Callable[..., Result]


@pytest.fixture
def clock(now: datetime) -> Clock:
    return Clock(now)


@pytest.fixture
def cli(desk: Desk, clock: Clock, tmp_path: Path) -> Iterator[Cli]:
    # Mail "sent" by `lanedesk outbox send` lands in this test's own directory.
    timed = dataclasses.replace(
        desk, clock=clock, settings=dataclasses.replace(desk.settings, data_dir=tmp_path)
    )
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(main, list(args), obj=timed, catch_exceptions=False)

    yield invoke


def listing(cli: Cli, *args: str) -> list[dict[str, object]]:
    result = cli("outbox", "--json", *args)
    assert result.exit_code == 0, result.output
    items = json.loads(result.output)
    assert isinstance(items, list)
    return items


def test_lanedesk_outbox_shows_what_left_what_waits_and_what_was_held_back(
    cli: Cli, clock: Clock, tmp_path: Path
) -> None:
    assert cli("user", "add", "tereza@desk.example", "--role", "agent", "--group", "tier-1").exit_code == 0
    first = cli(
        "ticket", "open", "--from", JANA, "--subject", "Cannot log in", "--body", "Help"
    ).output.strip()
    sent = cli("outbox", "send")
    assert sent.exit_code == 0 and sent.output.strip() == "1 sent"
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1
    clock.now += timedelta(hours=1)
    second = cli(
        "ticket", "open", "--from", JANA, "--subject", "Still broken", "--body", "Help"
    ).output.strip()
    replied = cli("ticket", "reply", first, "--as", "tereza@desk.example", "--body", "Please try again.")
    assert replied.exit_code == 0 and f"reply added to {first}" in replied.output

    items = listing(cli)
    assert [(i["ticket"], i["template"], i["state"]) for i in items] == [
        (first, "agent_reply", "queued"),
        (second, "acknowledgement", "suppressed"),
        (first, "acknowledgement", "sent"),
    ]
    reply, held, done = items
    assert {"id", "recipient", "subject", "ticket", "state", "reason"} <= set(reply)
    assert {i["recipient"] for i in items} == {JANA}
    assert (reply["subject"], reply["reason"], reply["auto_submitted"]) == (None, None, None)
    assert isinstance(held["reason"], str) and "one per 7 days" in held["reason"]
    assert (done["subject"], done["reason"]) == (f"[{first}] We received your request: Cannot log in", None)
    assert done["auto_submitted"] == "auto-replied" and done["sent_at"]

    assert listing(cli, "--state", "suppressed") == [held]
    assert listing(cli, "--state", "sent") == [done]
    assert [i["id"] for i in listing(cli, "--ticket", second)] == [held["id"]]
    assert listing(cli, "--limit", "1") == [reply]
    text = cli("outbox").output
    assert "suppressed" in text and "one per 7 days" in text and f"[{first}] We received" in text

    refused = cli("outbox", "retry", str(reply["id"]))
    assert refused.exit_code == 1
    assert (
        f"error: mail {reply['id']} is queued; only failed or suppressed mail is sent again" in refused.output
    )
    assert cli("outbox", "retry", "999999").exit_code == 1
    again = cli("outbox", "retry", str(held["id"]))
    assert again.exit_code == 0 and f"queued again: {held['id']}" in again.output
    (requeued,) = [i for i in listing(cli) if i["id"] == held["id"]]
    assert (requeued["state"], requeued["reason"]) == ("queued", None)
    timeline = json.loads(cli("ticket", "show", second, "--json").output)["timeline"]
    assert [e["detail"] for e in timeline if e["action"] == "mail_requeued"] == [
        f"acknowledgement to {JANA} queued again by an operator (was suppressed: {held['reason']})"
    ]
    assert listing(cli, "--state", "suppressed") == []
    assert cli("outbox", "send").output.strip() == "2 sent"


def test_lanedesk_ticket_reply_takes_one_voice(cli: Cli) -> None:
    cli("user", "add", "tereza@desk.example", "--role", "agent", "--group", "tier-1")
    cli("user", "add", "olga@desk.example", "--role", "agent", "--group", "tier-2")
    ticket = cli("ticket", "open", "--from", JANA, "--subject", "Printer").output.strip()
    both = cli("ticket", "reply", ticket, "--from", JANA, "--as", "tereza@desk.example", "--body", "x")
    assert both.exit_code == 2 and "give exactly one of --from CUSTOMER or --as AGENT" in both.output
    neither = cli("ticket", "reply", ticket, "--body", "x")
    assert neither.exit_code == 2
    other_group = cli("ticket", "reply", ticket, "--as", "olga@desk.example", "--body", "x")
    assert other_group.exit_code == 1 and "olga@desk.example is not in the group of" in other_group.output
    empty = cli("ticket", "reply", ticket, "--as", "tereza@desk.example", "--body", " ")
    assert empty.exit_code == 1 and "a reply needs some text" in empty.output
    assert [i["template"] for i in listing(cli)] == ["acknowledgement"]
    ok = cli("ticket", "reply", ticket, "--as", "tereza@desk.example", "--body", "On its way.")
    assert ok.exit_code == 0
    assert [i["template"] for i in listing(cli)] == ["agent_reply", "acknowledgement"]
    shown = json.loads(cli("ticket", "show", ticket, "--json").output)
    assert "agent_replied" in [e["action"] for e in shown["timeline"]]
