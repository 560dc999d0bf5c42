"""Canned responses: admins keep them (`lanedesk canned`), agents see them in the composer."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy.orm import Session

from web.cli import main
from workflows.app import Desk
from workflows.canned import list_canned

from ..conftest import MONDAY_9
from .helpers import agent


def run(desk: Desk, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), obj=desk)
    return result.exit_code, result.output


def test_an_admin_adds_lists_and_removes_canned_responses(desk: Desk, tmp_path: Path) -> None:
    with desk.unit_of_work() as session:
        agent(session, "ada@desk.example", role="admin", now=MONDAY_9)
        agent(session, "tereza@desk.example", "tier-1", now=MONDAY_9)
    text = tmp_path / "restart.txt"
    text.write_text("Please restart the router and tell us if it helps.\n", encoding="utf-8")

    assert run(
        desk, "canned", "add", "Restart  the router", "--text", str(text), "--as", "ada@desk.example"
    ) == (
        0,
        "canned response “Restart the router” added\n",
    )
    code, out = run(desk, "canned", "list", "--json")
    assert code == 0 and json.loads(out) == [
        {"title": "Restart the router", "body": "Please restart the router and tell us if it helps."}
    ]
    # Refusals leave everything as it was.
    code, out = run(
        desk, "canned", "add", "Restart the router", "--text", str(text), "--as", "ada@desk.example"
    )
    assert code == 1 and "already exists" in out
    code, out = run(desk, "canned", "add", "Other", "--text", str(text), "--as", "tereza@desk.example")
    assert code == 1 and "only admins keep canned responses" in out
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    code, out = run(
        desk, "canned", "add", "Empty", "--text", str(tmp_path / "empty.txt"), "--as", "ada@desk.example"
    )
    assert code == 1 and "needs a text" in out
    with desk.unit_of_work(readonly=True) as session:
        assert [c.title for c in list_canned(session)] == ["Restart the router"]

    assert run(desk, "canned", "remove", "Restart the router", "--as", "ada@desk.example")[0] == 0
    code, out = run(desk, "canned", "remove", "Restart the router", "--as", "ada@desk.example")
    assert code == 1 and "no canned response" in out


def test_the_list_is_empty_on_a_new_desk(session: Session) -> None:
    assert list_canned(session) == []
