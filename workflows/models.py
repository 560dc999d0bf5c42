"""SQLAlchemy 2 models: the desk's tables. History lives here, not in workflow state."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import chain
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import DeclarativeBase, Mapped, ORMExecuteState, Session, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on every backend (SQLite has no zones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: Ticket numbers start at 1001 so the first ticket is not "LD-1".
TICKET_NUMBER_OFFSET = 1000


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


membership = Table(
    "membership",
    Base.metadata,
    Column("user_id", ForeignKey("user_account.id", ondelete="CASCADE"), primary_key=True),
    Column("group_id", ForeignKey("agent_group.id", ondelete="CASCADE"), primary_key=True),
)


class Group(Base):
    __tablename__ = "agent_group"
    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    #: Notified when a ticket is escalated into the group (falls back to every member).
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))


class User(Base):
    __tablename__ = "user_account"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))  # agent | owner | admin
    password_hash: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]
    groups: Mapped[list[Group]] = relationship(secondary=membership, lazy="selectin")


class ApiToken(Base):
    """A token for ``/api/v1`` (``Authorization: Bearer ld_...``), stored as its SHA-256."""

    __tablename__ = "api_token"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class LoginFailure(Base):
    """A failed login, for rate limiting by account and by address (rows older than a day go)."""

    __tablename__ = "login_failure"
    __table_args__ = (
        Index("ix_login_failure_email", "email", "created_at"),
        Index("ix_login_failure_ip", "ip", "created_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    ip: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]


class CannedResponse(Base):
    """A reply text agents insert into the composer (admins maintain them)."""

    __tablename__ = "canned_response"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200), unique=True)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class Customer(Base):
    __tablename__ = "customer"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    #: Set when a delivery status notification says mail to this address failed for good:
    #: no automatic mail goes there any more (agents still see the address).
    bounced_at: Mapped[datetime | None]
    bounce_reason: Mapped[str | None] = mapped_column(Text)
    #: The language mail to this customer is written in (None: the desk's default).
    language: Mapped[str | None] = mapped_column(String(16))


class TicketParticipant(Base):
    """Someone besides the requester who may write on a ticket (the Cc of the opening mail)."""

    __tablename__ = "ticket_participant"
    __table_args__ = (UniqueConstraint("ticket_id", "email"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(16))  # cc
    created_at: Mapped[datetime]


class DefinitionContent(Base):
    """A diagram's bytes, stored once per content hash however many versions point at it."""

    __tablename__ = "definition_content"
    content_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    xml: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int]


