"""Tickets: open one (from any channel), take customer replies, read one back."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.errors import EngineError
from engine.runtime import Functions, Instance, Step

from . import audit
from .definitions import require_latest_version
from .errors import Conflict, InvalidInput, NotFound, PermissionDenied
from .instances import advance, buffer_message, mark_failed, start_instance
from .models import (
    TICKET_NUMBER_OFFSET,
    AuditEvent,
    ConversationEntry,
    Customer,
    HumanTask,
    SlaClock,
    Ticket,
    TicketParticipant,
    User,
    WorkflowInstance,
)
from .outbox import queue_mail
from .settings import Settings
from .sla import PRIORITIES

DEFAULT_PROCESS = "ticket_lifecycle"
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


def normalise_email(email: str) -> str:
    address = email.strip()
    if not _EMAIL.match(address):
        raise InvalidInput(f"not an e-mail address: {email!r}")
    # Lower case as a whole: RFC 5321 lets a server treat the local part as case-sensitive, but
    # no mail system people use does, and mail arrives with whatever case the sender typed.
    return address.lower()


def customer_for(
    session: Session, email: str, *, name: str = "", now: datetime, flush: bool = True
) -> Customer:
    """The customer with ``email``, created on first contact (written at once unless ``flush``
    is false: the caller's next flush writes it, before whatever refers to it)."""
    address = normalise_email(email)
    customer = session.scalar(select(Customer).where(Customer.email == address))
    if customer is None:
        customer = Customer(email=address, name=name or address.split("@")[0], created_at=now)
        session.add(customer)
        if flush:
            session.flush()
    return customer


def open_ticket(
    session: Session,
    settings: Settings,
    *,
    requester: str,
    subject: str,
    body: str,
    now: datetime,
    requester_name: str = "",
    process_id: str = DEFAULT_PROCESS,
    priority: str = "P3",
    mailbox: str | None = None,
    language: str | None = None,
    mail_id: int | None = None,
) -> Ticket:
    """Open a ticket and start its lifecycle; the one way every channel opens tickets.

    ``priority`` is where the ticket starts (SLA targets follow it); ``mailbox`` is the address
    it came in through (SLA policies and calendars may depend on it); ``language`` the one
    its mail to the customer is written in; ``mail_id`` the stored mail that opened it.
    """
    subject = " ".join(subject.split())
    if not subject:
        raise InvalidInput("a ticket needs a subject")
    if priority not in PRIORITIES:
        raise InvalidInput(f"priority must be one of {', '.join(PRIORITIES)}; got {priority!r}")
    version = require_latest_version(session, process_id)
    customer = customer_for(session, requester, name=requester_name, now=now, flush=False)
    ticket = Ticket(
        subject=subject[:998],
        status="new",
        priority=priority,
        requester=customer,
        mailbox=mailbox.lower() if mailbox else None,
        language=language,
        created_at=now,
        updated_at=now,
    )
    session.add(ticket)
    session.flush()
    session.add(
        ConversationEntry(
            ticket_id=ticket.id,
            kind="inbound",
            customer_id=customer.id,
            body=body,
            created_at=now,
            mail_id=mail_id,
        )
    )
    actor = audit.actor_of(customer)
    audit.record(
        session,
        ticket_id=ticket.id,
        actor=actor,
        action="ticket_opened",
        now=now,
        detail=subject,
        data={"process_id": process_id, "version": version.version},
    )
    start_instance(session, settings, ticket, version, now=now, actor=actor)
    return ticket


def parse_ticket_ref(settings: Settings, ref: str | int) -> int:
    """Ticket id from ``LD-1042``, ``1042`` or an int number."""
    text = str(ref).strip().upper()
    prefix = f"{settings.ticket_prefix}-"
    number = text[len(prefix) :] if text.startswith(prefix) else text
    if not number.isdigit() or len(number) > 12 or int(number) <= TICKET_NUMBER_OFFSET:
        raise NotFound(f"no ticket {ref}")
    return int(number) - TICKET_NUMBER_OFFSET


def get_ticket(session: Session, settings: Settings, ref: str | int) -> Ticket:
    ticket = session.get(Ticket, parse_ticket_ref(settings, ref))
    if ticket is None:
        raise NotFound(f"no ticket {ref}")
    return ticket


def instance_of(session: Session, ticket: Ticket, *, lock: bool = False) -> WorkflowInstance:
    """The ticket's (newest) workflow instance; ``lock``: locked for this transaction in the same
    statement, read afresh (see :func:`workflows.instances.lock_instance`)."""
    query = (
        select(WorkflowInstance)
        .where(WorkflowInstance.ticket_id == ticket.id)
        .order_by(WorkflowInstance.id.desc())
        .limit(1)
    )
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    row = session.scalar(query)
    if row is None:
        raise NotFound(f"ticket {ticket.id} has no workflow instance")
    return row


def change_priority(
    session: Session, settings: Settings, ticket: Ticket, priority: str, *, user: User, now: datetime
) -> None:
    """An agent sets the priority: running clocks get the new targets, paused time is kept, and
    timers armed with ``sla_due(...)`` move with them (through the instance, one event at a time).
    """
    if priority not in PRIORITIES:
        raise InvalidInput(f"priority must be one of {', '.join(PRIORITIES)}; got {priority!r}")
    row = instance_of(session, ticket, lock=True)
    if row.status != "running":
        raise Conflict(
            f"ticket {reference(settings, ticket)} is {row.status}; its priority no longer matters"
        )

    def action(instance: Instance, functions: Functions) -> tuple[None, list[Step]]:
        functions["set_priority"](priority)
        return None, []

    advance(session, settings, row, action, now=now, actor=audit.actor_of(user))


def add_customer_reply(
    session: Session, settings: Settings, *, ticket_ref: str | int, sender: str, body: str, now: datetime
) -> ConversationEntry:
    """Record a customer's reply on the ticket and deliver ``customer_replied`` to its process.

    The message is buffered first: if no catch event waits for it now, it waits for one.
    """
    ticket = get_ticket(session, settings, ticket_ref)
    if normalise_email(sender) != ticket.requester.email:
        # Ticket numbers are guessable: from the command line only the requester may speak on
        # a ticket (mail also admits Cc participants and signed reply tokens). Nothing is written.
        raise PermissionDenied(f"{sender} is not the requester of ticket {reference(settings, ticket)}")
    return record_customer_message(session, settings, ticket, ticket.requester, body, now=now)


def record_customer_message(
    session: Session,
    settings: Settings,
    ticket: Ticket,
    customer: Customer,
    body: str,
    *,
    now: datetime,
    mail_id: int | None = None,
) -> ConversationEntry:
    """Put an (already authorised) customer's message on the ticket and tell its process.

    The message is buffered first: if no catch event waits for it now, it waits for one.
    """
    entry = ConversationEntry(
        ticket_id=ticket.id,
        kind="inbound",
        customer_id=customer.id,
        body=body,
        created_at=now,
        mail_id=mail_id,
    )
    session.add(entry)
    session.flush()
    actor = audit.actor_of(customer)
    audit.record(
        session,
        ticket_id=ticket.id,
        actor=actor,
        action="customer_replied",
        now=now,
        detail=body[:200],
        data={"entry_id": entry.id},
    )
    tell_process(session, settings, ticket, "customer_replied", {"entry_id": entry.id}, now=now, actor=actor)
    return entry


def reply_as_agent(
    session: Session,
    settings: Settings,
    *,
    ticket_ref: str | int,
    agent_email: str,
    body: str,
    now: datetime,
) -> ConversationEntry:
    """An agent's answer to the customer: on the conversation, mailed through the outbox (to the
    requester and the ticket's Cc participants), and ``agent_replied`` told to the process."""
    ticket, agent = _agent_on(session, settings, ticket_ref, agent_email)
    entry = _agent_entry(session, ticket, agent, "outbound", _text(body, "a reply"), "agent_replied", now)
    actor = audit.actor_of(agent)
    cc = session.scalars(
        select(TicketParticipant.email)
        .where(TicketParticipant.ticket_id == ticket.id)
        .order_by(TicketParticipant.id)
    ).all()
    for recipient in dict.fromkeys([ticket.requester.email, *cc]):
        queue_mail(
            session,
            settings,
            ticket=ticket,
            template="agent_reply",
            recipient=recipient,
            kind="agent_reply",
            now=now,
            actor=actor,
            payload={"entry_id": entry.id},
        )
    ticket.updated_at = now
    tell_process(session, settings, ticket, "agent_replied", {"entry_id": entry.id}, now=now, actor=actor)
    return entry


def _agent_entry(
    session: Session, ticket: Ticket, agent: User, kind: str, body: str, action: str, now: datetime
) -> ConversationEntry:
    entry = ConversationEntry(ticket_id=ticket.id, kind=kind, author_id=agent.id, body=body, created_at=now)
    session.add(entry)
    session.flush()
    audit.record(
        session,
        ticket_id=ticket.id,
        actor=audit.actor_of(agent),
        action=action,
        now=now,
        detail=body[:200],
        data={"entry_id": entry.id},
    )
    return entry


def add_note(
    session: Session,
    settings: Settings,
    *,
    ticket_ref: str | int,
    agent_email: str,
    body: str,
    now: datetime,
) -> ConversationEntry:
    """An internal note on the conversation: agents see it, nobody is mailed, the process is not
    told. Who may write one, and how long it may be, is as for :func:`reply_as_agent`."""
    ticket, agent = _agent_on(session, settings, ticket_ref, agent_email)
    entry = _agent_entry(session, ticket, agent, "note", _text(body, "a note"), "note_added", now)
    ticket.updated_at = now
    return entry


#: The longest reply or note an agent may write (characters).
MAX_TEXT = 100_000


def _agent_on(
    session: Session, settings: Settings, ticket_ref: str | int, agent_email: str
) -> tuple[Ticket, User]:
    """The ticket and the agent, who must be allowed to work on it."""
    ticket = get_ticket(session, settings, ticket_ref)
    agent = session.scalar(select(User).where(User.email == normalise_email(agent_email)))
    if agent is None:
        raise NotFound(f"no user {agent_email}")
    if not may_work_on(session, agent, ticket):
        raise PermissionDenied(f"{agent.email} is not in the group of {reference(settings, ticket)}")
    return ticket, agent


def _text(body: str, what: str) -> str:
    body = body.strip()
    if not body:
        raise InvalidInput(f"{what} needs some text")
    if len(body) > MAX_TEXT:
        raise InvalidInput(f"{what} may be at most {MAX_TEXT:,} characters")
    return body


def may_work_on(session: Session, user: User, ticket: Ticket) -> bool:
    """Admins work on every ticket; others on their groups' tickets, ones they hold, or ungrouped ones."""
    if user.role == "admin" or ticket.group_id is None or ticket.assignee_id == user.id:
        return True
    if ticket.group_id in {group.id for group in user.groups}:
        return True
    holds = select(HumanTask.id).where(
        HumanTask.ticket_id == ticket.id, HumanTask.state == "open", HumanTask.assignee_id == user.id
    )
    return session.scalar(holds.limit(1)) is not None


def tell_process(
    session: Session,
    settings: Settings,
    ticket: Ticket,
    name: str,
    payload: dict[str, object],
    *,
    now: datetime,
    actor: str,
) -> None:
    """Deliver workflow message ``name`` to the ticket's instance, buffered first: if no catch
    event waits for it now, it waits for one (or is settled with the reason none will)."""
    row = instance_of(session, ticket, lock=True)
    message = buffer_message(session, row, name, payload, now)
    try:
        with session.begin_nested():
            # An empty action: advance() offers buffered messages to whatever waits now, and
            # settles them with a reason when the process has already finished.
            advance(session, settings, row, lambda instance, functions: (None, []), now=now, actor=actor)
    except EngineError as exc:
        # The conversation entry and the buffered message stay (the savepoint's audit rows went
        # with it); the instance waits for a fix.
        mark_failed(session, row, str(exc), now=now, actor=actor)
        return
    if message.state == "pending" and _has_open_tasks(session, row):
        # No catch waits because agents are working on the ticket: they see the message in the
        # conversation. Keeping it would let it fire a later catch ("waiting on customer")
        # for a message the agent already had in front of them.
        message.state = "noted"
        message.reason = (
            "no catch event waited; agents were working on the ticket and see it in the conversation"
        )


def _has_open_tasks(session: Session, row: WorkflowInstance) -> bool:
    query = select(HumanTask.id).where(HumanTask.instance_id == row.id, HumanTask.state == "open").limit(1)
    return session.scalar(query) is not None


@dataclass(frozen=True)
class TicketView:
    ticket: Ticket
    reference: str
    instance: WorkflowInstance
    open_tasks: list[HumanTask]
    timeline: list[AuditEvent]
    conversation: list[ConversationEntry]
    sla: list[SlaClock]


def ticket_view(session: Session, settings: Settings, ref: str | int) -> TicketView:
    """Everything ``ticket show`` and the ticket page display, without loading the workflow."""
    ticket = get_ticket(session, settings, ref)
    tasks = session.scalars(
        select(HumanTask)
        .where(HumanTask.ticket_id == ticket.id, HumanTask.state == "open")
        .order_by(HumanTask.created_at)
    ).all()
    timeline = session.scalars(
        select(AuditEvent).where(AuditEvent.ticket_id == ticket.id).order_by(AuditEvent.id)
    ).all()
    conversation = session.scalars(
        select(ConversationEntry)
        .where(ConversationEntry.ticket_id == ticket.id)
        .order_by(ConversationEntry.id)
    ).all()
    sla = session.scalars(select(SlaClock).where(SlaClock.ticket_id == ticket.id).order_by(SlaClock.id)).all()
    return TicketView(
        ticket,
        reference(settings, ticket),
        instance_of(session, ticket),
        list(tasks),
        list(timeline),
        list(conversation),
        list(sla),
    )


def reference(settings: Settings, ticket: Ticket) -> str:
    return f"{settings.ticket_prefix}-{ticket.number}"
