"""The ticket page's kept pages: never stale after a change it shows, never another's page.

Every test holds the clock still (the same minute) unless it moves it on purpose, so only the
revisions of what the page shows can tell the kept page from a new one. Each change is made as
the desk makes it (a service, an ORM change flushed, or an UPDATE statement), then the next
request must show it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from web.tickets import CACHE_HEADER
from workflows import audit
from workflows.app import Desk
from workflows.models import (
    CannedResponse,
    Customer,
    InboxRevision,
    OutboxMessage,
    SlaClock,
    Ticket,
    TicketParticipant,
    User,
    WorkflowInstance,
)
from workflows.page_revision import PAGE_ROW
from workflows.tickets import add_note, change_priority, reply_as_agent

from ..conftest import MONDAY_9
from ..workflows.helpers import TRIAGE, work
from . import test_inbox
from .conftest import log_in
from .test_auth import Clock
from .test_inbox import Opened, claim, counting, open_one, parse_html, post
from .test_ticket_page import JANA, follow_up, mail

people = test_inbox.people
clock = test_inbox.clock


def user(session: Session, email: str) -> User:
    found = session.scalar(select(User).where(User.email == email))
    assert found is not None
    return found


def ticket_of(session: Session, opened: Opened) -> Ticket:
    found = session.get(Ticket, opened.ticket_id)
    assert found is not None
    return found


def get(client: FlaskClient, url: str) -> tuple[str, str]:
    answer = client.get(url)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.get_data(as_text=True), answer.headers[CACHE_HEADER]


def page(client: FlaskClient, opened: Opened) -> str:
    return get(client, f"/tickets/{opened.ref}")[0]


def kept(client: FlaskClient, desk: Desk, opened: Opened) -> str:
    """The page, asked twice: the second answer is the kept page (no query but the revisions)."""
    client.get("/inbox")  # the login's welcome message is shown there, not on a kept page
    first, _ = get(client, f"/tickets/{opened.ref}")
    with counting(desk) as statements:
        second, outcome = get(client, f"/tickets/{opened.ref}")
    assert outcome == "hit"
    assert not any("conversation_entry" in s or "FROM ticket" in s for s in statements), statements
    assert text_of(second) == text_of(first)
    return second


def text_of(html: str) -> str:
    """What a reader sees (the CSRF token aside)."""
    return " ".join(parse_html(html).xpath("//main")[0].text_content().split())


@pytest.fixture
def opened(desk: Desk, people: dict[str, FlaskClient]) -> Opened:
    return open_one(desk, "Printer on fire")


def change(desk: Desk, make: Callable[[Session], object]) -> None:
    with desk.unit_of_work() as session:
        make(session)


# -- every change the page shows is shown on the next request ----------------------------------
def test_a_reply_and_a_note_show_at_once(desk: Desk, people: dict[str, FlaskClient], opened: Opened) -> None:
    tereza = people["tereza"]
    kept(tereza, desk, opened)

    change(
        desk,
        lambda s: reply_as_agent(
            s,
            desk.settings,
            ticket_ref=opened.ref,
            agent_email="jan@desk.example",
            body="On its way.",
            now=MONDAY_9,
        ),
    )
    assert "On its way." in kept(tereza, desk, opened)

    change(
        desk,
        lambda s: add_note(
            s,
            desk.settings,
            ticket_ref=opened.ref,
            agent_email="jan@desk.example",
            body="Call them.",
            now=MONDAY_9,
        ),
    )
    assert "Call them." in page(tereza, opened)


def test_a_customers_mail_shows_at_once(desk: Desk, people: dict[str, FlaskClient]) -> None:
    from .test_ticket_page import deliver, ref

    reference = ref(desk, deliver(desk, mail()))
    mailed = Opened(reference, "", 0)
    tereza = people["tereza"]
    assert "Still broken" not in kept(tereza, desk, mailed)

    follow_up(desk, reference, "1", attachments=(("log.txt", "text/plain", b"x"),))

    shown = page(tereza, mailed)
    assert "Still broken after the restart." in shown and "log.txt" in shown


@pytest.mark.parametrize("how", ["statement", "flush"])
def test_outgoing_mail_changing_state_alone_shows(
    desk: Desk, people: dict[str, FlaskClient], opened: Opened, how: str
) -> None:
    tereza = people["tereza"]
    outbox = parse_html(kept(tereza, desk, opened)).xpath("//ul[@class='outbox']")[0]
    assert "queued" in outbox.text_content()

    def sent(session: Session) -> None:
        if how == "statement":  # as the delivery worker does
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.ticket_id == opened.ticket_id)
                .values(state="sent", sent_at=MONDAY_9)
            )
        else:
            for message in session.scalars(select(OutboxMessage)):
                message.state, message.sent_at = "sent", MONDAY_9

    change(desk, sent)

    outbox = parse_html(page(tereza, opened)).xpath("//ul[@class='outbox']")[0]
    assert "queued" not in outbox.text_content() and "sent Mon 2026-03-02" in outbox.text_content()


def test_an_audit_event_alone_shows(desk: Desk, people: dict[str, FlaskClient], opened: Opened) -> None:
    tereza = people["tereza"]
    kept(tereza, desk, opened)

    change(
        desk,
        lambda s: audit.record(
            s,
            ticket_id=opened.ticket_id,
            actor="system",
            action="looked_at",
            detail="by a robot",
            now=MONDAY_9,
        ),
    )

    assert "looked at" in page(tereza, opened) and "by a robot" in page(tereza, opened)


def test_a_failed_process_shows(desk: Desk, people: dict[str, FlaskClient], opened: Opened) -> None:
    tereza = people["tereza"]
    assert "process is stopped" not in kept(tereza, desk, opened)

    def fail(session: Session) -> None:
        instance = session.scalar(
            select(WorkflowInstance).where(WorkflowInstance.ticket_id == opened.ticket_id)
        )
        assert instance is not None
        instance.status, instance.error = "failed", "the mail server said no"

    change(desk, fail)

    assert "process is stopped: the mail server said no" in page(tereza, opened)


def test_a_new_participant_and_a_new_canned_response_show(
    desk: Desk, people: dict[str, FlaskClient], opened: Opened
) -> None:
    tereza = people["tereza"]
    kept(tereza, desk, opened)

    change(
        desk,
        lambda s: s.add(
            TicketParticipant(
                ticket_id=opened.ticket_id, email="boss@customer.example", role="cc", created_at=MONDAY_9
            )
        ),
    )
    assert "Cc boss@customer.example" in kept(tereza, desk, opened)

    change(
        desk, lambda s: s.add(CannedResponse(title="Restart", body="Please restart.", created_at=MONDAY_9))
    )
    assert "Please restart." in kept(tereza, desk, opened)

    change(desk, lambda s: s.execute(update(CannedResponse).values(body="Please reboot.")))
    shown = page(tereza, opened)
    assert "Please reboot." in shown and "Please restart." not in shown


def test_claiming_completing_and_renaming_show(
    desk: Desk, people: dict[str, FlaskClient], opened: Opened
) -> None:
    tereza = people["tereza"]
    assert "unclaimed" in kept(tereza, desk, opened)

    claim(desk, opened, "jan@desk.example")
    assert "held by jan" in kept(tereza, desk, opened)

    change(desk, lambda s: setattr(user(s, "jan@desk.example"), "name", "Jan Novak"))
    assert "held by Jan Novak" in kept(tereza, desk, opened)

    def triage(session: Session) -> None:
        work(
            session,
            desk.settings,
            ticket_of(session, opened),
            user(session, "jan@desk.example"),
            TRIAGE,
            MONDAY_9,
        )

    change(desk, triage)
    shown = page(tereza, opened)
    assert "held by Jan Novak" not in shown and "task completed" in shown


def test_the_claim_button_of_the_page_comes_back_as_give_back(
    desk: Desk, people: dict[str, FlaskClient], opened: Opened
) -> None:
    tereza = people["tereza"]
    assert "Give back" not in kept(tereza, desk, opened)

    answer = post(tereza, f"/tasks/{opened.task_id}/claim", next=f"/tickets/{opened.ref}")
    assert answer.status_code == 302

    assert "Give back" in page(tereza, opened)


def test_priority_sla_clock_and_customer_changes_show(
    desk: Desk, people: dict[str, FlaskClient], opened: Opened
) -> None:
    tereza = people["tereza"]
    assert "P3" in kept(tereza, desk, opened)

    def urgent(session: Session) -> None:
        change_priority(
            session,
            desk.settings,
            ticket_of(session, opened),
            "P1",
            user=user(session, "admin@desk.example"),
            now=MONDAY_9,
        )

    change(desk, urgent)
    assert "<dt>Priority</dt><dd>P1</dd>" in kept(tereza, desk, opened)

    change(
        desk,
        lambda s: s.execute(
            update(SlaClock)
            .where(SlaClock.ticket_id == opened.ticket_id)
            .values(state="paused", paused_at=MONDAY_9, running_since=None)
        ),
    )
    assert "Paused" in kept(tereza, desk, opened)

    def bounced(session: Session) -> None:
        customer = session.scalar(select(Customer).where(Customer.email == JANA))
        assert customer is not None
        customer.bounced_at, customer.bounce_reason = MONDAY_9, "mailbox full"

    change(desk, bounced)
    assert "mailbox full" in page(tereza, opened)


def test_a_change_rolled_back_keeps_the_page(
    desk: Desk, people: dict[str, FlaskClient], opened: Opened
) -> None:
    tereza = people["tereza"]
    before = kept(tereza, desk, opened)

    with pytest.raises(RuntimeError), desk.unit_of_work() as session:
        audit.record(session, ticket_id=opened.ticket_id, actor="system", action="never", now=MONDAY_9)
        session.flush()
        raise RuntimeError("the step failed")

    shown, outcome = get(tereza, f"/tickets/{opened.ref}")
    assert outcome == "hit" and text_of(shown) == text_of(before)


# -- whose page ----------------------------------------------------------------------------------
def test_the_same_url_never_serves_one_agents_page_to_another(
    desk: Desk, people: dict[str, FlaskClient], opened: Opened
) -> None:
    claim(desk, opened, "tereza@desk.example")
    tereza, jan = people["tereza"], people["jan"]

    assert "Give back" in kept(tereza, desk, opened) and "tereza <small>(agent)" in page(tereza, opened)
    shown = kept(jan, desk, opened)
    assert "Give back" not in shown and "jan <small>(agent)" in shown
    # Petra (Tier 2) may not see it, however often Tier 1 asked for it.
    assert people["petra"].get(f"/tickets/{opened.ref}").status_code == 403


def test_leaving_the_group_closes_the_page_at_once(
    desk: Desk, people: dict[str, FlaskClient], opened: Opened
) -> None:
    jan = people["jan"]
    kept(jan, desk, opened)

    def leave(session: Session) -> None:
        jan_row = user(session, "jan@desk.example")
        jan_row.groups.clear()

    change(desk, leave)

    assert jan.get(f"/tickets/{opened.ref}").status_code == 403


def test_each_session_gets_its_own_csrf_token_in_a_kept_page(
    app: Flask, desk: Desk, people: dict[str, FlaskClient], opened: Opened
) -> None:
    first = people["tereza"]
    second = app.test_client()
    log_in(second, "tereza@desk.example")

    tokens = [
        parse_html(kept(c, desk, opened)).xpath("//input[@name='csrf_token']/@value") for c in (first, second)
    ]

    assert len(set(tokens[0])) == len(set(tokens[1])) == 1 and tokens[0][0] != tokens[1][0]
    answer = second.post(f"/tickets/{opened.ref}/note", data={"csrf_token": tokens[1][0], "body": "Seen."})
    assert answer.status_code == 302


def test_an_unchanged_page_answers_304_and_a_changed_one_200(
    desk: Desk, people: dict[str, FlaskClient], opened: Opened
) -> None:
    tereza = people["tereza"]
    kept(tereza, desk, opened)
    answer = tereza.get(f"/tickets/{opened.ref}")
    tag = answer.headers["ETag"]
    assert tag.startswith('W/"') and answer.headers["Cache-Control"] == "private, no-cache"

    again = tereza.get(f"/tickets/{opened.ref}", headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.get_data() == b""

    claim(desk, opened, "jan@desk.example")
    changed = tereza.get(f"/tickets/{opened.ref}", headers={"If-None-Match": tag})
    assert changed.status_code == 200 and "held by jan" in changed.get_data(as_text=True)


def test_a_flashed_message_is_shown_once_and_not_kept(
    desk: Desk, people: dict[str, FlaskClient], opened: Opened
) -> None:
    tereza = people["tereza"]
    kept(tereza, desk, opened)
    answer = tereza.post(
        f"/tickets/{opened.ref}/note", data={"csrf_token": test_inbox.token(tereza), "body": "Seen."}
    )
    assert answer.status_code == 302

    shown, outcome = get(tereza, f"/tickets/{opened.ref}")
    assert outcome == "off" and "Internal note added" in shown
    assert "Internal note added" not in kept(tereza, desk, opened)


def test_a_refused_reply_is_re_shown_not_kept(
    desk: Desk, people: dict[str, FlaskClient], opened: Opened
) -> None:
    tereza = people["tereza"]
    kept(tereza, desk, opened)
    answer = tereza.post(
        f"/tickets/{opened.ref}/reply", data={"csrf_token": test_inbox.token(tereza), "body": " "}
    )
    assert answer.status_code == 422

    assert 'aria-invalid="true"' not in kept(tereza, desk, opened)


def test_without_its_revision_row_nothing_is_kept(
    desk: Desk, people: dict[str, FlaskClient], opened: Opened
) -> None:
    tereza = people["tereza"]
    kept(tereza, desk, opened)
    change(desk, lambda s: s.execute(delete(InboxRevision).where(InboxRevision.id == PAGE_ROW)))

    assert [get(tereza, f"/tickets/{opened.ref}")[1] for _ in range(2)] == ["off", "off"]


# -- time ----------------------------------------------------------------------------------------
def test_sla_shares_are_those_of_the_minute(desk: Desk, clock: Clock, people: dict[str, FlaskClient]) -> None:
    opened = open_one(desk, "Server down", priority="P1")  # first response: 1 h, 1 % = 36 s
    tereza = people["tereza"]
    clock.advance(minutes=30)
    assert "50 %" in kept(tereza, desk, opened)

    clock.advance(seconds=50)  # 51.4 % used, but still the minute the page was made in
    assert "50 %" in kept(tereza, desk, opened)

    clock.advance(seconds=10)  # 09:31: 51.7 %
    shown = page(tereza, opened)
    assert "52 %" in shown and "50 %" not in shown
