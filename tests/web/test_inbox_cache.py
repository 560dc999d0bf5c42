"""The inbox's kept pages and ETags: never stale after a change it shows, never another's page.

Every test holds the clock still (the same minute) unless it moves it on purpose, so only the
revision of what the inbox shows can tell the kept page from a new one.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tests.workflows.helpers import TRIAGE, open_task, work
from workflows.app import Desk
from workflows.models import Customer, Group, SlaClock, Ticket, User
from workflows.tickets import change_priority
from workflows.worklist import release_task

from ..conftest import MONDAY_9
from . import test_inbox
from .conftest import log_in
from .test_auth import Clock
from .test_inbox import claim, counting, escalated, open_one, parse_html, post, rows_of

ALL = "/inbox?view=all"
# The logged-in agents (tereza and jan of Tier 1, petra of Tier 2, an admin) and the hand-moved clock.
people = test_inbox.people
clock = test_inbox.clock


def user(session: Session, email: str) -> User:
    found = session.scalar(select(User).where(User.email == email))
    assert found is not None
    return found


def page(client: FlaskClient, url: str = ALL) -> str:
    answer = client.get(url)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.get_data(as_text=True)


def kept(client: FlaskClient, desk: Desk, url: str = ALL) -> str:
    """The page, asked twice: the second answer comes from the kept page (no inbox query).

    A full page showing a flashed message (the login's welcome) is never kept: one is read first.
    """
    page(client, "/inbox")
    first = page(client, url)
    with counting(desk) as statements:
        second = page(client, url)
    assert not any("FROM human_task" in s for s in statements), statements
    assert rows_of(second) == rows_of(first)
    return second


def row(html: str, task_id: str) -> Any:
    return next(tr for tr in parse_html(html).xpath("//tbody/tr") if task_id in tr.xpath(".//a/@href")[-1])


def cells(html: str, task_id: str) -> list[str]:
    return [" ".join(td.text_content().split()) for td in row(html, task_id).xpath("./td")]


# -- every change the inbox shows is shown on the next request ----------------------------------
def test_claiming_giving_back_and_assigning_show_at_once(desk: Desk, people: dict[str, FlaskClient]) -> None:
    opened = open_one(desk, "Printer on fire")
    admin = people["admin"]
    assert cells(kept(admin, desk), opened.task_id)[7] == "—"

    claim(desk, opened, "tereza@desk.example")
    assert cells(page(admin), opened.task_id)[7] == "tereza"

    with desk.unit_of_work() as session:
        tereza = user(session, "tereza@desk.example")
        release_task(session, desk.settings, task_id=opened.task_id, user=tereza, to=None, now=MONDAY_9)
    assert cells(kept(admin, desk), opened.task_id)[7] == "—"

    with desk.unit_of_work() as session:
        tereza, jan = user(session, "tereza@desk.example"), user(session, "jan@desk.example")
        release_task(session, desk.settings, task_id=opened.task_id, user=tereza, to=jan, now=MONDAY_9)
    assert cells(page(admin), opened.task_id)[7] == "jan"


def test_a_claim_through_the_page_shows_in_the_next_poll(desk: Desk, people: dict[str, FlaskClient]) -> None:
    opened = open_one(desk, "Printer on fire")
    tereza = people["tereza"]
    kept(tereza, desk, "/inbox/rows?view=all")

    assert post(tereza, f"/tasks/{opened.task_id}/claim").status_code == 302

    assert cells(page(tereza, "/inbox/rows?view=all"), opened.task_id)[7] == "tereza"
    assert [r.task_id for r in rows_of(page(tereza, "/inbox?view=groups"))] == []


def test_a_completed_task_goes_and_the_next_one_comes(desk: Desk, people: dict[str, FlaskClient]) -> None:
    opened = open_one(desk, "Cannot log in")
    admin = people["admin"]
    assert [r.task_id for r in rows_of(kept(admin, desk))] == [opened.task_id]

    with desk.unit_of_work() as session:
        ticket = session.get(Ticket, opened.ticket_id)
        assert ticket is not None
        work(session, desk.settings, ticket, user(session, "tereza@desk.example"), TRIAGE, MONDAY_9)
        following = open_task(session, ticket).id

    assert [r.task_id for r in rows_of(page(admin))] == [following]


def test_a_new_task_appears(desk: Desk, people: dict[str, FlaskClient]) -> None:
    first = open_one(desk, "First")
    tereza = people["tereza"]
    assert [r.task_id for r in rows_of(kept(tereza, desk))] == [first.task_id]

    second = open_one(desk, "Second")

    assert sorted(r.task_id for r in rows_of(page(tereza))) == sorted([first.task_id, second.task_id])


def test_a_priority_change_shows(desk: Desk, people: dict[str, FlaskClient]) -> None:
    opened = open_one(desk, "Slow search", priority="P4")
    admin = people["admin"]
    assert cells(kept(admin, desk), opened.task_id)[5] == "P4"

    with desk.unit_of_work() as session:
        ticket = session.get(Ticket, opened.ticket_id)
        assert ticket is not None
        change_priority(
            session, desk.settings, ticket, "P1", user=user(session, "admin@desk.example"), now=MONDAY_9
        )

    assert cells(page(admin), opened.task_id)[5] == "P1"


def test_an_sla_clock_change_shows(desk: Desk, clock: Clock, people: dict[str, FlaskClient]) -> None:
    opened = open_one(desk, "Server down", priority="P1")  # first response: 1 h
    clock.advance(minutes=30)
    admin = people["admin"]
    assert "50 %" in cells(kept(admin, desk), opened.task_id)[0]

    with desk.unit_of_work() as session:  # as a pause would: the clock stops using time
        for row_ in session.scalars(select(SlaClock).where(SlaClock.ticket_id == opened.ticket_id)):
            row_.state, row_.elapsed_seconds, row_.running_since = "paused", 1800, None

    assert cells(page(admin), opened.task_id)[0] == "paused"


@pytest.mark.parametrize("what", ["subject", "requester", "group", "bulk subject"])
def test_a_changed_subject_requester_or_group_name_shows(
    desk: Desk, people: dict[str, FlaskClient], what: str
) -> None:
    opened = open_one(desk, "Old subject")
    tereza = people["tereza"]
    kept(tereza, desk)

    with desk.unit_of_work() as session:
        ticket = session.get(Ticket, opened.ticket_id)
        assert ticket is not None
        if what == "subject":
            ticket.subject = "New subject"
        elif what == "bulk subject":
            session.execute(update(Ticket).where(Ticket.id == ticket.id).values(subject="New subject"))
        elif what == "requester":
            customer = session.get(Customer, ticket.requester_id)
            assert customer is not None
            customer.name = "New Name"
        else:
            group = session.scalar(select(Group).where(Group.slug == "tier-1"))
            assert group is not None
            group.name = "First line"

    shown = cells(page(tereza), opened.task_id)
    expected = {"subject": (1, "New subject"), "bulk subject": (1, "New subject")}
    column, text = expected.get(what, (2, "New Name") if what == "requester" else (4, "First line"))
    assert text in shown[column]


def test_a_change_rolled_back_keeps_the_page(desk: Desk, people: dict[str, FlaskClient]) -> None:
    opened = open_one(desk, "Old subject")
    tereza = people["tereza"]
    before = kept(tereza, desk)

    with pytest.raises(RuntimeError), desk.unit_of_work() as session:
        ticket = session.get(Ticket, opened.ticket_id)
        assert ticket is not None
        ticket.subject = "Never committed"
        session.flush()
        raise RuntimeError("the step failed")

    answer = tereza.get(ALL)
    assert answer.headers["X-Inbox-Cache"] == "hit"
    assert rows_of(answer.get_data(as_text=True)) == rows_of(before)


# -- whose page ----------------------------------------------------------------------------------
def test_the_same_url_never_serves_one_agents_page_to_another(
    desk: Desk, people: dict[str, FlaskClient]
) -> None:
    tier_1 = open_one(desk, "Tier 1 work")
    tier_2 = escalated(desk, "Tier 2 work")
    claim(desk, tier_1, "tereza@desk.example")

    seen = {name: [r.task_id for r in rows_of(kept(people[name], desk))] for name in people}

    assert seen["tereza"] == seen["jan"] == [tier_1.task_id]
    assert seen["petra"] == [tier_2.task_id]
    assert sorted(seen["admin"]) == sorted([tier_1.task_id, tier_2.task_id])
    # The same rows, but each agent's own actions: she gives back, he cannot touch it.
    assert "Give back" in cells(page(people["tereza"]), tier_1.task_id)[8]
    assert cells(page(people["jan"]), tier_1.task_id)[8] == ""


def test_joining_a_group_shows_its_tasks_at_once(desk: Desk, people: dict[str, FlaskClient]) -> None:
    tier_2 = escalated(desk, "Tier 2 work")
    tereza = people["tereza"]
    assert tier_2.task_id not in [r.task_id for r in rows_of(kept(tereza, desk))]

    with desk.unit_of_work() as session:
        group = session.scalar(select(Group).where(Group.slug == "tier-2"))
        assert group is not None
        tereza_row = user(session, "tereza@desk.example")
        tereza_row.groups.append(group)

    assert tier_2.task_id in [r.task_id for r in rows_of(page(tereza))]


def test_each_session_gets_its_own_csrf_token_in_a_kept_page(
    app: Flask, desk: Desk, people: dict[str, FlaskClient]
) -> None:
    opened = open_one(desk, "Printer on fire")
    first = people["tereza"]
    second = app.test_client()
    log_in(second, "tereza@desk.example")
    page(second)  # the welcome message: shown once, not kept

    tokens = [
        parse_html(kept(c, desk)).xpath("//tbody//input[@name='csrf_token']/@value")[0]
        for c in (first, second)
    ]

    assert tokens[0] != tokens[1]
    assert post(second, f"/tasks/{opened.task_id}/claim").status_code == 302


# -- conditional requests ------------------------------------------------------------------------
def test_an_unchanged_page_answers_304_and_a_changed_one_200(
    desk: Desk, people: dict[str, FlaskClient]
) -> None:
    opened = open_one(desk, "Printer on fire")
    tereza = people["tereza"]
    url = "/inbox/rows?view=all"
    answer = tereza.get(url)
    tag = answer.headers["ETag"]
    assert tag.startswith('W/"') and answer.headers["Cache-Control"] == "private, no-cache"

    again = tereza.get(url, headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.get_data() == b"" and again.headers["ETag"] == tag

    claim(desk, opened, "jan@desk.example")
    changed = tereza.get(url, headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["ETag"] != tag
    assert cells(changed.get_data(as_text=True), opened.task_id)[7] == "jan"


def test_another_session_never_revalidates_a_page_with_a_foreign_token(
    app: Flask, desk: Desk, people: dict[str, FlaskClient]
) -> None:
    open_one(desk, "Printer on fire")
    tag = people["tereza"].get("/inbox/rows?view=all").headers["ETag"]
    other = app.test_client()
    log_in(other, "tereza@desk.example")

    assert other.get("/inbox/rows?view=all", headers={"If-None-Match": tag}).status_code == 200


# -- time ----------------------------------------------------------------------------------------
def test_ages_and_sla_percentages_are_those_of_the_minute(
    desk: Desk, clock: Clock, people: dict[str, FlaskClient]
) -> None:
    opened = open_one(desk, "Server down", priority="P1")  # first response: 1 h, 1 % = 36 s
    admin = people["admin"]
    before = cells(kept(admin, desk), opened.task_id)
    assert (before[0], before[6]) == ("0 %", "0 min")

    clock.advance(seconds=50)  # 1.4 % used, but still the minute the page was made in
    assert cells(kept(admin, desk), opened.task_id)[0] == "0 %"

    clock.advance(seconds=10)  # 09:01: 1.7 %, one minute old
    assert (cells(page(admin), opened.task_id)[0], cells(page(admin), opened.task_id)[6]) == ("2 %", "1 min")


def test_a_flashed_message_is_shown_once_even_on_a_kept_page(
    desk: Desk, people: dict[str, FlaskClient]
) -> None:
    opened = open_one(desk, "Printer on fire")
    tereza = people["tereza"]
    kept(tereza, desk)
    post(tereza, f"/tasks/{opened.task_id}/claim")

    shown = page(tereza)
    assert "You hold" in shown
    assert "You hold" not in kept(tereza, desk)
