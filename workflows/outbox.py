"""Outgoing mail: a row written with the step that caused it, delivered after commit, once.

Queueing decides, in the step's own transaction, whether automatic mail may go at all (the
loop and rate rules below); a held-back mail is kept as ``suppressed`` with the rule that held
it. Delivery (:func:`deliver`) runs later in a worker:

1. claim: ``queued`` → ``sending`` with a lease, the attempt counted, the message rendered once;
2. transfer the message to the server, everything but the final end-of-data;
3. commit ``sent`` (guarded by the attempt number: a worker whose lease was taken over finds
   its row changed, drops the connection, and the server discards the half-sent message);
4. send end-of-data and read the server's answer.

A worker that dies during 1-3 leaves ``sending``; the sweep puts the row back to ``queued``
when the lease runs out and it is sent again, safely, because the server never accepted the
first transfer. A worker that dies between 3 and 4 leaves ``sent`` without the server's answer:
the sweep marks it *unconfirmed* and does not send it again. So no mail is ever delivered
twice; the price is that a crash inside one network round trip can lose one (visible in
``lanedesk outbox``), which is the right way round for mail to customers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Protocol

from sqlalchemy import BindParameter, Select, bindparam, case, func, or_, select, update
from sqlalchemy.orm import Session, defer, sessionmaker

from . import audit
from .db import unit_of_work
from .models import Customer, MailMessage, OutboxMessage, Ticket
from .secrets import message_id
from .settings import Settings
from .templates import TEMPLATES

log = logging.getLogger(__name__)

#: How long a worker may take to hand one message to the server before another may try.
SEND_LEASE = timedelta(minutes=5)
#: How long a row the sweep handed to a worker is left alone before it is handed out again.
DISPATCH_LEASE = timedelta(minutes=1)
#: Waits after the 1st, 2nd, ... transient failure (then the last, repeated) and when to give up.
RETRY_DELAYS = tuple(timedelta(minutes=m) for m in (1, 2, 4, 8, 15, 30))
GIVE_UP_AFTER = timedelta(days=3)
#: RFC 3834 §2: at most one automatic acknowledgement per sender in this window.
ACK_WINDOW = timedelta(days=7)
#: Hard ceilings on automatic mail per recipient, over sliding windows (Zammad's defaults):
#: (window, across all tickets, on one ticket).
CEILINGS = (
    (timedelta(minutes=10), 30, 10),
    (timedelta(minutes=30), 60, 15),
    (timedelta(minutes=60), 120, 25),
    (timedelta(minutes=180), 240, 50),
    (timedelta(minutes=600), 360, 100),
)
#: Addresses that never get automatic mail (robots answer robots).
NO_AUTO_MAIL = re.compile(
    r"(?i)^(?:mailer-daemon|postmaster|abuse|root|no-?reply|do-?not-?reply|bounces?)(?:[+._-][^@]*)?@"
)
STATES = ("queued", "sending", "sent", "failed", "suppressed")


# -- queueing (inside the step's transaction) -------------------------------------------------
def queue_mail(
    session: Session,
    settings: Settings,
    *,
    ticket: Ticket,
    template: str,
    recipient: str,
    kind: str,
    now: datetime,
    actor: str,
    payload: dict[str, Any] | None = None,
) -> OutboxMessage:
    """Write one outgoing mail (``queued``, or ``suppressed`` with the rule that held it back)."""
    auto = TEMPLATES[template]
    recipient = recipient.strip().lower()
    reason = None if auto is None else held_back(session, settings, ticket, template, recipient, now)
    row = OutboxMessage(
        ticket_id=ticket.id,
        kind=kind,
        template=template,
        recipient=recipient,
        message_id=message_id(settings, ticket.number),
        auto_submitted=auto,
        state="suppressed" if reason else "queued",
        reason=reason,
        payload=payload or {},
        attempts=0,
        next_attempt_at=None if reason else now,
        created_at=now,
    )
    session.add(row)
    if reason:
        audit.record(
            session,
            ticket_id=ticket.id,
            actor=actor,
            action="mail_suppressed",
            now=now,
            detail=f"{template} to {recipient} held back: {reason}",
            data={"template": template, "recipient": recipient, "reason": reason},
        )
    else:
        audit.record(
            session,
            ticket_id=ticket.id,
            actor=actor,
            action="mail_queued",
            now=now,
            detail=f"{template} to {recipient}",
            data={"template": template, "recipient": recipient},
        )
        session.info.setdefault(_QUEUED, []).append(row)
    return row


_QUEUED = "lanedesk.outbox_queued"


def queued_in(session: Session) -> list[int]:
    """Ids of the rows :func:`queue_mail` queued in this transaction (and not rolled back with a
    savepoint), so its worker can hand them out after COMMIT without a dispatch transaction;
    forgets them. Flushes."""
    rows = session.info.pop(_QUEUED, [])
    if rows:
        session.flush()
    return [row.id for row in rows if row in session and row.id is not None]


def held_back(
    session: Session, settings: Settings, ticket: Ticket, template: str, recipient: str, now: datetime
) -> str | None:
    """Why automatic mail ``template`` must not go to ``recipient`` now (None: it may go).

    Mail a person wrote (agent replies) is never held back; the caller does not ask.
    """
    local, _, domain = recipient.partition("@")
    if not local or not domain:
        return "not a mail address"
    if _own_address(settings, ticket, recipient):
        return "the recipient is one of the desk's own addresses"
    if NO_AUTO_MAIL.match(recipient):
        return "the address belongs to a robot (mailer-daemon, postmaster, no-reply …)"
    params: dict[str, Any] = {"recipient": recipient, "ticket_id": ticket.id, "ack_since": now - ACK_WINDOW}
    params.update({f"since_{i}": now - window for i, (window, _, _) in enumerate(CEILINGS)})
    bounced_at, bounce_reason, last_mail, acknowledged, *counts = session.execute(
        _facts_statement(), params
    ).one()
    if bounced_at is not None:
        since = f"{bounced_at:%Y-%m-%d %H:%M} UTC"
        return f"the address bounces ({bounce_reason or 'bounce'}, since {since})"
    if last_mail == "auto_generated":
        return "the recipient's last mail to us was auto-generated (no automatic answer to a robot)"
    if template == "acknowledgement" and acknowledged is not None:
        when = f"{acknowledged:%Y-%m-%d %H:%M} UTC"
        return f"already acknowledged this sender at {when} (one per 7 days, RFC 3834)"
    return _over_ceiling(counts)


@cache
def _facts_statement() -> Select[Any]:
    """What the rules need to know about a recipient, in one round trip (built once: building
    SQLAlchemy statements per call was most of the rules' cost, bench.outbox): bounce, the last
    mail from them, the last acknowledgement, then the automatic mail to them in each window of
    CEILINGS, in all and on one ticket."""
    recipient: BindParameter[str] = bindparam("recipient")
    customer = select(Customer).where(Customer.email == recipient)
    automatic = OutboxMessage.auto_submitted.is_not(None) & (OutboxMessage.state != "suppressed")
    counts = []
    for i in range(len(CEILINGS)):
        recent = OutboxMessage.created_at > bindparam(f"since_{i}")
        counts.append(func.sum(case((recent, 1), else_=0)).label(f"all_{i}"))
        on_ticket = recent & (OutboxMessage.ticket_id == bindparam("ticket_id"))
        counts.append(func.sum(case((on_ticket, 1), else_=0)).label(f"ticket_{i}"))
    ceilings = (
        select(*counts)
        .where(
            OutboxMessage.recipient == recipient,
            automatic,
            OutboxMessage.created_at > bindparam(f"since_{len(CEILINGS) - 1}"),
        )
        .subquery("ceilings")
    )
    return select(
        customer.with_only_columns(Customer.bounced_at).scalar_subquery(),
        customer.with_only_columns(Customer.bounce_reason).scalar_subquery(),
        select(MailMessage.state)
        .where(MailMessage.sender == recipient, MailMessage.state.in_(("processed", "auto_generated")))
        .order_by(MailMessage.id.desc())
        .limit(1)
        .scalar_subquery(),
        select(OutboxMessage.created_at)
        .where(
            OutboxMessage.recipient == recipient,
            OutboxMessage.template == "acknowledgement",
            OutboxMessage.state != "suppressed",
            OutboxMessage.created_at > bindparam("ack_since"),
        )
        .limit(1)
        .scalar_subquery(),
        *ceilings.c,
    )


def _own_address(settings: Settings, ticket: Ticket, recipient: str) -> bool:
    """A desk mailbox, the desk's From, or a plus-address of one (agents on the same domain are
    people, not the desk: they do get notifications)."""
    local, _, domain = recipient.partition("@")
    base = f"{local.split('+', 1)[0]}@{domain}"
    ours = {*settings.mailboxes, settings.sender[1]}
    if ticket.mailbox:
        ours.add(ticket.mailbox)
    return base in ours or recipient in ours


def _over_ceiling(counts: list[int | None]) -> str | None:
    """The first ceiling ``counts`` (per window of CEILINGS: in all, on the ticket) reach."""
    for i, (window, total_limit, ticket_limit) in enumerate(CEILINGS):
        total, on_ticket = counts[2 * i] or 0, counts[2 * i + 1] or 0
        minutes = int(window.total_seconds() // 60)
        if total >= total_limit:
            return f"ceiling: {total} automatic mails to this address in {minutes} min (limit {total_limit})"
        if on_ticket >= ticket_limit:
            return (
                f"ceiling: {on_ticket} automatic mails on this ticket in {minutes} min (limit {ticket_limit})"
            )
    return None


# -- delivery ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Delivery:
    """One attempt: what a transport needs, detached from the session."""

    outbox_id: int
    sender: str
    recipient: str
    raw: bytes
    attempt: int


class TransientFailure(Exception):
    """Try again later: 4xx, a connection that failed, a server that went away."""


class PermanentFailure(Exception):
    """The server refused for good (5xx). ``recipient_refused``: the address itself was refused."""

    def __init__(self, message: str, *, recipient_refused: bool = False):
        super().__init__(message)
        self.recipient_refused = recipient_refused


class Unconfirmed(Exception):
    """The end-of-data went out but its answer never came: delivered or not, we cannot know."""


class Superseded(Exception):
    """Our lease ran out and another worker took the message over; nothing was delivered."""


class Transport(Protocol):
    def send(self, delivery: Delivery, commit_sent: Callable[[], bool]) -> str:
        """Transfer ``delivery``; call ``commit_sent`` just before the server is told to deliver
        (abort without delivering, raising Superseded, if it returns False); return the server's
        answer. Raise TransientFailure or PermanentFailure."""
        ...


Compose = Callable[[Session, Settings, OutboxMessage, datetime], None]


def deliver(
    sessions: sessionmaker[Session],
    settings: Settings,
    transport: Transport,
    outbox_id: int,
    *,
    clock: Callable[[], datetime],
    compose: Compose,
) -> str:
    """Deliver outbox row ``outbox_id`` if it is due; return what became of it.

    ``compose`` renders the message into the row the first time (workflows/outmail.py).
    Safe to call twice, from two workers at once, or after a crash (module docstring).
    """
    with unit_of_work(sessions) as session:
        row = session.scalar(
            select(OutboxMessage).where(OutboxMessage.id == outbox_id).with_for_update(skip_locked=True)
        )
        now = clock()
        if row is None:
            return "busy"
        if row.state != "queued" or (row.next_attempt_at is not None and row.next_attempt_at > now):
            return row.state
        if row.raw is None:
            compose(session, settings, row, now)
        assert row.raw is not None and row.sender is not None
        row.state, row.lease_until, row.attempts = "sending", now + SEND_LEASE, row.attempts + 1
        job = Delivery(row.id, row.sender, row.recipient, row.raw, row.attempts)

    def commit_sent() -> bool:
        with unit_of_work(sessions) as session:
            result = session.execute(
                update(OutboxMessage)
                .where(
                    OutboxMessage.id == job.outbox_id,
                    OutboxMessage.state == "sending",
                    OutboxMessage.attempts == job.attempt,
                )
                .values(state="sent", sent_at=clock(), lease_until=None)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    try:
        answer = transport.send(job, commit_sent)
    except Superseded:
        return "superseded"
    except Unconfirmed as exc:
        reason = f"unconfirmed: {exc}; not sent again, so as not to send a second copy"[:2000]
        log.warning("mail %s to %s %s", job.outbox_id, job.recipient, reason)
        with unit_of_work(sessions) as session:
            row = session.get_one(OutboxMessage, job.outbox_id)
            if row.attempts == job.attempt:
                row.reason = reason
                audit.record(
                    session,
                    ticket_id=row.ticket_id,
                    actor=audit.SYSTEM,
                    action="mail_unconfirmed",
                    now=clock(),
                    detail=f"{row.template} to {row.recipient}: {reason}",
                    data={"outbox_id": row.id, "message_id": row.message_id},
                )
        return "sent"
    except TransientFailure as exc:
        return _after_failure(sessions, job, str(exc), clock(), permanent=False)
    except PermanentFailure as exc:
        return _after_failure(
            sessions, job, str(exc), clock(), permanent=True, mark_address=exc.recipient_refused
        )
    with unit_of_work(sessions) as session:
        row = session.get_one(OutboxMessage, job.outbox_id)
        if row.attempts == job.attempt:
            row.server_reply, row.last_error = answer[:2000], None
            audit.record(
                session,
                ticket_id=row.ticket_id,
                actor=audit.SYSTEM,
                action="mail_sent",
                now=clock(),
                detail=f"{row.template} to {row.recipient}",
                data={"outbox_id": row.id, "message_id": row.message_id, "server": answer[:200]},
            )
    return "sent"


def _after_failure(
    sessions: sessionmaker[Session],
    job: Delivery,
    error: str,
    now: datetime,
    *,
    permanent: bool,
    mark_address: bool = False,
) -> str:
    with unit_of_work(sessions) as session:
        row = session.scalar(select(OutboxMessage).where(OutboxMessage.id == job.outbox_id).with_for_update())
        if row is None or row.attempts != job.attempt or row.state not in ("sending", "sent"):
            return row.state if row is not None else "gone"
        row.last_error, row.lease_until = error[:2000], None
        if not permanent and now - row.created_at < GIVE_UP_AFTER:
            delay = RETRY_DELAYS[min(row.attempts, len(RETRY_DELAYS)) - 1]
            row.state, row.next_attempt_at, row.sent_at = "queued", now + delay, None
            # Loud on purpose: a wrong password or a relay without STARTTLS fails every mail.
            log.warning(
                "mail %s to %s not delivered (attempt %d, next in %s): %s",
                row.id,
                row.recipient,
                row.attempts,
                delay,
                error,
            )
            return "queued"
        row.state, row.sent_at = "failed", None
        row.reason = error[:2000] if permanent else f"gave up after {row.attempts} attempts: {error}"[:2000]
        marked = ""
        if mark_address:
            customer = session.scalar(select(Customer).where(Customer.email == row.recipient))
            if customer is not None and customer.bounced_at is None:
                customer.bounced_at, customer.bounce_reason = (
                    now,
                    f"refused by the mail server: {error}"[:2000],
                )
                marked = "; the address is marked as bouncing"
        audit.record(
            session,
            ticket_id=row.ticket_id,
            actor=audit.SYSTEM,
            action="mail_failed",
            now=now,
            detail=f"{row.template} to {row.recipient} failed: {row.reason}{marked}",
            data={"outbox_id": row.id, "recipient": row.recipient, "error": error[:500]},
        )
        return "failed"


# -- the sweep (beat) --------------------------------------------------------------------------
def due_for_delivery(
    session: Session, now: datetime, *, limit: int = 1000, recover: bool = True
) -> list[int]:
    """Hand out due rows (each once per DISPATCH_LEASE); with ``recover``, first recover
    abandoned ones (the periodic sweep does; a dispatch right after a step need not).

    A ``sending`` row whose lease ran out was never told to deliver (step 3 not reached):
    it is queued again. A ``sent`` row still without the server's answer long after is marked
    unconfirmed and left alone.
    """
    if recover:
        _recover(session, now)
    ids = list(
        session.scalars(
            select(OutboxMessage.id)
            .where(
                OutboxMessage.state == "queued",
                OutboxMessage.next_attempt_at <= now,
                or_(OutboxMessage.lease_until.is_(None), OutboxMessage.lease_until < now),
            )
            .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if ids:
        session.execute(
            update(OutboxMessage).where(OutboxMessage.id.in_(ids)).values(lease_until=now + DISPATCH_LEASE)
        )
    return ids


def _recover(session: Session, now: datetime) -> None:
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.state == "sending", OutboxMessage.lease_until < now)
        .values(
            state="queued",
            next_attempt_at=now,
            lease_until=None,
            last_error="the worker stopped before the server was told to deliver; sending again",
        )
    )
    session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.state == "sent",
            OutboxMessage.server_reply.is_(None),
            OutboxMessage.reason.is_(None),
            OutboxMessage.sent_at < now - SEND_LEASE,
        )
        .values(
            reason="unconfirmed: the worker stopped after committing and before the server's answer; "
            "not sent again, so as not to send a second copy"
        )
    )


def requeue(session: Session, outbox_id: int, *, now: datetime) -> OutboxMessage:
    """Send a failed (or suppressed) mail again, now, by an operator's decision."""
    row = session.get(OutboxMessage, outbox_id)
    if row is None:
        raise LookupError(f"no outgoing mail {outbox_id}")
    if row.state not in ("failed", "suppressed"):
        raise ValueError(f"mail {outbox_id} is {row.state}; only failed or suppressed mail is sent again")
    audit.record(
        session,
        ticket_id=row.ticket_id,
        actor=audit.SYSTEM,
        action="mail_requeued",
        now=now,
        detail=f"{row.template} to {row.recipient} queued again by an operator "
        f"(was {row.state}: {row.reason})"[:2000],
        data={"outbox_id": row.id},
    )
    row.state, row.next_attempt_at, row.lease_until, row.reason = "queued", now, None, None
    return row


def listing(
    session: Session, *, state: str | None = None, ticket_id: int | None = None, limit: int = 100
) -> list[OutboxMessage]:
    """Outgoing mail, newest first."""
    query = (
        select(OutboxMessage).options(defer(OutboxMessage.raw)).order_by(OutboxMessage.id.desc()).limit(limit)
    )
    if state:
        query = query.where(OutboxMessage.state == state)
    if ticket_id is not None:
        query = query.where(OutboxMessage.ticket_id == ticket_id)
    return list(session.scalars(query))