class ProcessVersion(Base):
    """One immutable deployed version of a process; instances are pinned to it."""

    __tablename__ = "process_version"
    __table_args__ = (UniqueConstraint("process_id", "version"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    process_id: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int]
    content_hash: Mapped[str] = mapped_column(ForeignKey("definition_content.content_hash"))
    filename: Mapped[str] = mapped_column(String(255))
    note: Mapped[str] = mapped_column(Text, default="")
    deployed_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    deployed_at: Mapped[datetime]


class ProcessDraft(Base):
    """A diagram a process owner is working on in the studio; every save is a revision."""

    __tablename__ = "process_draft"
    id: Mapped[int] = mapped_column(primary_key=True)
    process_id: Mapped[str] = mapped_column(String(200), index=True)
    title: Mapped[str] = mapped_column(String(200))
    #: The deployed version it was opened from (None: uploaded or new).
    based_on_id: Mapped[int | None] = mapped_column(ForeignKey("process_version.id"))
    #: The newest revision's number; a save must name it (two owners saving at once: one wins).
    revision: Mapped[int] = mapped_column(default=0)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    #: Set when the draft was deployed (as that version) or discarded; it is then read-only.
    closed_at: Mapped[datetime | None]
    deployed_as_id: Mapped[int | None] = mapped_column(ForeignKey("process_version.id"))


class ProcessDraftRevision(Base):
    """One saved state of a draft, kept so an owner can go back to any earlier save."""

    __tablename__ = "process_draft_revision"
    __table_args__ = (UniqueConstraint("draft_id", "revision"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    draft_id: Mapped[int] = mapped_column(ForeignKey("process_draft.id"))
    revision: Mapped[int]
    xml: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int]
    saved_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    saved_at: Mapped[datetime]


class Ticket(Base):
    __tablename__ = "ticket"
    id: Mapped[int] = mapped_column(primary_key=True)
    subject: Mapped[str] = mapped_column(String(998))
    status: Mapped[str] = mapped_column(String(32), index=True)
    priority: Mapped[str] = mapped_column(String(8))
    category: Mapped[str | None] = mapped_column(String(64))
    requester_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), index=True)
    group_id: Mapped[int | None] = mapped_column(ForeignKey("agent_group.id"))
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    created_at: Mapped[datetime]
    #: Indexed for the "recently updated" ticket list (workflows.search).
    updated_at: Mapped[datetime] = mapped_column(index=True)
    closed_at: Mapped[datetime | None]
    #: The address the ticket came in through (SLA policies and calendars may depend on it).
    mailbox: Mapped[str | None] = mapped_column(String(320))
    #: The language of the ticket's mail to its customer (None: the customer's, else the default).
    language: Mapped[str | None] = mapped_column(String(16))
    #: When its most urgent running SLA clock is due (past: overdue): the inbox's sort key.
    sla_due_at: Mapped[datetime | None] = mapped_column(index=True)
    requester: Mapped[Customer] = relationship(lazy="joined")
    group: Mapped[Group | None] = relationship(lazy="joined")

    @property
    def number(self) -> int:
        """The human ticket number (``LD-1042``): derived from the id, so it can never collide."""
        return self.id + TICKET_NUMBER_OFFSET


class WorkflowInstance(Base):
    """A ticket's running process: serialized state, version counter, next wake time."""

    __tablename__ = "workflow_instance"
    __table_args__ = (
        Index("ix_workflow_instance_due", "status", "next_wake_at"),
        # A ticket's newest instance in one probe, statistics or not (migration 0010).
        Index("ix_workflow_instance_ticket_newest", "ticket_id", "id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"))
    process_version_id: Mapped[int] = mapped_column(ForeignKey("process_version.id"))
    state: Mapped[str] = mapped_column(Text)
    revision: Mapped[int] = mapped_column(default=1)
    status: Mapped[str] = mapped_column(String(16))  # running | completed | failed
    error: Mapped[str | None] = mapped_column(Text)
    next_wake_at: Mapped[datetime | None]
    #: Set by the scan that hands a due instance to a worker: no other scan hands it out again
    #: before this time. A worker that dies mid-wake delays the timer by the lease, never loses it.
    wake_claimed_until: Mapped[datetime | None]
    #: Wakes in a row that failed for a reason outside the diagram (database, conflict); the
    #: lease grows with it, so a broken instance is retried with back-off, not every scan.
    wake_failures: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    process_version: Mapped[ProcessVersion] = relationship()  # not joined: rows are locked FOR UPDATE
    # Every UPDATE says "WHERE revision = <the one we read>": a stale writer fails loudly
    # (StaleDataError → Conflict) instead of overwriting a newer state.
    __mapper_args__ = {"version_id_col": revision}


