"""What the agent's ticket page shows, in a fixed number of queries however old the ticket is.

Nothing here loads a workflow: open tasks come from the human-task projection, the process's
position from the audit trail (and, for the diagram only, a read of the stored state's JSON).
The mail an entry came from is parsed for its full text and whether it had HTML; that summary
is kept per content hash (mail is immutable), so a second view loads no mail bytes at all.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BindParameter, bindparam, select
from sqlalchemy.orm import Session, aliased

from engine.state import waiting_elements

from . import sla
from .calendars import ALWAYS_OPEN
from .inbox import CLOCK_COLUMNS
from .mailparse import parse, sanitise_html
from .models import (
    Attachment,
    AuditEvent,
    CannedResponse,
    ConversationEntry,
    Customer,
    DefinitionContent,
    Group,
    HumanTask,
    MailMessage,
    OutboxMessage,
    ProcessVersion,
    SlaClock,
    Ticket,
    TicketParticipant,
    User,
    WorkflowInstance,
)
from .settings import Settings
from .tickets import reference

#: A row of a plain select (columns by name); typed loosely, as Jinja reads it.
PlainRow = Any
#: The audit trail shows this many of the latest events (``lanedesk ticket show`` has them all).
TIMELINE_LIMIT = 500
#: Audit actions that mean the process passed the element named in ``element_id``.
PASSED = ("step", "task_completed", "timer_fired")


@dataclass(frozen=True)
class MailFacts:
    """What the page needs of a stored mail: its whole text, the reply part, whether it had HTML."""

    text: str
    reply_text: str
    has_html: bool


@dataclass(frozen=True)
class Entry:
    entry: PlainRow  # id, kind, body, created_at, mail_id of a conversation entry
    who: str
    address: str | None
    shown: str  # the text shown (a mail's reply without quotes and signature)
    original: str | None  # the mail's whole text, when it says more than ``shown``
    has_html: bool
    attachments: list[PlainRow]  # id, filename, content_type, size
    deliveries: list[PlainRow]  # the outgoing mail that carried an agent's reply


@dataclass(frozen=True)
class ClockView:
    clock: PlainRow  # the SLA clock's columns
    used: float  # share of the target used (business time)
    left_seconds: int | None  # running: until due (wall clock, negative when overdue); paused: business time

    @property
    def overdue(self) -> bool:
        return self.clock.state == "breached" or (
            self.clock.state in ("running", "paused") and self.used >= 1
        )

    @property
    def percent(self) -> int:
        return round(self.used * 100)


@dataclass(frozen=True)
class InstanceFacts:
    id: int
    status: str
    error: str | None
    process_id: str
    version: int
    content_hash: str
    created_at: datetime


@dataclass(frozen=True)
class TicketPage:
    """What the page shows besides the ticket itself; lists hold plain rows (no ORM objects)."""

    ticket: Ticket
    reference: str
    assignee: str | None  # the ticket's assignee's name
    participants: list[str]
    instance: InstanceFacts | None
    entries: list[Entry]
    tasks: list[PlainRow]  # id, name, assignee_id, created_at, group_name, assignee_name
    clocks: list[ClockView]
    outbox: list[PlainRow]
    timeline: list[PlainRow]  # actor, action, element_id, detail, created_at
    timeline_truncated: bool
    canned: list[PlainRow]  # id, title, body


# Built once: statements run on the session's connection as plain rows, with no ORM objects,
# identity map or ORM events (this page is read on every ticket view).
_TICKET: BindParameter[int] = bindparam("ticket_id")
_TIMELINE = (
    select(
        AuditEvent.actor, AuditEvent.action, AuditEvent.element_id, AuditEvent.detail, AuditEvent.created_at
    )
    .where(AuditEvent.ticket_id == _TICKET)
    .order_by(AuditEvent.id.desc())
    .limit(TIMELINE_LIMIT + 1)
)
_ASSIGNEE = select(User.name).where(User.id == bindparam("user_id"))
_PARTICIPANTS = (
    select(TicketParticipant.email)
    .where(TicketParticipant.ticket_id == _TICKET)
    .order_by(TicketParticipant.id)
)
_INSTANCE = (
    select(
        WorkflowInstance.id,
        WorkflowInstance.status,
        WorkflowInstance.error,
        ProcessVersion.process_id,
        ProcessVersion.version,
        ProcessVersion.content_hash,
        WorkflowInstance.created_at,
    )
    .join(ProcessVersion, ProcessVersion.id == WorkflowInstance.process_version_id)
    .where(WorkflowInstance.ticket_id == _TICKET)
    .order_by(WorkflowInstance.id.desc())
    .limit(1)
)
_OUTBOX = (
    select(
        OutboxMessage.id,
        OutboxMessage.template,
        OutboxMessage.recipient,
        OutboxMessage.state,
        OutboxMessage.reason,
        OutboxMessage.last_error,
        OutboxMessage.payload,
        OutboxMessage.subject,
        OutboxMessage.attempts,
        OutboxMessage.created_at,
        OutboxMessage.sent_at,
    )
    .where(OutboxMessage.ticket_id == _TICKET)
    .order_by(OutboxMessage.id)
)
_AUTHOR, _CUSTOMER = aliased(User), aliased(Customer)
_ENTRIES = (
    select(
        ConversationEntry.id,
        ConversationEntry.kind,
        ConversationEntry.body,
        ConversationEntry.created_at,
        ConversationEntry.mail_id,
        _AUTHOR.name.label("author"),
        _AUTHOR.email.label("author_email"),
        _CUSTOMER.name.label("customer"),
        _CUSTOMER.email.label("customer_email"),
    )
    .outerjoin(_AUTHOR, _AUTHOR.id == ConversationEntry.author_id)
    .outerjoin(_CUSTOMER, _CUSTOMER.id == ConversationEntry.customer_id)
    .where(ConversationEntry.ticket_id == _TICKET)
    .order_by(ConversationEntry.created_at, ConversationEntry.id)
)
_ATTACHMENTS = (
    select(Attachment.id, Attachment.mail_id, Attachment.filename, Attachment.content_type, Attachment.size)
    .where(Attachment.ticket_id == _TICKET)
    .order_by(Attachment.id)
)
_HOLDER, _TASK_GROUP = aliased(User), aliased(Group)
_TASKS = (
    select(
        HumanTask.id,
        HumanTask.name,
        HumanTask.assignee_id,
        HumanTask.created_at,
        _TASK_GROUP.name.label("group_name"),
        _HOLDER.name.label("assignee_name"),
    )
    .outerjoin(_TASK_GROUP, _TASK_GROUP.id == HumanTask.group_id)
    .outerjoin(_HOLDER, _HOLDER.id == HumanTask.assignee_id)
    .where(HumanTask.ticket_id == _TICKET, HumanTask.state == "open")
    .order_by(HumanTask.created_at, HumanTask.id)
)
_CLOCKS = (
    select(*CLOCK_COLUMNS, SlaClock.paused_at, SlaClock.stopped_at)
    .where(SlaClock.ticket_id == _TICKET)
    .order_by(SlaClock.id)
)
_CANNED = select(CannedResponse.id, CannedResponse.title, CannedResponse.body).order_by(CannedResponse.title)


def ticket_page(session: Session, settings: Settings, ticket: Ticket, *, now: datetime) -> TicketPage:
    """Everything the ticket page shows of ``ticket`` (the caller has checked who may see it)."""
    run = session.connection().execute
    at = {"ticket_id": ticket.id}
    outbox = list(run(_OUTBOX, at))
    timeline = list(run(_TIMELINE, at))
    assignee = (
        run(_ASSIGNEE, {"user_id": ticket.assignee_id}).scalar() if ticket.assignee_id is not None else None
    )
    return TicketPage(
        ticket=ticket,
        reference=reference(settings, ticket),
        assignee=assignee,
        participants=list(run(_PARTICIPANTS, at).scalars()),
        instance=instance_facts(session, ticket),
        entries=_entries(session, ticket, outbox),
        tasks=list(run(_TASKS, at)),
        clocks=_clocks(session, settings, ticket, now),
        outbox=outbox,
        timeline=timeline[:TIMELINE_LIMIT][::-1],
        timeline_truncated=len(timeline) > TIMELINE_LIMIT,
        canned=list(run(_CANNED)),
    )


def instance_facts(session: Session, ticket: Ticket) -> InstanceFacts | None:
    """The ticket's (latest) workflow instance and the version it is pinned to, without its state."""
    row = session.connection().execute(_INSTANCE, {"ticket_id": ticket.id}).first()
    return InstanceFacts(*row) if row is not None else None


