"""The command line contract of DESIGN.md, driven in-process with a controllable clock."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tasks.cli import main
from workflows.app import Desk

from ..conftest import REPO

CORPUS = Path(os.environ.get("LANEDESK_CORPUS") or REPO.parent / "shared" / "corpus" / "bpmn")
PROBLEM_LINE = re.compile(r"^[^:]+:\d+: \S+: .+$")


class Clock:
    def __init__(self, start: datetime):
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(now: datetime) -> Clock:
    return Clock(now)


@pytest.fixture
def cli(desk: Desk, clock: Clock):  # type: ignore[no-untyped-def]
    timed = dataclasses.replace(desk, clock=clock)
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(main, list(args), obj=timed, catch_exceptions=False)

    return invoke


def only_task(cli, ticket: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    tasks = json.loads(cli("task", "list", "--ticket", ticket, "--json").output)
    assert len(tasks) == 1, tasks
    return tasks[0]  # type: ignore[no-any-return]


def test_an_operator_walks_a_ticket_from_open_to_closed(cli, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    assert cli("user", "add", "tereza@desk.example", "--role", "agent", "--group", "tier-1").exit_code == 0
    opened = cli(
        "ticket", "open", "--from", "jana@customer.example", "--subject", "Cannot log in", "--body", "Help"
    )
    ticket = opened.output.strip()
    assert re.fullmatch(r"LD-\d+", ticket)
    triage = only_task(cli, ticket)
    assert (triage["name"], triage["group"]) == ("Triage", "tier-1")
    done = cli(
        "task",
        "complete",
        triage["id"],
        "--as",
        "tereza@desk.example",
        "--data",
        '{"category": "incident", "priority": "P2", "summary": "Login broken"}',
    )
    assert done.exit_code == 0 and "Triage" in done.output
    work = only_task(cli, ticket)
    assert work["name"] == "Work ticket (Tier 1)"
    assert (
        cli(
            "task", "complete", work["id"], "--as", "tereza@desk.example", "--data", '{"outcome": "resolve"}'
        ).exit_code
        == 0
    )
    clock.now += timedelta(days=7, minutes=1)
    ticked = cli("tick")
    assert ticked.output.startswith("woke 1 instance")
    shown = json.loads(cli("ticket", "show", ticket, "--json").output)
    assert (shown["status"], shown["process"]["status"], shown["open_tasks"]) == ("closed", "completed", [])
    actions = [e["action"] for e in shown["timeline"]]
    assert actions.count("task_completed") == 2
    assert [e["detail"] for e in shown["timeline"] if e["action"] == "status_changed"][
        -1
    ] == "resolved → closed"
    text = cli("ticket", "show", ticket).output
    assert "status closed" in text and "Timeline:" in text


def test_bad_input_gets_a_clear_message_and_a_non_zero_exit(cli) -> None:  # type: ignore[no-untyped-def]
    cli("user", "add", "tereza@desk.example", "--role", "agent", "--group", "tier-1")
    ticket = cli("ticket", "open", "--from", "jana@customer.example", "--subject", "S").output.strip()
    triage = only_task(cli, ticket)
    cases = [
        (
            ("task", "complete", triage["id"], "--as", "tereza@desk.example", "--data", "{not json"),
            2,
            "not JSON",
        ),
        (
            ("task", "complete", triage["id"], "--as", "tereza@desk.example", "--data", '{"priority": "P9"}'),
            1,
            "error: category: is required",
        ),
        (("task", "complete", triage["id"], "--as", "nobody@desk.example"), 1, "no user nobody@desk.example"),
        (("ticket", "show", "LD-99999"), 1, "no ticket LD-99999"),
        (("ticket", "reply", "LD-99999", "--from", "a@b.example", "--body", "x"), 1, "no ticket LD-99999"),
        (("user", "add", "x@desk.example", "--role", "agent", "--group", "tier-9"), 1, "no group tier-9"),
        (("user", "add", "tereza@desk.example", "--role", "agent"), 1, "already exists"),
    ]
    for args, code, message in cases:
        result = cli(*args)
        assert (result.exit_code, message in result.output) == (code, True), (args, result.output)
    assert only_task(cli, ticket)["id"] == triage["id"]  # nothing changed


def test_validate_and_deploy_report_problems_per_line(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    broken = tmp_path / "broken.bpmn"
    broken.write_text((REPO / "bpmn" / "ticket_lifecycle.bpmn").read_text().replace('"P3D"', "P3D"))
    result = cli("validate", str(broken))
    assert result.exit_code == 1
    assert any("waiting_reminder_due" in line and "quote it" in line for line in result.output.splitlines())
    assert cli("deploy", str(broken)).exit_code == 1
    good = cli("deploy", str(REPO / "bpmn" / "ticket_lifecycle.bpmn"))
    assert good.exit_code == 0 and "unchanged, already deployed as ticket_lifecycle version 1" in good.output


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"BPMN corpus not found at {CORPUS}")
@pytest.mark.parametrize(
    "path", sorted(CORPUS.rglob("*.bpmn")) if CORPUS.is_dir() else [], ids=lambda p: p.name
)
def test_lanedesk_validate_gives_every_corpus_file_a_definite_outcome(path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", "--offline", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code in (0, 1)
    lines = [line for line in result.stdout.splitlines() if line]
    if result.exit_code == 1:
        assert lines and all(PROBLEM_LINE.match(line) for line in lines), lines
    else:
        assert lines == []


def test_run_prepares_an_empty_desk_once_and_then_changes_nothing(tmp_path: Path) -> None:
    from workflows.app import build_desk
    from workflows.settings import load_settings

    settings = load_settings(
        {"LANEDESK_DATA_DIR": str(tmp_path), "LANEDESK_DATABASE_URL": f"sqlite:///{tmp_path}/d.db"}
    )
    laptop = build_desk(settings)
    first = CliRunner().invoke(main, ["run", "--once"], obj=laptop, catch_exceptions=False)
    assert first.exit_code == 0
    assert "deployed ticket_lifecycle v1" in first.output
    assert "demo tickets LD-1001, LD-1002, LD-1003" in first.output
    second = CliRunner().invoke(main, ["run", "--once"], obj=laptop, catch_exceptions=False)
    assert second.exit_code == 0 and "deployed" not in second.output and "demo tickets" not in second.output
    tasks = json.loads(CliRunner().invoke(main, ["task", "list", "--json"], obj=laptop).output)
    assert sorted(t["ticket"] for t in tasks) == ["LD-1001", "LD-1002", "LD-1003"]
    laptop.engine.dispose()


def test_sla_check_prints_the_calendars_and_policies(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("sla", "check", str(REPO / "docs" / "sla.example.yaml"))
    assert result.exit_code == 0
    assert "calendar prague (Europe/Prague, Mon\u2013Fri 09:00\u201317:00, holidays CZ)" in result.output
    assert "policy enterprise (bigcustomer.example; calendar follow-the-sun)" in result.output
    assert "resolution 8h00/16h00/40h00/80h00 (P1/P2/P3/P4)" in result.output


def test_a_broken_sla_file_is_refused_before_any_process_starts(  # type: ignore[no-untyped-def]
    cli, desk: Desk, tmp_path: Path
) -> None:
    broken = tmp_path / "sla.yaml"
    broken.write_text("policies:\n  - name: standard\n    targets: {first_response: {P1: 1d}}\n")
    result = cli("sla", "check", str(broken))
    assert result.exit_code == 1
    assert result.output.startswith(f"error: {broken}: policies.standard.targets.first_response: ")
    configured = dataclasses.replace(desk, settings=dataclasses.replace(desk.settings, sla_config=broken))
    for command in (["worker"], ["beat"], ["run", "--once"]):
        refused = CliRunner().invoke(main, command, obj=configured)
        assert refused.exit_code == 1, command
        assert refused.output.startswith(f"error: {broken}: "), refused.output