class HumanTask(Base):
    """Projection of READY user tasks, so no inbox query ever loads a workflow."""

    __tablename__ = "human_task"
    __table_args__ = (
        Index("ix_human_task_inbox", "state", "group_id"),
        # An instance's open tasks in one probe, statistics or not (migration 0010).
        Index("ix_human_task_instance_state", "instance_id", "state"),
        # The inbox picks a page of open tasks from this table alone (workflows/inbox.py).
        Index(
            "ix_human_task_open_due",
            "sla_due_at",
            "created_at",
            postgresql_where=text("state = 'open'"),
            sqlite_where=text("state = 'open'"),
            postgresql_include=["group_id", "assignee_id"],
        ),
        Index(
            "ix_human_task_open_group",
            "group_id",
            "assignee_id",
            postgresql_where=text("state = 'open'"),
            sqlite_where=text("state = 'open'"),
            postgresql_include=["sla_due_at", "created_at"],
        ),
        Index(
            "ix_human_task_open_assignee",
            "assignee_id",
            "sla_due_at",
            "created_at",
            postgresql_where=text("state = 'open'"),
            sqlite_where=text("state = 'open'"),
        ),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # SpiffWorkflow task uuid
    instance_id: Mapped[int] = mapped_column(ForeignKey("workflow_instance.id"))
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), index=True)
    element_id: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(500))
    lane: Mapped[str | None] = mapped_column(String(200))
    group_id: Mapped[int | None] = mapped_column(ForeignKey("agent_group.id"))
    form: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))  # open | completed | cancelled
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    completed_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    created_at: Mapped[datetime]
    claimed_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    #: The ticket's ``sla_due_at`` while the task is open: the inbox sorts by it without a join.
    sla_due_at: Mapped[datetime | None]
    group: Mapped[Group | None] = relationship(lazy="joined")
    assignee: Mapped[User | None] = relationship(foreign_keys=[assignee_id], lazy="joined")
    ticket: Mapped[Ticket] = relationship(lazy="select")


class ConversationEntry(Base):
    __tablename__ = "conversation_entry"
    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # inbound | outbound | note
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customer.id"))
    author_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    #: The mail this entry came from (its full body, headers and attachments are there).
    mail_id: Mapped[int | None] = mapped_column(ForeignKey("mail_message.id"), index=True)


class MailMessage(Base):
    """One inbound message: its raw bytes first (durable), then what processing made of it.

    ``state``: stored (waiting to be processed) | processed | duplicate | auto_generated |
    bounce | quarantined. ``decision`` says why it went where it went (threading, refusals).
    """

    __tablename__ = "mail_message"
    __table_args__ = (
        Index("ix_mail_message_state", "state", "id"),
        Index("ix_mail_message_sender", "sender", "id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    message_id: Mapped[str | None] = mapped_column(String(998), index=True)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int]
    source: Mapped[str] = mapped_column(String(16))  # mailgate | smtp | lmtp | imap | file
    mailbox: Mapped[str | None] = mapped_column(String(320))
    envelope_from: Mapped[str | None] = mapped_column(String(998))
    envelope_to: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: The From address as parsed (lower case); None until processed.
    sender: Mapped[str | None] = mapped_column(String(320))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    decision: Mapped[str | None] = mapped_column(Text)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("ticket.id"), index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    received_at: Mapped[datetime]
    processed_at: Mapped[datetime | None]


class Attachment(Base):
    """A file that came with a mail (sanitised name; the bytes stay with the raw mail too)."""

    __tablename__ = "attachment"
    id: Mapped[int] = mapped_column(primary_key=True)
    mail_id: Mapped[int] = mapped_column(ForeignKey("mail_message.id"), index=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("ticket.id"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int]
    data: Mapped[bytes] = mapped_column(LargeBinary)


class AuditEvent(Base):
    """Who did what, when, on which task, with which data: every step of every ticket."""

    __tablename__ = "audit_event"
    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("ticket.id"), index=True)
    actor: Mapped[str] = mapped_column(String(400))  # "user:<email>", "customer:<email>", "timer", "system"
    action: Mapped[str] = mapped_column(String(64))
    element_id: Mapped[str | None] = mapped_column(String(200))
    task_id: Mapped[str | None] = mapped_column(String(36))
    detail: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime]


class OutboxMessage(Base):
    """One outgoing mail to one recipient, written in the transaction of the step that caused it.

    States: ``queued`` (due at ``next_attempt_at``) → ``sending`` (a worker holds it until
    ``lease_until``; the server has not been told to deliver) → ``sent`` (committed just before
    the final end-of-data, so a crash can never cause a second copy) | ``failed`` (permanent
    refusal, or retries exhausted) | ``suppressed`` (a loop or rate rule held it back; ``reason``
    says which). The message itself (``raw``) is rendered once, on the first delivery attempt,
    and re-sent byte for byte: the Message-ID never changes.
    """

    __tablename__ = "outbox_message"
    __table_args__ = (
        Index("ix_outbox_message_state", "state", "id"),
        Index("ix_outbox_message_due", "state", "next_attempt_at"),
        Index("ix_outbox_message_recipient", "recipient", "created_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("ticket.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # customer_mail | agent_reply | agent_notification
    template: Mapped[str] = mapped_column(String(100))
    recipient: Mapped[str] = mapped_column(String(320))
    message_id: Mapped[str] = mapped_column(String(255), unique=True)
    #: RFC 3834 Auto-Submitted value of automatic mail; None for mail a person wrote.
    auto_submitted: Mapped[str | None] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))  # queued | sending | sent | failed | suppressed
    reason: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    language: Mapped[str | None] = mapped_column(String(16))
    subject: Mapped[str | None] = mapped_column(String(998))
    sender: Mapped[str | None] = mapped_column(String(320))  # the envelope sender (MAIL FROM)
    raw: Mapped[bytes | None] = mapped_column(LargeBinary)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    server_reply: Mapped[str | None] = mapped_column(Text)  # the server's answer to end-of-data
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]