def _entries(session: Session, ticket: Ticket, outbox: list[PlainRow]) -> list[Entry]:
    run = session.connection().execute
    rows = list(run(_ENTRIES, {"ticket_id": ticket.id}))
    facts = mail_facts(session, {row.mail_id for row in rows if row.mail_id is not None})
    attachments: dict[int, list[PlainRow]] = {}
    for item in run(_ATTACHMENTS, {"ticket_id": ticket.id}):
        attachments.setdefault(item.mail_id, []).append(item)
    deliveries: dict[int, list[PlainRow]] = {}
    for message in outbox:
        entry_id = (message.payload or {}).get("entry_id")
        if isinstance(entry_id, int):
            deliveries.setdefault(entry_id, []).append(message)
    found = []
    for row in rows:
        mail = facts.get(row.mail_id) if row.mail_id is not None else None
        who, address = _who(row.kind, row.author, row.author_email, row.customer, row.customer_email)
        shown = row.body
        if mail is not None and mail.reply_text and row.body.strip() == mail.text.strip():
            shown = mail.reply_text  # the opening mail keeps its whole text: show the new part
        original = mail.text if mail is not None and mail.text.strip() != shown.strip() else None
        found.append(
            Entry(
                entry=row,
                who=who,
                address=address,
                shown=shown,
                original=original,
                has_html=mail is not None and mail.has_html,
                attachments=attachments.get(row.mail_id, []) if row.mail_id is not None else [],
                deliveries=deliveries.get(row.id, []),
            )
        )
    return found


