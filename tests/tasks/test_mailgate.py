"""`lanedesk mailgate`, `lanedesk ingest` and the quarantine commands, as operators use them."""

from __future__ import annotations

import json
import mailbox
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from tasks.cli import EX_TEMPFAIL, main
from workflows.app import Desk, build_desk
from workflows.models import MailMessage, Ticket
from workflows.settings import load_settings

pytest.importorskip("workflows.mailparse")


def message(n: int, *, sender: str = "jana@customer.example", subject: str = "Printer on fire") -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, "support@desk.example", f"{subject} {n}"
    msg["Message-ID"] = f"<p{n}@customer.example>"
    msg.set_content(f"Message number {n}.")
    return bytes(msg)


def _count(desk: Desk, model: type) -> int:
    with desk.unit_of_work(readonly=True) as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_mailgate_stores_the_message_and_says_so(desk: Desk) -> None:
    result = CliRunner().invoke(
        main, ["mailgate", "--to", "support@desk.example"], input=message(1), obj=desk
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("stored as mail ")
    again = CliRunner().invoke(main, ["mailgate"], input=message(1), obj=desk)
    assert again.exit_code == 0 and "(already had it)" in again.output
    with desk.unit_of_work(readonly=True) as session:
        [row] = session.scalars(select(MailMessage)).all()
        assert (row.source, row.envelope_to, row.state) == ("mailgate", ["support@desk.example"], "stored")


def test_mailgate_asks_the_mta_to_retry_when_the_database_is_down(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "LANEDESK_DATA_DIR": str(tmp_path),
            "LANEDESK_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/nowhere?connect_timeout=2",
            "LANEDESK_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'broker.db'}",
        }
    )
    down = build_desk(settings)
    result = CliRunner().invoke(main, ["mailgate"], input=message(2), obj=down)
    assert result.exit_code == EX_TEMPFAIL == 75
    assert "could not store the message, try again later" in result.output
    down.engine.dispose()


def test_mailgate_refuses_an_empty_message(desk: Desk) -> None:
    result = CliRunner().invoke(main, ["mailgate"], input=b"\n", obj=desk)
    assert result.exit_code == 2 and "no message on stdin" in result.output


def test_ingest_reads_eml_files_mbox_and_maildir_and_sums_up(desk: Desk, tmp_path: Path) -> None:
    (tmp_path / "one.eml").write_bytes(message(1))
    box = mailbox.mbox(tmp_path / "old.mbox")
    for n in (2, 3):
        box.add(message(n))
    box.add(message(1))  # the same message again: a duplicate, not a second ticket
    box.close()
    maildir = mailbox.Maildir(tmp_path / "Maildir")
    maildir.add(message(4, sender="ops@customer.example", subject="Re: [LD-1001] Printer"))
    maildir.close()
    paths = [str(tmp_path / "one.eml"), str(tmp_path / "old.mbox"), str(tmp_path / "Maildir")]
    result = CliRunner().invoke(main, ["ingest", *paths, "--json"], obj=desk, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    # ops@ is not on LD-1001, so the subject tag does not attach its mail: a new ticket
    assert summary == {"messages": 5, "new tickets": 4, "duplicates": 1}
    assert _count(desk, Ticket) == 4


def test_quarantine_lists_and_reprocesses(desk: Desk, tmp_path: Path) -> None:
    (tmp_path / "anon.eml").write_bytes(
        b"To: support@desk.example\r\nSubject: ?\r\nMessage-ID: <a@x>\r\n\r\nhi\r\n"
    )
    CliRunner().invoke(main, ["ingest", str(tmp_path / "anon.eml")], obj=desk, catch_exceptions=False)
    listed = CliRunner().invoke(main, ["mail", "quarantine", "--json"], obj=desk)
    [item] = json.loads(listed.output)
    assert item["reason"] == "ValueError: the message has no usable From address"
    again = CliRunner().invoke(main, ["mail", "reprocess", "--all"], obj=desk)
    assert again.exit_code == 0 and f"mail {item['id']}: quarantined" in again.output  # still no sender
    wrong = CliRunner().invoke(main, ["mail", "reprocess", "99999"], obj=desk)
    assert wrong.exit_code == 1 and "no mail 99999" in wrong.output
    nothing = CliRunner().invoke(main, ["mail", "reprocess"], obj=desk)
    assert nothing.exit_code == 2


def test_ingest_of_a_missing_path_is_a_usage_error(desk: Desk, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["ingest", str(tmp_path / "nope")], obj=desk)
    assert result.exit_code == 2
