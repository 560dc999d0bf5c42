"""The studio's services: drafts and their history, deploy and roll back, comparison, uploads
from other modelers (every refusal path; the shared corpus), and the monitoring numbers."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine.errors import DefinitionError
from engine.xmlload import MAX_DIAGRAM_BYTES
from workflows import studio
from workflows.errors import Conflict, PermissionDenied
from workflows.models import AuditEvent, ProcessDraft, ProcessDraftRevision, ProcessVersion, User
from workflows.settings import Settings

from ..conftest import MONDAY_9
from .helpers import TRIAGE, agent, new_ticket, work

PROCESS = "ticket_lifecycle"
CORPUS = Path(
    os.environ.get("LANEDESK_CORPUS") or Path(__file__).resolve().parents[3] / "shared" / "corpus" / "bpmn"
)


@pytest.fixture
def owner(session: Session) -> User:
    return agent(session, "olga@desk.example", role="owner", now=MONDAY_9)


@pytest.fixture
def lifecycle(settings: Settings) -> bytes:
    return (settings.bpmn_dir / "ticket_lifecycle.bpmn").read_bytes()


def renamed(xml: bytes, name: str = "Triage the ticket") -> bytes:
    changed = xml.replace(b'name="Triage"', f'name="{name}"'.encode(), 1)
    assert changed != xml
    return changed


def newest(session: Session) -> int:
    return (
        session.scalar(select(func.max(ProcessVersion.version)).where(ProcessVersion.process_id == PROCESS))
        or 0
    )


def actions(session: Session) -> list[str]:
    return list(
        session.scalars(
            select(AuditEvent.action).where(AuditEvent.ticket_id.is_(None)).order_by(AuditEvent.id)
        )
    )


# -- drafts ------------------------------------------------------------------------------------
def test_a_draft_keeps_every_save_and_refuses_a_stale_one(
    session: Session, owner: User, lifecycle: bytes
) -> None:
    base = studio.get_version(session, PROCESS, 1)
    draft = studio.start_draft(
        session, xml=lifecycle, filename="x.bpmn", actor=owner, now=MONDAY_9, based_on=base
    )
    first = studio.save_draft(
        session,
        draft.id,
        xml=renamed(lifecycle),
        base_revision=1,
        actor=owner,
        now=MONDAY_9 + timedelta(minutes=1),
    )

    with pytest.raises(Conflict, match="saved again \\(revision 2\\) after you opened revision 1"):
        studio.save_draft(session, draft.id, xml=lifecycle, base_revision=1, actor=owner, now=MONDAY_9)

    assert (draft.process_id, draft.revision, first.revision) == (PROCESS, 2, 2)
    assert studio.draft_revision(session, draft).xml == renamed(lifecycle)
    assert studio.draft_revision(session, draft, 1).xml == lifecycle
    assert [h[0] for h in studio.draft_history(session, draft)] == [2, 1]


def test_a_draft_may_have_problems_but_must_be_a_diagram(
    session: Session, settings: Settings, owner: User, lifecycle: bytes
) -> None:
    draft = studio.start_draft(session, xml=lifecycle, filename="x.bpmn", actor=owner, now=MONDAY_9)
    broken_timer = lifecycle.replace(b'sla_due("first_response")', b"PT4H")

    studio.save_draft(session, draft.id, xml=broken_timer, base_revision=None, actor=owner, now=MONDAY_9)
    with pytest.raises(DefinitionError, match="malformed XML"):
        studio.save_draft(
            session, draft.id, xml=b"<bpmn:definitions", base_revision=None, actor=owner, now=MONDAY_9
        )

    assert draft.revision == 2
    problems = studio.check(session, settings, broken_timer, "x.bpmn")
    assert [p.element_id for p in problems] == ["triage_first_response_due"]


def test_only_owners_and_admins_touch_drafts(session: Session, lifecycle: bytes) -> None:
    tereza = agent(session, "tereza@desk.example", "tier-1", now=MONDAY_9)

    with pytest.raises(PermissionDenied, match="only process owners and admins"):
        studio.start_draft(session, xml=lifecycle, filename="x.bpmn", actor=tereza, now=MONDAY_9)

    assert session.scalar(select(func.count()).select_from(ProcessDraft)) == 0


def test_deploying_a_draft_closes_it_and_a_closed_draft_cannot_be_saved(
    session: Session, settings: Settings, owner: User, lifecycle: bytes
) -> None:
    draft = studio.start_draft(session, xml=lifecycle, filename="x.bpmn", actor=owner, now=MONDAY_9)

    version, created = studio.deploy(
        session,
        settings,
        xml=renamed(lifecycle),
        filename="x.bpmn",
        actor=owner,
        now=MONDAY_9,
        note="clearer name",
        draft_id=draft.id,
    )

    assert (version.version, created, version.note, version.deployed_by_id) == (
        2,
        True,
        "clearer name",
        owner.id,
    )
    assert draft.closed_at == MONDAY_9 and draft.deployed_as_id == version.id
    assert studio.drafts(session, PROCESS) == []
    with pytest.raises(Conflict, match="already deployed or discarded"):
        studio.save_draft(session, draft.id, xml=lifecycle, base_revision=None, actor=owner, now=MONDAY_9)


def test_a_draft_with_problems_is_not_deployed(
    session: Session, settings: Settings, owner: User, lifecycle: bytes
) -> None:
    with pytest.raises(DefinitionError) as refused:
        studio.deploy(
            session, settings, xml=lifecycle.replace(b'sla_due("first_response")', b"PT4H"),
            filename="x.bpmn", actor=owner, now=MONDAY_9, note="",
        )  # fmt: skip

    assert any(p.element_id == "triage_first_response_due" for p in refused.value.problems)
    assert newest(session) == 1


# -- versions ----------------------------------------------------------------------------------
def test_compare_names_what_changed(
    session: Session, settings: Settings, owner: User, lifecycle: bytes
) -> None:
    changed = renamed(lifecycle).replace(b'sla_due("resolution", 150)', b'sla_due("resolution", 120)')
    studio.deploy(session, settings, xml=changed, filename="x.bpmn", actor=owner, now=MONDAY_9, note="")

    comparison = studio.compare_versions(session, PROCESS, 1, 2)

    by_id = {c.element_id: c for c in comparison.changes}
    assert by_id["triage"].change == "changed" and by_id["triage"].aspects == ("name",)
    assert by_id["work_tier_2_resolution_overdue"].aspects == ("timer",)
    assert set(by_id) == {"triage", "work_tier_2_resolution_overdue"}
    assert studio.compare_versions(session, PROCESS, 2, 2).identical


def test_compare_sees_added_and_removed_elements(
    session: Session, settings: Settings, owner: User, lifecycle: bytes
) -> None:
    from engine.compare import compare

    without_annotation = lifecycle
    extra = lifecycle.replace(
        b"</bpmn:process>",
        b'<bpmn:task id="call_customer" name="Call the customer"/></bpmn:process>',
        1,
    )

    forward, backward = compare(without_annotation, extra), compare(extra, without_annotation)

    assert [(c.element_id, c.change, c.kind) for c in forward.changes] == [("call_customer", "added", "task")]
    assert [(c.element_id, c.change) for c in backward.changes] == [("call_customer", "removed")]


def test_roll_back_deploys_the_old_content_as_a_new_version_once(
    session: Session, settings: Settings, owner: User, lifecycle: bytes
) -> None:
    studio.deploy(
        session, settings, xml=renamed(lifecycle), filename="x.bpmn", actor=owner, now=MONDAY_9, note=""
    )

    version, created = studio.roll_back(
        session, settings, process_id=PROCESS, to=1, actor=owner, now=MONDAY_9
    )
    again, created_again = studio.roll_back(
        session, settings, process_id=PROCESS, to=1, actor=owner, now=MONDAY_9
    )

    assert (version.version, created, again.version, created_again) == (3, True, 3, False)
    assert version.content_hash == studio.get_version(session, PROCESS, 1).content_hash
    assert version.note == "roll back to version 1"
    assert actions(session).count("definition_rolled_back") == 1


# -- uploads -----------------------------------------------------------------------------------
REFUSED_UPLOADS = {
    "malformed": (b"<definitions><process id='p'>", "malformed XML"),
    "entities": (
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x "boom">]><definitions>&x;</definitions>',
        "DOCTYPE and entity declarations are not allowed",
    ),
    "oversized": (b"<definitions>" + b" " * MAX_DIAGRAM_BYTES + b"</definitions>", "the limit is"),
    "not bpmn": (b"<html><body>hello</body></html>", "not a BPMN 2.0 diagram: the document is <html>"),
    "empty": (b"", "Document is empty"),
}


@pytest.mark.parametrize("case", sorted(REFUSED_UPLOADS))
def test_an_upload_that_cannot_load_is_refused_and_nothing_stored(
    session: Session, settings: Settings, owner: User, case: str
) -> None:
    data, message = REFUSED_UPLOADS[case]

    report = studio.upload(session, settings, xml=data, filename=f"{case}.bpmn", actor=owner, now=MONDAY_9)

    assert report.draft is None and report.problems
    assert message in str(report.problems[0])
    assert session.scalar(select(func.count()).select_from(ProcessDraftRevision)) == 0
    assert actions(session)[-1] == "definition_upload_refused"


def test_an_upload_whose_script_escapes_the_sandbox_is_refused_with_the_element(
    session: Session, settings: Settings, owner: User, lifecycle: bytes
) -> None:
    escape = lifecycle.replace(
        b"</bpmn:process>",
        b'<bpmn:scriptTask id="escape" name="Escape"><bpmn:script>'
        b"().__class__.__bases__[0].__subclasses__()</bpmn:script></bpmn:scriptTask></bpmn:process>",
        1,
    )

    report = studio.upload(session, settings, xml=escape, filename="escape.bpmn", actor=owner, now=MONDAY_9)

    assert report.draft is None
    assert any(p.element_id == "escape" for p in report.problems), report.problems
    assert session.scalar(select(func.count()).select_from(ProcessDraft)) == 0


def test_a_clean_upload_becomes_a_draft(
    session: Session, settings: Settings, owner: User, lifecycle: bytes
) -> None:
    report = studio.upload(
        session, settings, xml=renamed(lifecycle), filename="mine.bpmn", actor=owner, now=MONDAY_9
    )

    assert report.problems == [] and report.draft is not None
    assert (report.draft.process_id, report.draft.title) == (PROCESS, "uploaded mine.bpmn")
    assert actions(session)[-1] == "definition_uploaded"


CORPUS_FILES = (
    sorted(p.relative_to(CORPUS).as_posix() for p in CORPUS.rglob("*.bpmn")) if CORPUS.is_dir() else []
)


@pytest.mark.skipif(not CORPUS_FILES, reason=f"no BPMN corpus at {CORPUS}")
@pytest.mark.parametrize("name", CORPUS_FILES)
def test_every_corpus_upload_gets_a_definite_outcome(
    session: Session, settings: Settings, owner: User, name: str
) -> None:
    report = studio.upload(
        session, settings, xml=(CORPUS / name).read_bytes(), filename=name, actor=owner, now=MONDAY_9
    )

    if report.draft is None:
        assert report.problems
        for problem in report.problems:
            assert problem.file == name and problem.line >= 0 and problem.message.strip()
    else:
        assert report.problems == [] and report.process_id


# -- monitoring --------------------------------------------------------------------------------
def test_monitor_counts_waiting_tickets_and_median_time_spent(session: Session, settings: Settings) -> None:
    lead = agent(session, "lead@desk.example", "tier-1", now=MONDAY_9)
    tickets = [new_ticket(session, settings, MONDAY_9 + timedelta(hours=i), f"Ticket {i}") for i in range(3)]
    # One triaged after 2 h: completed there (2 h spent); two still wait at triage.
    work(session, settings, tickets[0], lead, TRIAGE, MONDAY_9 + timedelta(hours=2))
    now = MONDAY_9 + timedelta(hours=4)

    loads = {
        load.element_id: load
        for load in studio.monitor(session, PROCESS, now=now, names={"triage": "Triage"})
    }

    triage = loads["triage"]
    assert (triage.name, triage.waiting) == ("Triage", 2)
    assert triage.median_waiting_seconds == pytest.approx(2.5 * 3600)  # waited 3 h and 2 h
    assert triage.median_spent_seconds == pytest.approx(2 * 3600)
    waiting = studio.waiting_at(session, PROCESS, "triage")
    assert [t.ticket_id for t in waiting] == [tickets[1].id, tickets[2].id]
