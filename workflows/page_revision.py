"""The ticket page's revisions: rows 1 and 2 of ``inbox_revision``, read together.

A ticket page shows what an inbox shows (tickets, tasks, SLA clocks, customers, agents,
groups: row 1 counts their changes) and more: the conversation, attachments, outgoing mail,
the audit trail, Cc participants, the workflow instance and its version, canned responses.
Row 2 counts committed changes to those, with the same rules as row 1 (the listeners in
:mod:`workflows.models`: both rows are bumped by one statement as the last one before COMMIT,
so a reader who sees revision *n* also sees every change counted in it; only writes through an
ORM ``Session`` count). A page made after reading both numbers is never older than them.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import INBOX_ROW, PAGE_ROW, InboxRevision

__all__ = ["INBOX_ROW", "PAGE_ROW", "page_revisions"]

_BOTH = select(InboxRevision.id, InboxRevision.value).where(InboxRevision.id.in_((INBOX_ROW, PAGE_ROW)))


def page_revisions(session: Session) -> tuple[int, int] | None:
    """The committed revisions of everything a ticket page shows (rows 1 and 2, one statement);
    None when either row is missing (then nothing may be kept).

    Read them *before* the page, for the reason :func:`workflows.inbox.inbox_revision` gives.
    """
    found = dict(session.connection().execute(_BOTH).all())
    if INBOX_ROW not in found or PAGE_ROW not in found:
        return None
    return int(found[INBOX_ROW]), int(found[PAGE_ROW])
