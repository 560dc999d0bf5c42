"""Render an outbox row into the RFC 5322 message that will be sent, byte for byte, every attempt.

Headers that thread: our signed Message-ID, In-Reply-To/References continuing the ticket's
thread (the customer's Message-IDs and ours), ``[LD-1042]`` in the subject, a Reply-To with a
signed token; automatic mail is marked so that other robots stay quiet (notes/email.md §5.5).
"""

from __future__ import annotations

import hashlib
import hmac
import html
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr
from typing import Any

from sqlalchemy import CompoundSelect, bindparam, literal, select, union_all
from sqlalchemy.orm import Session

from . import audit
from .mailparse import LOOP_HEADER, REPLY_MARKER
from .models import ConversationEntry, Customer, Group, MailMessage, OutboxMessage, Ticket, User
from .secrets import reply_address, secret_key
from .settings import Settings
from .templates import CUSTOMER_TEMPLATES, Rendered, TemplateProblem, bundled_source, render, source

EXCERPT_ENTRIES = 3
MAX_REFERENCES = 10  # the first Message-ID of the thread and the last nine (RFC 5322 §3.6.4)


def survey_url(settings: Settings, ticket: Ticket) -> str:
    reference = f"{settings.ticket_prefix}-{ticket.number}"
    signature = hmac.new(secret_key(settings), f"survey:{ticket.number}".encode(), hashlib.sha256).hexdigest()
    return f"{settings.base_url}/survey/{reference}/{signature[:16]}"


#: The ticket, its requester and group, and the recipient if an agent (built once, as every
#: statement of a delivery: composing them per mail was a measurable share of its CPU).
_PARTIES = (
    select(Ticket, Customer, Group, User)
    .join(Customer, Customer.id == Ticket.requester_id)
    .outerjoin(Group, Group.id == Ticket.group_id)
    .outerjoin(User, User.email == bindparam("recipient"))
    .where(Ticket.id == bindparam("ticket_id"))
)
#: A ticket's Message-IDs, theirs (True) and ours (False), up to the row being composed.
_THREAD: CompoundSelect = union_all(
    select(literal(True), MailMessage.received_at, MailMessage.message_id).where(
        MailMessage.ticket_id == bindparam("ticket_id"),
        MailMessage.state == "processed",
        MailMessage.message_id.is_not(None),
        MailMessage.received_at <= bindparam("created_at"),
    ),
    select(literal(False), OutboxMessage.created_at, OutboxMessage.message_id).where(
        OutboxMessage.ticket_id == bindparam("ticket_id"),
        OutboxMessage.state == "sent",
        OutboxMessage.kind.in_(("customer_mail", "agent_reply")),
        OutboxMessage.id < bindparam("outbox_id"),
    ),
)


def compose(session: Session, settings: Settings, row: OutboxMessage, now: datetime) -> None:
    """Fill ``row.raw``, ``subject``, ``sender`` and ``language`` (once; retries resend them)."""
    # One statement for the ticket, its requester and group, and the recipient if an agent.
    ticket, customer, group, recipient_user = session.execute(
        _PARTIES, {"ticket_id": row.ticket_id, "recipient": row.recipient}
    ).one()
    to_customer = row.template in CUSTOMER_TEMPLATES
    language = row.language or (
        (ticket.language or customer.language or settings.language) if to_customer else settings.language
    )
    context = _context(session, settings, row, ticket, customer, group, recipient_user)
    template = source(session, row.template, language, settings.language)
    try:
        rendered = render(template, context)
    except TemplateProblem as exc:
        if template.origin != "custom":
            raise
        # An administrator's template that broke after it was saved must not stop the mail.
        row.last_error = f"custom template failed ({exc}); the bundled one was sent"
        rendered = render(bundled_source(row.template, language, settings.language), context)
        audit.record(
            session,
            ticket_id=ticket.id,
            actor=audit.SYSTEM,
            action="mail_template_failed",
            now=now,
            detail=row.last_error,
            data={"outbox_id": row.id, "template": row.template, "language": template.language},
        )
    name, address = settings.sender
    mailbox = ticket.mailbox or address
    token_address = reply_address(settings, mailbox, ticket.number)
    reference = f"{settings.ticket_prefix}-{ticket.number}"

    msg = EmailMessage(policy=SMTP)
    msg["From"] = formataddr((name, mailbox))
    msg["To"] = _recipient(row.recipient, customer, recipient_user)
    msg["Subject"] = (
        rendered.subject if f"[{reference}]" in rendered.subject else f"[{reference}] {rendered.subject}"
    )
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = row.message_id
    msg["Reply-To"] = formataddr((name, token_address))
    parent, references = _thread(session, ticket, row)
    if parent:
        msg["In-Reply-To"] = parent
        msg["References"] = " ".join(references)
    if row.auto_submitted:
        msg["Auto-Submitted"] = row.auto_submitted
        msg["X-Auto-Response-Suppress"] = "All"
        msg[LOOP_HEADER] = settings.mail_domain
    msg["X-Lanedesk-Ticket"] = reference
    msg.set_content(_text_body(rendered, reference, to_customer))
    msg.add_alternative(_html_document(rendered, reference, to_customer), subtype="html")
    msg["Content-Language"] = rendered.language  # after set_content, which drops Content-* headers

    row.raw = msg.as_bytes()
    row.subject = str(msg["Subject"])[:998]
    row.sender = token_address
    row.language = rendered.language


