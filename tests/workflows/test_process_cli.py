"""`lanedesk process list|versions|show|diff|rollback`: what an operator scripts against."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tasks.cli import main
from workflows.app import Desk

from ..conftest import MONDAY_9
from .helpers import agent


@pytest.fixture
def cli(desk: Desk):  # type: ignore[no-untyped-def]
    runner = CliRunner()

    def invoke(*args: str, code: int = 0) -> Result:
        result = runner.invoke(main, list(args), obj=desk, catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result

    return invoke


@pytest.fixture
def second_version(desk: Desk, tmp_path: Path, cli) -> bytes:  # type: ignore[no-untyped-def]
    with desk.unit_of_work() as session:
        agent(session, "olga@desk.example", role="owner", now=MONDAY_9)
    xml = (
        (desk.settings.bpmn_dir / "ticket_lifecycle.bpmn")
        .read_bytes()
        .replace(b'name="Triage"', b'name="Triage the ticket"', 1)
    )
    path = tmp_path / "ticket_lifecycle.bpmn"
    path.write_bytes(xml)
    cli("deploy", str(path), "--note", "clearer task name", "--as", "olga@desk.example")
    return xml


def test_versions_list_newest_first_with_author_and_note(cli, second_version: bytes) -> None:  # type: ignore[no-untyped-def]
    rows = json.loads(cli("process", "versions", "ticket_lifecycle", "--json").output)

    assert [(r["version"], r["deployed_by"], r["note"]) for r in rows] == [
        (2, "olga@desk.example", "clearer task name"),
        (1, None, ""),
    ]
    assert "ticket_lifecycle  version 2  0 running  0 draft(s)" in cli("process", "list").output


def test_show_prints_the_exact_xml_and_diff_names_the_change(cli, second_version: bytes) -> None:  # type: ignore[no-untyped-def]
    shown = cli("process", "show", "ticket_lifecycle").stdout_bytes
    diff = cli("process", "diff", "ticket_lifecycle", "1", "2").output

    assert shown == second_version
    assert diff.strip() == "~ user task triage 'Triage the ticket' (name)"


def test_rollback_deploys_version_one_again_once(cli, second_version: bytes) -> None:  # type: ignore[no-untyped-def]
    first = cli("process", "rollback", "ticket_lifecycle", "--to", "1", "--as", "olga@desk.example").output
    again = cli("process", "rollback", "ticket_lifecycle", "--to", "1", "--as", "olga@desk.example").output

    assert first.strip() == "deployed ticket_lifecycle version 3 (the content of version 1)"
    assert again.strip() == "unchanged: version 3 already has the content of version 1"


def test_refusals_are_one_clear_line(cli, second_version: bytes, desk: Desk) -> None:  # type: ignore[no-untyped-def]
    with desk.unit_of_work() as session:
        agent(session, "tereza@desk.example", "tier-1", now=MONDAY_9)

    unknown = cli("process", "versions", "nope", code=1).output
    missing = cli("process", "diff", "ticket_lifecycle", "1", "9", code=1).output
    agent_rollback = cli(
        "process", "rollback", "ticket_lifecycle", "--to", "1", "--as", "tereza@desk.example", code=1
    )

    assert unknown.strip() == "error: no process 'nope' is deployed"
    assert missing.strip() == "error: ticket_lifecycle has no version 9"
    assert "only process owners and admins" in agent_rollback.output
