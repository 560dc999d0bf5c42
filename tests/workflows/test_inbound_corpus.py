"""Every message of the shared mail corpus goes through the desk and ends somewhere definite.

(`shared/corpus/mail/mikel-mail`: real and malformed mail collected by the `mail` Ruby gem.)
Each file is stored and processed as if it had just arrived: it becomes a ticket, a follow-up,
an auto-generated record, a bounce, or a quarantined message with its reason — never an
exception, never a silent drop.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import hypothesis
import pytest
from sqlalchemy.orm import Session

from workflows.app import Desk
from workflows.inbound import (
    FINAL_STATES,
    Envelope,
    process_mail,
    process_or_quarantine,
    quarantine,
    store_raw,
)
from workflows.models import MailMessage
from workflows.settings import Settings

from .test_mailparse import MIKEL, corpus_files, mutated_mail


@pytest.mark.parametrize("path", corpus_files(MIKEL))
def test_every_corpus_message_ends_somewhere_definite(
    session: Session, settings: Settings, now: datetime, path: Path
) -> None:
    raw = path.read_bytes()
    stored = store_raw(session, raw, Envelope("file", mailbox="support@desk.example"), now=now)
    try:
        with session.begin_nested():
            outcome = process_mail(session, settings, stored.id, now=now)
    except Exception as exc:  # what a worker does: quarantine with the reason
        quarantine(session, stored.id, f"{type(exc).__name__}: {exc}", now=now)
        row = session.get_one(MailMessage, stored.id)
        assert row.state == "quarantined" and row.reason
        return
    row = session.get_one(MailMessage, stored.id)
    assert row.state in FINAL_STATES and row.state == outcome.state
    assert outcome.decision
    if "multipart_report_emails" in path.parts:
        assert row.state == "bounce", outcome.decision
    if row.state == "processed":
        assert row.ticket_id is not None


@hypothesis.settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow, hypothesis.HealthCheck.function_scoped_fixture],
)
@hypothesis.given(raw=mutated_mail())
def test_mutated_mail_never_makes_ingestion_raise(desk: Desk, raw: bytes) -> None:
    """Store + process (as the worker runs it) returns an outcome for any bytes; nothing escapes."""
    now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    with desk.unit_of_work() as session:
        stored = store_raw(session, raw, Envelope("file"), now=now)
    outcome = process_or_quarantine(desk.sessions, desk.settings, stored.id, now=now)
    assert outcome.state in FINAL_STATES
    if outcome.state == "quarantined":
        assert outcome.decision  # always with a reason