class MailTemplate(Base):
    """An administrator's version of a bundled mail template (one per name and language)."""

    __tablename__ = "mail_template"
    __table_args__ = (UniqueConstraint("name", "language"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    language: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(998))
    text: Mapped[str] = mapped_column(Text)
    html: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime]
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))


class PendingMessage(Base):
    """An inbound workflow message, kept until a catch event takes it (or why none did)."""

    __tablename__ = "pending_message"
    __table_args__ = (Index("ix_pending_message_open", "instance_id", "state"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("workflow_instance.id"))
    name: Mapped[str] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16))  # pending | delivered | unclaimed
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]


class SlaClock(Base):
    """One SLA clock of a ticket (first_response, next_response, resolution), in business time.

    ``elapsed_seconds`` is the business time consumed before ``running_since``; a running clock
    is due at ``calendar.add(running_since, target_seconds - elapsed_seconds)``. Pausing adds the
    business time since ``running_since`` to ``elapsed_seconds``, so paused time is given back
    and a new target (priority change) applies to what is left.
    """

    __tablename__ = "sla_clock"
    __table_args__ = (UniqueConstraint("ticket_id", "name"), Index("ix_sla_clock_report", "state", "due_at"))
    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"))
    name: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))  # running | paused | met | breached | stopped
    policy: Mapped[str] = mapped_column(String(64), default="")
    calendar: Mapped[str] = mapped_column(String(64), default="")
    target_seconds: Mapped[int]
    elapsed_seconds: Mapped[int] = mapped_column(default=0)
    running_since: Mapped[datetime | None]
    started_at: Mapped[datetime]
    paused_at: Mapped[datetime | None]
    paused_seconds: Mapped[int] = mapped_column(default=0)  # wall-clock time spent paused
    due_at: Mapped[datetime | None]
    breached_at: Mapped[datetime | None]
    stopped_at: Mapped[datetime | None]


class InboxRevision(Base):
    """One row: a number that grows with every committed change to what an inbox shows.

    Incremented as the last statement before COMMIT of any transaction that wrote a task, a
    ticket, an SLA clock, a customer, an agent or a group (the listeners below), so its row lock
    orders those commits: a reader who sees revision *n* also sees every change counted in it.
    Timestamps cannot do this (a transaction that took its time stamp first may commit last).
    Only writes through an ORM ``Session`` count: SQL sent past it (psql, a bare ``Connection``)
    must run ``UPDATE inbox_revision SET value = value + 1`` too, or kept inbox pages stay as
    they were until the minute turns.
    """

    __tablename__ = "inbox_revision"
    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


