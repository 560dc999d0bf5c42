"""Moving running tickets to a new process version: preview, migrate, audit, the command line.

Version 1 is the bundled lifecycle (deployed by the fixtures); version 2 is one of the variants
in tests/data/migration, deployed by an owner in each test.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from workflows.app import Desk
from workflows.cli import main
from workflows.definitions import deploy_definition
from workflows.errors import PermissionDenied
from workflows.models import AuditEvent, Ticket, User, WorkflowInstance
from workflows.process_migration import MigrationReport, migrate_instances, preview_migration
from workflows.settings import Settings
from workflows.tickets import instance_of
from workflows.worklist import claim_task

from ..conftest import REPO
from .helpers import TRIAGE, agent, new_ticket, open_task, work

DATA = REPO / "tests" / "data" / "migration"
LIFECYCLE = "ticket_lifecycle"
HOUR = timedelta(hours=1)


@pytest.fixture
def owner(session: Session, now: datetime) -> User:
    return agent(session, "olga@desk.example", role="owner", now=now)


@pytest.fixture
def tereza(session: Session, now: datetime) -> User:
    return agent(session, "tereza@desk.example", "tier-1", now=now)


def deploy(session: Session, settings: Settings, variant: str, owner: User, now: datetime) -> int:
    path = DATA / f"{variant}.bpmn"
    version, created = deploy_definition(
        session, settings, xml=path.read_bytes(), filename=path.name, now=now, actor=owner
    )
    assert created
    return version.version


def move(
    session: Session, settings: Settings, rows: list[WorkflowInstance], owner: User, now: datetime
) -> MigrationReport:
    return migrate_instances(
        session,
        settings,
        process_id=LIFECYCLE,
        to_version=2,
        instance_ids=[r.id for r in rows],
        actor=owner,
        now=now,
    )


def trail(session: Session, ticket: Ticket, action: str) -> list[AuditEvent]:
    query = select(AuditEvent).where(AuditEvent.ticket_id == ticket.id, AuditEvent.action == action)
    return list(session.scalars(query.order_by(AuditEvent.id)))


def test_a_ticket_at_triage_moves_and_is_completed_on_the_new_version(
    session: Session, settings: Settings, now: datetime, owner: User, tereza: User
) -> None:
    ticket = new_ticket(session, settings, now)
    row = instance_of(session, ticket)
    triage, wake, revision = open_task(session, ticket), row.next_wake_at, row.revision
    assert deploy(session, settings, "call_customer", owner, now) == 2

    [preview] = preview_migration(session, settings, process_id=LIFECYCLE, to_version=2)
    assert (preview.ticket, preview.from_version, preview.to_version) == (f"LD-{ticket.number}", 1, 2)
    assert preview.can_migrate and preview.revision == revision
    [task] = [t for t in preview.tasks if t.state == "ready"]
    assert (task.element_id, task.name, task.group, task.new_name, task.new_group) == (
        "triage",
        "Triage",
        "tier-1",
        "Triage",
        "tier-1",
    )

    report = move(session, settings, [row], owner, now + HOUR)
    assert [m.ticket for m in report.migrated] == [preview.ticket] and report.refused == []
    session.refresh(row)
    assert (row.process_version.version, row.revision, row.next_wake_at) == (2, revision + 1, wake)
    assert open_task(session, ticket).id == triage.id  # the same task, still in Tier 1's inbox

    assert work(session, settings, ticket, tereza, TRIAGE, now + 2 * HOUR) == "triage"
    called = open_task(session, ticket)
    assert (called.element_id, called.name, called.group and called.group.slug) == (
        "call_customer",
        "Call the customer",
        "tier-1",
    )
    assert work(session, settings, ticket, tereza, {"reached": True}, now + 3 * HOUR) == "call_customer"
    assert open_task(session, ticket).element_id == "work_tier_1"

    [entry] = trail(session, ticket, "instance_migrated")
    assert (entry.actor, entry.detail) == ("user:olga@desk.example", "ticket_lifecycle v1 → v2")
    assert entry.data["from_version"] == 1 and entry.data["to_version"] == 2
    assert {t["element_id"]: t["to"] for t in entry.data["tasks"]}["triage"] == {
        "name": "Triage",
        "group": "tier-1",
    }
    assert entry.data["next_wake_at"]["before"] == entry.data["next_wake_at"]["after"] == wake.isoformat()


def test_preview_lists_tickets_that_can_and_cannot_move_and_only_the_first_moves(
    session: Session, settings: Settings, now: datetime, owner: User, tereza: User
) -> None:
    at_triage = new_ticket(session, settings, now, subject="Printer on fire")
    at_work = new_ticket(session, settings, now, subject="Cannot log in")
    work(session, settings, at_work, tereza, TRIAGE, now)
    deploy(session, settings, "triage_removed", owner, now)
    stuck, movable = instance_of(session, at_triage), instance_of(session, at_work)
    before = (stuck.state, stuck.process_version_id, stuck.revision, stuck.next_wake_at)

    previews = preview_migration(session, settings, process_id=LIFECYCLE, to_version=2)
    assert [(p.ticket, p.can_migrate) for p in previews] == [
        (f"LD-{at_triage.number}", False),
        (f"LD-{at_work.number}", True),
    ]
    reason = "the user task 'Triage' (triage) is not in version 2: it was removed"
    assert previews[0].reason == reason
    assert [t.refusal for t in previews[0].tasks if t.element_id == "triage"] == [reason]

    report = move(session, settings, [stuck, movable], owner, now + HOUR)
    assert [p.instance_id for p in report.migrated] == [movable.id]
    assert [(p.instance_id, p.reason) for p in report.refused] == [(stuck.id, reason)]
    session.refresh(stuck)
    session.refresh(movable)
    assert (stuck.state, stuck.process_version_id, stuck.revision, stuck.next_wake_at) == before
    assert movable.process_version.version == 2
    [refusal] = trail(session, at_triage, "instance_migration_refused")
    assert refusal.detail == reason and refusal.data["to_version"] == 2
    assert trail(session, at_triage, "instance_migrated") == []
    assert len(trail(session, at_work, "instance_migrated")) == 1
    assert preview_migration(session, settings, process_id=LIFECYCLE, to_version=2) == [
        dataclasses.replace(previews[0], revision=stuck.revision)
    ]


def test_an_instance_that_cannot_be_read_does_not_hold_back_the_others(
    session: Session, settings: Settings, now: datetime, owner: User
) -> None:
    broken = instance_of(session, new_ticket(session, settings, now, subject="Printer on fire"))
    fine = instance_of(session, new_ticket(session, settings, now, subject="Cannot log in"))
    deploy(session, settings, "call_customer", owner, now)
    session.execute(update(WorkflowInstance).where(WorkflowInstance.id == broken.id).values(state="{oops"))
    why = "it cannot be moved: stored instance state is not JSON"

    previews = preview_migration(session, settings, process_id=LIFECYCLE, to_version=2)
    assert [(p.instance_id, p.can_migrate) for p in previews] == [(broken.id, False), (fine.id, True)]
    assert (previews[0].reason or "").startswith(why)

    report = move(session, settings, [broken, fine], owner, now)
    assert [p.instance_id for p in report.migrated] == [fine.id]
    assert [(p.instance_id, (p.reason or "")[: len(why)]) for p in report.refused] == [(broken.id, why)]
    session.refresh(fine)
    assert fine.process_version.version == 2
    assert session.get_one(WorkflowInstance, broken.id, populate_existing=True).state == "{oops"


def test_only_owners_and_admins_move_tickets(
    session: Session, settings: Settings, now: datetime, owner: User, tereza: User
) -> None:
    row = instance_of(session, new_ticket(session, settings, now))
    deploy(session, settings, "call_customer", owner, now)
    with pytest.raises(PermissionDenied, match="only process owners and admins"):
        move(session, settings, [row], tereza, now)
    session.refresh(row)
    assert row.process_version.version == 1


def test_a_ticket_that_changed_since_the_preview_is_refused_then_moves_from_where_it_is(
    session: Session, settings: Settings, now: datetime, owner: User, tereza: User
) -> None:
    ticket = new_ticket(session, settings, now)
    row = instance_of(session, ticket)
    deploy(session, settings, "call_customer", owner, now)
    [preview] = preview_migration(session, settings, process_id=LIFECYCLE, to_version=2)
    work(session, settings, ticket, tereza, TRIAGE, now + HOUR)  # an agent triages meanwhile

    report = migrate_instances(
        session,
        settings,
        process_id=LIFECYCLE,
        to_version=2,
        instance_ids=[row.id],
        actor=owner,
        now=now + 2 * HOUR,
        expected_revisions={row.id: preview.revision},
    )
    [refused] = report.refused
    assert (
        refused.reason
        == f"the ticket changed since the preview (revision {preview.revision}, now {preview.revision + 1})"
    )
    session.refresh(row)
    assert row.process_version.version == 1

    # Without a preview to hold on to, the plan is made again under the lock, from where it is now.
    [moved] = move(session, settings, [row], owner, now + 2 * HOUR).migrated
    assert [t.element_id for t in moved.tasks if t.state == "ready"] == ["work_tier_1"]
    assert open_task(session, ticket).element_id == "work_tier_1"


def test_a_task_moved_to_another_lane_goes_to_that_group_and_its_holder_lets_go(
    session: Session, settings: Settings, now: datetime, owner: User, tereza: User
) -> None:
    ticket = new_ticket(session, settings, now)
    claim_task(session, task_id=open_task(session, ticket).id, user=tereza, now=now)
    deploy(session, settings, "triage_in_tier_2", owner, now)
    move(session, settings, [instance_of(session, ticket)], owner, now + HOUR)
    task = open_task(session, ticket)
    session.refresh(task)
    assert (task.name, task.lane, task.group and task.group.slug, task.assignee_id) == (
        "Triage",
        "Tier 2",
        "tier-2",
        None,
    )


def test_a_renamed_task_is_retitled_in_the_inbox_with_its_new_form(
    session: Session, settings: Settings, now: datetime, owner: User, tereza: User
) -> None:
    ticket = new_ticket(session, settings, now)
    claim_task(session, task_id=open_task(session, ticket).id, user=tereza, now=now)
    deploy(session, settings, "triage_renamed", owner, now)
    move(session, settings, [instance_of(session, ticket)], owner, now + HOUR)
    task = open_task(session, ticket)
    session.refresh(task)
    assert (task.name, task.assignee_id) == ("Qualify the request", tereza.id)
    assert "product" in [f["id"] for f in task.form]


def test_a_changed_timer_gets_a_new_wake_time(
    session: Session, settings: Settings, now: datetime, owner: User
) -> None:
    row = instance_of(session, new_ticket(session, settings, now))
    first_response_due = row.next_wake_at
    assert first_response_due is not None
    deploy(session, settings, "timers_changed", owner, now)  # the reminder at 50 % of the target
    move(session, settings, [row], owner, now + HOUR)
    session.refresh(row)
    assert row.next_wake_at is not None and now < row.next_wake_at < first_response_due


# --- the command line --------------------------------------------------------------------------------
@pytest.fixture
def cli(desk: Desk, now: datetime):  # type: ignore[no-untyped-def]
    timed = dataclasses.replace(desk, clock=lambda: now)
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(main, list(args), obj=timed, catch_exceptions=False)

    return invoke


def _setup(cli, variant: str) -> str:  # type: ignore[no-untyped-def]
    assert cli("user", "add", "olga@desk.example", "--role", "owner").exit_code == 0
    ticket = cli("ticket", "open", "--from", "jana@customer.example", "--subject", "Help", "--body", "Hi")
    path: Path = DATA / f"{variant}.bpmn"
    assert cli("deploy", str(path), "--as", "olga@desk.example").exit_code == 0
    return str(ticket.output.strip())


def test_the_command_line_previews_then_moves(cli) -> None:  # type: ignore[no-untyped-def]
    ticket = _setup(cli, "call_customer")
    dry = cli("process", "migrate", LIFECYCLE, "--to", "2", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.stdout.startswith(
        f"{ticket}  v1 → v2  triage → 'Triage' [tier-1] (then 'Call the customer' (call_customer)); "
    )
    assert "1 can move, 0 cannot" in dry.stderr
    shown = json.loads(cli("process", "migrate", LIFECYCLE, "--to", "2", "--dry-run", "--json").stdout)
    assert [(p["ticket"], p["can_migrate"]) for p in shown] == [(ticket, True)]

    assert cli("process", "migrate", LIFECYCLE, "--to", "2").exit_code == 2  # --as is required
    done = cli("process", "migrate", LIFECYCLE, "--to", "2", "--ticket", ticket, "--as", "olga@desk.example")
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith(f"moved   {ticket}  v1 → v2  triage → 'Triage' [tier-1]")
    again = cli("process", "migrate", LIFECYCLE, "--to", "2", "--dry-run", "--json")
    assert json.loads(again.stdout) == []
    shown_ticket = json.loads(cli("ticket", "show", ticket, "--json").stdout)
    assert shown_ticket["process"]["version"] == 2


def test_the_command_line_exits_1_when_a_ticket_cannot_move(cli) -> None:  # type: ignore[no-untyped-def]
    ticket = _setup(cli, "triage_removed")
    reason = "the user task 'Triage' (triage) is not in version 2: it was removed"
    dry = cli("process", "migrate", LIFECYCLE, "--to", "2", "--dry-run")
    assert (dry.exit_code, dry.stdout) == (1, f"{ticket}  v1 → v2  cannot move: {reason}\n")
    done = cli("process", "migrate", LIFECYCLE, "--to", "2", "--as", "olga@desk.example", "--json")
    assert done.exit_code == 1
    report = json.loads(done.stdout)
    assert report["migrated"] == [] and [r["reason"] for r in report["refused"]] == [reason]