def _who(
    kind: str, author: str | None, author_email: str | None, customer: str | None, customer_email: str | None
) -> tuple[str, str | None]:
    if author is not None:
        return author, author_email
    if customer is not None:
        return customer, customer_email
    return ("Automatic message" if kind == "auto" else "Unknown sender"), None


# -- the mail behind entries -----------------------------------------------------------------
_FACTS_KEPT = 1024
#: Characters of a mail's text shown on the page (the original mail can be downloaded whole).
TEXT_SHOWN = 100_000
_facts: OrderedDict[str, MailFacts] = OrderedDict()
_facts_lock = threading.Lock()


def mail_facts(session: Session, mail_ids: set[int]) -> dict[int, MailFacts]:
    """Text, reply and HTML presence of stored mails, parsed once per content (two queries)."""
    if not mail_ids:
        return {}
    query = select(MailMessage.id, MailMessage.content_hash).where(MailMessage.id.in_(mail_ids))
    hashes = dict(session.execute(query).all())
    known: dict[int, MailFacts] = {}
    with _facts_lock:
        for mail_id, digest in hashes.items():
            if digest in _facts:
                _facts.move_to_end(digest)
                known[mail_id] = _facts[digest]
    missing = [mail_id for mail_id in hashes if mail_id not in known]
    if missing:
        raws = session.execute(select(MailMessage.id, MailMessage.raw).where(MailMessage.id.in_(missing)))
        for mail_id, raw in raws:
            # Attachments are stored on their own rows; leaving them out keeps parsing cheap.
            parsed = parse(raw, max_attachment_bytes=0)
            known[mail_id] = MailFacts(_capped(parsed.text), _capped(parsed.reply_text), bool(parsed.html))
        with _facts_lock:
            for mail_id in missing:
                if mail_id in known:
                    _facts[hashes[mail_id]] = known[mail_id]
            while len(_facts) > _FACTS_KEPT:
                _facts.popitem(last=False)
    return known