#: Rows of ``inbox_revision``: 1 counts what an inbox shows; 2 what only a ticket page shows
#: (workflows/page_revision.py). A ticket page is kept under both.
INBOX_ROW, PAGE_ROW = 1, 2
#: The tables an inbox page is made of (membership: an agent's groups decide what they see).
INBOX_TABLES = frozenset(
    {"human_task", "ticket", "sla_clock", "customer", "user_account", "agent_group", "membership"}
)
#: What a ticket page shows besides: conversation, attachments, outgoing mail, the audit trail,
#: Cc participants, the workflow instance and its version, canned responses. Mail
#: (``mail_message``) is left out: stored mail never changes, and the page reaches it through
#: the conversation entries, which count.
PAGE_TABLES = frozenset(
    {
        "conversation_entry",
        "attachment",
        "outbox_message",
        "audit_event",
        "ticket_participant",
        "workflow_instance",
        "process_version",
        "canned_response",
    }
)
_ROW_CLASSES: tuple[tuple[int, tuple[type, ...]], ...] = (
    (INBOX_ROW, (HumanTask, Ticket, SlaClock, Customer, User, Group)),
    (
        PAGE_ROW,
        (
            ConversationEntry,
            Attachment,
            OutboxMessage,
            AuditEvent,
            TicketParticipant,
            WorkflowInstance,
            ProcessVersion,
            CannedResponse,
        ),
    ),
)
_ROW_OF_TABLE = {**dict.fromkeys(INBOX_TABLES, INBOX_ROW), **dict.fromkeys(PAGE_TABLES, PAGE_ROW)}
_CHANGED = "lanedesk_revisions_changed"  # session.info: the rows this transaction must bump


def _changed(session: Session) -> set[int]:
    found: set[int] = session.info.setdefault(_CHANGED, set())
    return found


@event.listens_for(Session, "after_flush")
def _note_flush(session: Session, _context: Any) -> None:
    # Still the pre-flush lists here. Conservative: an object in `dirty` may have no net change.
    objects = list(chain(session.new, session.dirty, session.deleted))
    for row, classes in _ROW_CLASSES:
        if any(isinstance(obj, classes) for obj in objects):
            _changed(session).add(row)


@event.listens_for(Session, "do_orm_execute")
def _note_statement(state: ORMExecuteState) -> None:
    # update(HumanTask)... (claiming, SLA due times) and the audit journal's INSERT never pass
    # through a flush.
    if state.is_update or state.is_delete or state.is_insert:
        table = getattr(state.statement, "table", None)
        row = _ROW_OF_TABLE.get(getattr(table, "name", None) or "")
        if row is not None:
            _changed(state.session).add(row)


@event.listens_for(Session, "before_commit")
def _bump_revisions(session: Session) -> None:
    # Flush first: once a revision row is locked, this transaction waits for no other lock
    # (no deadlock with a transaction holding a task's row and waiting for the revision), and
    # it holds the lock only for the COMMIT itself. The audit journal was written just before
    # (workflows/audit.py listens first), so its rows count here.
    session.flush()
    rows = sorted(session.info.pop(_CHANGED, ()))
    if rows:
        connection = session.connection()
        # One statement for both rows, in id order: every writer locks row 1 before row 2 (no
        # deadlock between two of them); a missing row comes back, and two writers finding it
        # missing at once cannot both insert it.
        upsert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
        connection.execute(
            upsert(InboxRevision)
            .values([{"id": row, "value": 1} for row in rows])
            .on_conflict_do_update(index_elements=[InboxRevision.id], set_={"value": InboxRevision.value + 1})
        )


@event.listens_for(Session, "after_rollback")
def _forget_changes(session: Session) -> None:
    session.info.pop(_CHANGED, None)
