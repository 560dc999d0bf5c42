"""Inbound mail through the desk: store, thread, authorise, hand to the lifecycle, quarantine."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from workflows import inbound
from workflows.app import Desk
from workflows.inbound import Envelope, process_mail, requeue, store_raw
from workflows.models import (
    Attachment,
    AuditEvent,
    ConversationEntry,
    Customer,
    MailMessage,
    OutboxMessage,
    PendingMessage,
    Ticket,
    TicketParticipant,
)
from workflows.secrets import reply_address
from workflows.settings import Settings

pytest.importorskip("workflows.mailparse")

SUPPORT = "support@desk.example"


def mail(
    *,
    sender: str = "jana@customer.example",
    subject: str = "VPN drops every hour",
    body: str = "Since Monday the VPN drops every hour.",
    message_id: str | None = "<m1@customer.example>",
    to: str = SUPPORT,
    cc: str | None = None,
    headers: dict[str, str] | None = None,
    attachment: tuple[str, bytes] | None = None,
    now: datetime | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    if message_id:
        msg["Message-ID"] = message_id
    if now is not None:
        msg["Date"] = format_datetime(now)
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    if attachment:
        msg.add_attachment(attachment[1], maintype="application", subtype="pdf", filename=attachment[0])
    return bytes(msg)


def deliver(
    session: Session, settings: Settings, raw: bytes, now: datetime, *, to: str = SUPPORT
) -> inbound.Outcome:
    stored = store_raw(session, raw, Envelope("smtp", "bounce@x.example", (to,)), now=now)
    return process_mail(session, settings, stored.id, now=now)


def entries(session: Session, ticket_id: int) -> list[ConversationEntry]:
    query = (
        select(ConversationEntry)
        .where(ConversationEntry.ticket_id == ticket_id)
        .order_by(ConversationEntry.id)
    )
    return list(session.scalars(query))


def test_a_new_mail_opens_a_ticket_with_its_cc_and_attachment(
    session: Session, settings: Settings, now: datetime
) -> None:
    raw = mail(cc="Boss <boss@customer.example>, support@desk.example", attachment=("log.pdf", b"%PDF-1.4 x"))
    outcome = deliver(session, settings, raw, now)
    assert outcome.state == "processed" and outcome.decision.startswith("new ticket LD-")
    ticket = session.get_one(Ticket, outcome.ticket_id)
    assert (ticket.requester.email, ticket.subject, ticket.mailbox) == (
        "jana@customer.example",
        "VPN drops every hour",
        SUPPORT,
    )
    [first] = entries(session, ticket.id)
    assert first.mail_id is not None and "drops every hour" in first.body
    participants = session.scalars(
        select(TicketParticipant.email).where(TicketParticipant.ticket_id == ticket.id)
    )
    assert list(participants) == ["boss@customer.example"]  # our own address is not a participant
    [file] = session.scalars(select(Attachment).where(Attachment.ticket_id == ticket.id))
    assert (file.filename, file.data) == ("log.pdf", b"%PDF-1.4 x")


def _opened(session: Session, settings: Settings, now: datetime) -> Ticket:
    outcome = deliver(session, settings, mail(now=now), now)
    return session.get_one(Ticket, outcome.ticket_id)


def _customer_replied(session: Session, ticket: Ticket) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.ticket_id == ticket.id, AuditEvent.action == "customer_replied")
        )
        or 0
    )


def test_a_reply_to_our_acknowledgement_threads_by_in_reply_to(
    session: Session, settings: Settings, now: datetime
) -> None:
    ticket = _opened(session, settings, now)
    ours = session.scalar(select(OutboxMessage.message_id).where(OutboxMessage.ticket_id == ticket.id))
    assert ours is not None
    reply = mail(
        subject=f"Re: [LD-{ticket.number}] We got your message",
        body="It happened again at 10:00.\n\nOn Mon, Desk wrote:\n> We got your message",
        message_id="<m2@customer.example>",
        headers={"In-Reply-To": ours, "References": f"<m1@customer.example> {ours}"},
    )
    outcome = deliver(session, settings, reply, now + timedelta(hours=1))
    assert (outcome.ticket_id, outcome.decision) == (
        ticket.id,
        f"follow-up on LD-{ticket.number} by In-Reply-To/References",
    )
    latest = entries(session, ticket.id)[-1]
    assert latest.body.strip() == "It happened again at 10:00."  # quoted text stripped
    assert _customer_replied(session, ticket) == 1


def test_a_reply_with_only_the_subject_tag_threads_for_the_requester(
    session: Session, settings: Settings, now: datetime
) -> None:
    ticket = _opened(session, settings, now)
    reply = mail(subject=f"AW: RE:  [ ld-{ticket.number} ]  VPN", message_id="<m3@customer.example>")
    outcome = deliver(session, settings, reply, now)
    assert outcome.ticket_id == ticket.id and "subject tag" in outcome.decision


def test_a_stranger_using_the_subject_tag_opens_a_new_ticket(
    session: Session, settings: Settings, now: datetime
) -> None:
    ticket = _opened(session, settings, now)
    spoof = mail(
        sender="mallory@evil.example", subject=f"Re: [LD-{ticket.number}] close it", message_id="<x@evil>"
    )
    outcome = deliver(session, settings, spoof, now)
    assert outcome.ticket_id != ticket.id
    assert "refused: mallory@evil.example is not on" in outcome.decision
    assert _customer_replied(session, ticket) == 0
    refused = session.scalars(
        select(AuditEvent).where(AuditEvent.ticket_id == ticket.id, AuditEvent.action == "follow_up_refused")
    ).all()
    assert len(refused) == 1


def test_a_signed_reply_token_admits_any_sender(session: Session, settings: Settings, now: datetime) -> None:
    ticket = _opened(session, settings, now)
    address = reply_address(settings, SUPPORT, ticket.number)
    forwarded = mail(sender="colleague@customer.example", subject="answer", message_id="<m4@c>", to=address)
    outcome = deliver(session, settings, forwarded, now, to=address)
    assert (outcome.ticket_id, outcome.decision) == (
        ticket.id,
        f"follow-up on LD-{ticket.number} by reply token",
    )
    forged = address.replace(address.split("-")[-1][:4], "0000")
    other = deliver(
        session,
        settings,
        mail(sender="colleague@customer.example", message_id="<m5@c>", to=forged),
        now,
        to=forged,
    )
    assert other.ticket_id != ticket.id  # a forged token is no token


def test_a_cc_of_the_opening_mail_may_follow_up(session: Session, settings: Settings, now: datetime) -> None:
    outcome = deliver(session, settings, mail(cc="boss@customer.example"), now)
    ticket = session.get_one(Ticket, outcome.ticket_id)
    reply = mail(sender="boss@customer.example", subject=f"Re: [LD-{ticket.number}]", message_id="<m6@c>")
    assert deliver(session, settings, reply, now).ticket_id == ticket.id


def test_the_same_message_twice_makes_one_entry(session: Session, settings: Settings, now: datetime) -> None:
    raw = mail()
    first = deliver(session, settings, raw, now)
    again = store_raw(session, raw, Envelope("smtp"), now=now)
    assert again.duplicate
    relayed = b"Received: from relay2.example by mx; Mon, 2 Mar 2026 09:01:00 +0000\r\n" + raw
    second = deliver(session, settings, relayed, now)
    assert (second.state, second.ticket_id) == ("duplicate", first.ticket_id)
    assert len(entries(session, first.ticket_id or 0)) == 1


def test_an_auto_reply_is_kept_on_its_ticket_and_starts_nothing(
    session: Session, settings: Settings, now: datetime
) -> None:
    ticket = _opened(session, settings, now)
    ours = session.scalar(select(OutboxMessage.message_id).where(OutboxMessage.ticket_id == ticket.id))
    away = mail(
        subject="Out of office",
        body="I am away until Monday.",
        message_id="<ooo@c>",
        headers={"Auto-Submitted": "auto-replied", "In-Reply-To": ours or ""},
    )
    outcome = deliver(session, settings, away, now)
    assert (outcome.state, outcome.ticket_id) == ("auto_generated", ticket.id)
    assert entries(session, ticket.id)[-1].kind == "auto"
    assert _customer_replied(session, ticket) == 0
    assert session.scalar(select(func.count()).select_from(PendingMessage)) == 0
    stray = deliver(session, settings, mail(message_id="<ooo2@c>", headers={"Precedence": "bulk"}), now)
    assert (stray.state, stray.ticket_id) == ("auto_generated", None)  # no ticket, so no acknowledgement


def test_a_bounce_marks_the_address_and_notes_the_ticket(
    session: Session, settings: Settings, now: datetime
) -> None:
    ticket = _opened(session, settings, now)
    ours = session.scalar(select(OutboxMessage.message_id).where(OutboxMessage.ticket_id == ticket.id))
    dsn = (
        "From: MAILER-DAEMON@mx.customer.example\r\nTo: support@desk.example\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn1@mx>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nI could not deliver your message.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.customer.example\r\n\r\n"
        "Final-Recipient: rfc822; jana@customer.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {ours}\r\nSubject: ack\r\n\r\n--B--\r\n"
    ).encode()
    outcome = deliver(session, settings, dsn, now)
    assert (outcome.state, outcome.ticket_id) == ("bounce", ticket.id)
    customer = session.scalars(select(Customer).where(Customer.email == "jana@customer.example")).one()
    assert customer.bounced_at == now
    assert "Delivery failed for jana@customer.example (permanent)" in entries(session, ticket.id)[-1].body


def test_what_cannot_be_processed_is_quarantined_and_can_be_processed_again(
    desk: Desk, now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = desk.settings
    with desk.unit_of_work() as session:
        stored = store_raw(session, mail(), Envelope("smtp", None, (SUPPORT,)), now=now)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("routing table is gone")

    monkeypatch.setattr(inbound, "open_ticket", broken)
    outcome = inbound.process_or_quarantine(desk.sessions, settings, stored.id, now=now)
    assert outcome.state == "quarantined" and outcome.decision == "RuntimeError: routing table is gone"
    with desk.unit_of_work() as session:
        row = session.get_one(MailMessage, stored.id)
        assert (row.state, row.reason) == ("quarantined", "RuntimeError: routing table is gone")
        assert (
            session.scalar(select(func.count()).select_from(Ticket)) == 0
        )  # the failed attempt left nothing
        requeue(session, stored.id)
    monkeypatch.undo()
    again = inbound.process_or_quarantine(desk.sessions, settings, stored.id, now=now)
    assert again.state == "processed" and again.ticket_id is not None


def test_a_mail_without_a_sender_is_quarantined_with_the_reason(desk: Desk, now: datetime) -> None:
    settings = desk.settings
    raw = b"To: support@desk.example\r\nSubject: who am I\r\nMessage-ID: <anon@x>\r\n\r\nhello\r\n"
    with desk.unit_of_work() as session:
        stored = store_raw(session, raw, Envelope("smtp"), now=now)
    outcome = inbound.process_or_quarantine(desk.sessions, settings, stored.id, now=now)
    assert (outcome.state, outcome.decision) == (
        "quarantined",
        "ValueError: the message has no usable From address",
    )


def test_the_mailbox_routes_a_new_ticket_to_its_process(desk: Desk, now: datetime) -> None:
    routed = dataclasses.replace(desk.settings, mail_routes={"billing@desk.example": "billing_lifecycle"})
    with desk.unit_of_work() as session:
        billing = store_raw(
            session,
            mail(to="billing@desk.example"),
            Envelope("smtp", None, ("billing@desk.example",)),
            now=now,
        )
        support = store_raw(session, mail(message_id="<s@c>"), Envelope("smtp", None, (SUPPORT,)), now=now)
    refused = inbound.process_or_quarantine(desk.sessions, routed, billing.id, now=now)
    assert refused.state == "quarantined" and "billing_lifecycle" in refused.decision  # not deployed
    assert inbound.process_or_quarantine(desk.sessions, routed, support.id, now=now).state == "processed"


def test_a_tagged_envelope_recipient_names_its_plain_mailbox(session: Session, now: datetime) -> None:
    stored = store_raw(
        session, mail(), Envelope("mailgate", None, ("Support+ld1042-abc@desk.example",)), now=now
    )
    assert session.get_one(MailMessage, stored.id).mailbox == "support@desk.example"


def test_a_unique_key_clash_with_another_worker_is_retried_not_quarantined(
    desk: Desk, now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import IntegrityError

    with desk.unit_of_work() as session:
        stored = store_raw(session, mail(), Envelope("smtp", None, (SUPPORT,)), now=now)
    real, calls = inbound.process_mail, []

    def clash_once(*args: object, **kwargs: object) -> inbound.Outcome:
        calls.append(1)
        if len(calls) == 1:  # as when another worker inserted the same new customer first
            raise IntegrityError("INSERT INTO customer", {}, Exception("uq_customer_email"))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(inbound, "process_mail", clash_once)
    outcome = inbound.process_or_quarantine(desk.sessions, desk.settings, stored.id, now=now)
    assert (outcome.state, len(calls)) == ("processed", 2)