def _capped(text: str) -> str:
    if len(text) <= TEXT_SHOWN:
        return text
    return text[:TEXT_SHOWN] + "\n\n[… cut here: the whole message is in the original mail]"


def forget_mail_facts() -> None:
    """Empty the parsed-mail cache (tests that count queries start cold)."""
    with _facts_lock:
        _facts.clear()


def original_html(mail: MailMessage) -> str | None:
    """The mail's HTML body, sanitised for a sandboxed frame; None when it had none."""
    parsed = parse(mail.raw, max_attachment_bytes=0)
    return sanitise_html(parsed.html) if parsed.html else None


# -- SLA clocks ----------------------------------------------------------------------------
def _clocks(session: Session, settings: Settings, ticket: Ticket, now: datetime) -> list[ClockView]:
    config = sla.load_sla_config(settings)
    views = []
    clock: PlainRow  # sla.elapsed reads a row's columns as it reads a clock's attributes
    for clock in session.connection().execute(_CLOCKS, {"ticket_id": ticket.id}):
        calendar = config.calendar(clock.calendar, ALWAYS_OPEN.name)
        used_seconds = sla.elapsed(clock, calendar, now)
        used = used_seconds / clock.target_seconds if clock.target_seconds > 0 else 0.0
        left: int | None = None
        if clock.state == "running" and clock.due_at is not None:
            left = int((clock.due_at - now).total_seconds())
        elif clock.state == "paused":
            left = clock.target_seconds - used_seconds
        views.append(ClockView(clock, used, left))
    return views


# -- the diagram ---------------------------------------------------------------------------
@dataclass(frozen=True)
class DiagramState:
    process_id: str
    version: int
    status: str
    current: list[str]  # open user tasks and the events the instance waits at
    completed: list[str]  # elements the process has passed


def pinned_diagram(session: Session, ticket: Ticket) -> tuple[bytes, InstanceFacts] | None:
    """The BPMN XML of the version the ticket's instance is pinned to."""
    facts = instance_facts(session, ticket)
    if facts is None:
        return None
    xml = session.scalar(
        select(DefinitionContent.xml).where(DefinitionContent.content_hash == facts.content_hash)
    )
    return (xml, facts) if xml is not None else None


def diagram_state(session: Session, ticket: Ticket) -> DiagramState | None:
    """Where the ticket's process stands, for markers on its diagram (no workflow is loaded)."""
    facts = instance_facts(session, ticket)
    if facts is None:
        return None
    state = session.scalar(select(WorkflowInstance.state).where(WorkflowInstance.id == facts.id)) or ""
    tasks = session.execute(
        select(HumanTask.element_id, HumanTask.state).where(
            HumanTask.instance_id == facts.id, HumanTask.state.in_(("open", "completed"))
        )
    ).all()
    open_tasks: set[str] = set()
    done_tasks: set[str] = set()
    for element_id, task_state in tasks:
        (open_tasks if task_state == "open" else done_tasks).add(element_id)
    passed = session.scalars(
        select(AuditEvent.element_id)
        .where(
            AuditEvent.ticket_id == ticket.id,
            AuditEvent.element_id.is_not(None),
            AuditEvent.action.in_(PASSED),
            AuditEvent.created_at >= facts.created_at,
        )
        .distinct()
    )
    current = set() if facts.status == "completed" else open_tasks | set(waiting_elements(state))
    completed = ({e for e in passed if e} | done_tasks) - current
    return DiagramState(facts.process_id, facts.version, facts.status, sorted(current), sorted(completed))