def _recipient(recipient: str, customer: Customer, recipient_user: User | None) -> str:
    if recipient == customer.email:
        name = customer.name
    else:
        name = recipient_user.name if recipient_user is not None else ""
    try:
        return str(Address(display_name=name, addr_spec=recipient)) if name else recipient
    except (ValueError, IndexError):
        return recipient


def _context(
    session: Session,
    settings: Settings,
    row: OutboxMessage,
    ticket: Ticket,
    customer: Customer,
    group: Group | None,
    recipient_user: User | None,
) -> dict[str, Any]:
    name, address = settings.sender
    reference = f"{settings.ticket_prefix}-{ticket.number}"
    entry = session.get(ConversationEntry, row.payload["entry_id"]) if row.payload.get("entry_id") else None
    author = session.get(User, entry.author_id) if entry is not None and entry.author_id else None
    agent = author or recipient_user
    earlier = session.scalars(
        select(ConversationEntry)
        .where(
            ConversationEntry.ticket_id == ticket.id,
            ConversationEntry.kind.in_(("inbound", "outbound")),  # never internal notes
            ConversationEntry.created_at <= row.created_at,
            ConversationEntry.id != (entry.id if entry is not None else -1),
        )
        .order_by(ConversationEntry.id.desc())
        .limit(EXCERPT_ENTRIES)
    ).all()
    authors = {e.author_id for e in earlier if e.author_id is not None}
    people = (
        {u.id: u.name for u in session.scalars(select(User).where(User.id.in_(authors)))} if authors else {}
    )
    return {
        "desk": {"name": name, "address": address, "url": settings.base_url},
        "ticket": {
            "reference": reference,
            "subject": ticket.subject,
            "status": ticket.status,
            "priority": ticket.priority,
            "group": group.name if group is not None else "",
            "url": f"{settings.base_url}/tickets/{reference}",
        },
        "customer": {"name": customer.name, "email": customer.email},
        "recipient": {
            "name": recipient_user.name if recipient_user else customer.name,
            "email": row.recipient,
        },
        "agent": {"name": agent.name if agent else name, "email": agent.email if agent else address},
        "body": entry.body if entry is not None else "",
        "excerpt": [
            {
                "who": customer.name or customer.email
                if e.kind == "inbound"
                else people.get(e.author_id or 0) or name,
                "when": f"{e.created_at:%Y-%m-%d %H:%M} UTC",
                "kind": e.kind,
                "text": e.body,
            }
            for e in earlier
        ],
        "survey_url": survey_url(settings, ticket),
        "reason": str(row.payload.get("reason", "")),
    }


def _thread(session: Session, ticket: Ticket, row: OutboxMessage) -> tuple[str | None, list[str]]:
    """(In-Reply-To, References): the customer's latest mail, else our latest, and the thread."""
    theirs: list[tuple[datetime, str]] = []
    ours: list[tuple[datetime, str]] = []
    params = {"ticket_id": ticket.id, "created_at": row.created_at, "outbox_id": row.id}
    for from_them, at, mid in session.execute(_THREAD, params):  # one round trip for both
        (theirs if from_them else ours).append((at, mid))
    if not theirs and not ours:
        return None, []
    thread: list[str] = [mid for _, mid in sorted([*theirs, *ours], key=lambda pair: pair[0]) if mid]
    thread = list(dict.fromkeys(thread))  # a Message-ID once, where it first appeared
    parent: str = (max(theirs, key=lambda pair: pair[0])[1] if theirs else None) or thread[-1]
    chain = thread[: thread.index(parent) + 1]  # what the parent itself continued, then the parent
    if len(chain) > MAX_REFERENCES:
        chain = [chain[0], *chain[-(MAX_REFERENCES - 1) :]]
    return parent, chain


def _text_body(rendered: Rendered, reference: str, to_customer: bool) -> str:
    head = f"{REPLY_MARKER}\n\n" if to_customer else ""
    return f"{head}{rendered.text}\n-- \n{reference}\n"


def _html_document(rendered: Rendered, reference: str, to_customer: bool) -> str:
    marker = (
        f'<div style="color:#8a8a8a;font-size:12px;margin-bottom:16px">{html.escape(REPLY_MARKER)}</div>\n'
        if to_customer
        else ""
    )
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="{html.escape(rendered.language)}">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(rendered.subject)}</title>\n</head>\n"
        '<body style="font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;font-size:15px;'
        'line-height:1.5;color:#1f2328;max-width:640px">\n'
        f"{marker}{rendered.html}\n"
        '<p style="color:#8a8a8a;font-size:12px;border-top:1px solid #ddd;padding-top:8px">'
        f"{html.escape(reference)}</p>\n"
        "</body>\n</html>\n"
    )
