"""GET /tickets: queues, filters, pages, search, the reference jump, visibility, bounded queries."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, select

from workflows.app import Desk
from workflows.models import ConversationEntry, Customer, Group, Ticket, User

from ..conftest import MONDAY_9
from .conftest import log_in

_requesters = itertools.count()


def add_tickets(
    desk: Desk,
    count: int,
    *,
    subject: str = "Printer {i} jammed",
    body: str = "Paper stuck in tray {i}",
    group: str | None = "tier-1",
    status: str = "open",
    priority: str = "P3",
    assignee: User | None = None,
    due: timedelta | None = None,
) -> list[int]:
    """``count`` tickets (each with its own requester and one message); their ids."""
    ids = []
    with desk.unit_of_work() as session:
        group_id = session.scalar(select(Group.id).where(Group.slug == group)) if group else None
        for i in range(count):
            n = next(_requesters)
            requester = Customer(email=f"c{n}@customer.example", name=f"Customer {n}", created_at=MONDAY_9)
            ticket = Ticket(
                subject=subject.format(i=i),
                status=status,
                priority=priority,
                requester=requester,
                group_id=group_id,
                assignee_id=assignee.id if assignee else None,
                created_at=MONDAY_9 - timedelta(minutes=count - i),
                updated_at=MONDAY_9 - timedelta(minutes=count - i),
                sla_due_at=MONDAY_9 + due if due is not None else None,
            )
            session.add(ticket)
            session.flush()
            session.add(
                ConversationEntry(
                    ticket_id=ticket.id, kind="inbound", body=body.format(i=i), created_at=MONDAY_9
                )
            )
            ids.append(ticket.id)
    return ids


def refs(html: str) -> list[str]:
    return re.findall(r'<th scope="row"><a href="/tickets/(LD-\d+)">', html)


def ref(ticket_id: int) -> str:
    return f"LD-{ticket_id + 1000}"


def page(client: FlaskClient, query: str = "") -> str:
    answer = client.get(f"/tickets{query}")
    assert answer.status_code == 200, answer.get_data(as_text=True)[:2000]
    return answer.get_data(as_text=True)


def test_the_list_is_accessible_and_works_without_javascript(desk: Desk, agent_client: FlaskClient) -> None:
    [only] = add_tickets(desk, 1, subject="Keyboard <b>sticky</b>")
    html = page(agent_client)
    assert refs(html) == [ref(only)]
    assert "<caption>1 ticket," in html
    assert html.count('<th scope="col">') == 9
    assert "Keyboard &lt;b&gt;sticky&lt;/b&gt;" in html
    form = re.search(r'<form class="filters" method="get" action="/tickets"', html)
    assert form, "the filters are a plain GET form"
    for control in ("f-q", "f-status", "f-group", "f-assignee", "f-priority", "f-breached", "f-sort"):
        assert f'id="{control}"' in html and f'for="{control}"' in html, control
    assert 'aria-current="page">Tickets</a>' in html


def test_anonymous_visitors_are_sent_to_the_login(app: Flask) -> None:
    answer = app.test_client().get("/tickets?q=printer")
    assert answer.status_code == 302 and "/login" in answer.headers["Location"]


def test_unresolved_by_default_and_the_status_filter(desk: Desk, agent_client: FlaskClient) -> None:
    [waiting] = add_tickets(desk, 1, status="waiting_on_customer")
    [resolved] = add_tickets(desk, 1, status="resolved")
    [closed] = add_tickets(desk, 1, status="closed")
    assert refs(page(agent_client)) == [ref(waiting)]
    assert set(refs(page(agent_client, "?status=all"))) == {ref(waiting), ref(resolved), ref(closed)}
    assert refs(page(agent_client, "?status=closed")) == [ref(closed)]
    assert refs(page(agent_client, "?status=bogus")) == [ref(waiting)]
    html = page(agent_client)
    for status in ("new", "open", "waiting_on_customer", "escalated", "resolved", "closed"):
        assert f'<option value="{status}"' in html


def test_group_assignee_priority_and_breached_filters(
    desk: Desk, agent_client: FlaskClient, make_user: Callable[..., User]
) -> None:
    tereza = desk_user(desk, "tereza@desk.example")
    petr = make_user("petr@desk.example", groups=("tier-1",))
    [mine] = add_tickets(desk, 1, assignee=tereza, priority="P1", due=timedelta(minutes=-5))
    [petrs] = add_tickets(desk, 1, assignee=petr, due=timedelta(hours=2))
    [nobodys] = add_tickets(desk, 1, group=None)
    assert refs(page(agent_client, "?assignee=me")) == [ref(mine)]
    assert refs(page(agent_client, f"?assignee={petr.id}")) == [ref(petrs)]
    assert set(refs(page(agent_client, "?assignee=none"))) == {ref(nobodys)}
    assert set(refs(page(agent_client, "?group=tier-1"))) == {ref(mine), ref(petrs)}
    assert refs(page(agent_client, "?group=none")) == [ref(nobodys)]
    assert refs(page(agent_client, "?priority=P1")) == [ref(mine)]
    breached = page(agent_client, "?breached=1")
    assert refs(breached) == [ref(mine)]
    assert 'class="sla sla-bad"' in breached and "5 min overdue" in breached
    assert refs(page(agent_client, "?sort=urgent")) == [ref(mine), ref(petrs), ref(nobodys)]
    assert 'class="sla sla-ok"' in page(agent_client, f"?assignee={petr.id}")


def desk_user(desk: Desk, email: str) -> User:
    with desk.unit_of_work() as session:
        found = session.scalar(select(User).where(User.email == email))
        assert found is not None
        return found


def test_pages_of_fifty_with_links_that_keep_the_filters(desk: Desk, agent_client: FlaskClient) -> None:
    ids = add_tickets(desk, 60, priority="P2")
    add_tickets(desk, 3, priority="P4")
    first = page(agent_client, "?priority=P2&sort=oldest")
    assert refs(first) == [ref(i) for i in ids[:50]]
    assert "60 tickets, page 1 of 2" in first
    links = set(re.findall(r'href="(/tickets\?[^"]+)"', first))
    next_link = "/tickets?priority=P2&amp;sort=oldest&amp;page=2"
    assert next_link in links
    second = page(agent_client, next_link.replace("&amp;", "&").removeprefix("/tickets"))
    assert refs(second) == [ref(i) for i in ids[50:]]
    assert 'aria-current="page" aria-label="Page 2, current page"' in second
    assert "/tickets?priority=P2&amp;sort=oldest&amp;page=1" in second
    assert refs(page(agent_client, "?priority=P2&sort=oldest&page=99")) == [ref(i) for i in ids[50:]]


def test_search_is_combined_with_the_filters_and_ranked(desk: Desk, agent_client: FlaskClient) -> None:
    [in_body] = add_tickets(desk, 1, subject="Question", body="the scanner beeps")
    [in_subject] = add_tickets(desk, 1, subject="Scanner beeps", body="since Monday")
    [closed] = add_tickets(desk, 1, subject="Scanner", body="beeps, fixed", status="closed")
    assert refs(page(agent_client, "?q=scanner+beeps")) == [ref(in_subject), ref(closed), ref(in_body)]
    assert refs(page(agent_client, "?q=scanner+beeps&status=unresolved")) == [ref(in_subject), ref(in_body)]
    assert refs(page(agent_client, "?q=monday")) == [ref(in_subject)]
    html = page(agent_client, "?q=scanner+beeps")
    assert 'value="scanner beeps"' in html and "best match first" in html
    assert 'id="q" name="q" type="search" placeholder="Search tickets" value="scanner beeps"' in html


@pytest.mark.parametrize(
    "q", ['"', "NEAR(", "*", "AND OR", "'; drop table ticket; --", "東京 😀", "x" * 3000]
)
def test_hostile_searches_answer_a_page(desk: Desk, agent_client: FlaskClient, q: str) -> None:
    add_tickets(desk, 2)
    answer = agent_client.get("/tickets", query_string={"q": q})
    assert answer.status_code == 200


def test_a_reference_jumps_to_the_ticket(desk: Desk, agent_client: FlaskClient) -> None:
    [visible] = add_tickets(desk, 1)
    [hidden] = add_tickets(desk, 1, group="tier-2")
    for q in (ref(visible), ref(visible).lower(), str(visible + 1000)):
        answer = agent_client.get("/tickets", query_string={"q": q})
        assert answer.status_code == 302, q
        assert answer.headers["Location"].endswith(f"/tickets/{ref(visible)}")
    # Another group's ticket (or none at all) is not revealed: the search simply runs.
    for q in (ref(hidden), "LD-999999"):
        answer = agent_client.get("/tickets", query_string={"q": q})
        assert answer.status_code == 200 and refs(answer.get_data(as_text=True)) == []


def test_another_groups_tickets_stay_invisible(
    desk: Desk, app: Flask, agent_client: FlaskClient, make_user: Callable[..., User]
) -> None:
    [ours] = add_tickets(desk, 1, subject="Secret-ish {i}", group="tier-1")
    [theirs] = add_tickets(desk, 1, subject="Secret-ish {i}", group="tier-2")
    [ungrouped] = add_tickets(desk, 1, subject="Secret-ish {i}", group=None)
    for query in ("", "?status=all", "?q=secret", "?group=tier-2", f"?assignee=none&q={ref(theirs)}"):
        shown = refs(page(agent_client, query))
        assert ref(theirs) not in shown, query
    assert set(refs(page(agent_client, "?q=secret"))) == {ref(ours), ref(ungrouped)}
    make_user("ada@desk.example", role="admin", groups=())
    admin = app.test_client()
    log_in(admin, "ada@desk.example")
    assert set(refs(page(admin, "?q=secret"))) == {ref(ours), ref(theirs), ref(ungrouped)}


@pytest.fixture
def statements(desk: Desk) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(desk.engine, "before_cursor_execute", count)
    yield seen
    event.remove(desk.engine, "before_cursor_execute", count)


@pytest.mark.parametrize("query", ["", "?q=printer+tray", "?sort=urgent&assignee=none"])
def test_the_number_of_queries_does_not_grow_with_the_page(
    desk: Desk,
    agent_client: FlaskClient,
    make_user: Callable[..., User],
    statements: list[str],
    query: str,
) -> None:
    colleagues = [make_user(f"agent{i}@desk.example") for i in range(3)]

    def queries_for_page() -> int:
        statements.clear()
        html = page(agent_client, query)
        assert refs(html)
        return len(statements)

    add_tickets(desk, 2, assignee=colleagues[0])
    add_tickets(desk, 3, group="tier-1")
    small = queries_for_page()
    for colleague in colleagues:
        add_tickets(desk, 15, assignee=colleague, due=timedelta(hours=1))
    add_tickets(desk, 10, group=None)
    large = queries_for_page()
    assert small == large, statements
    assert large <= 10, statements


def test_too_many_matches_are_listed_newest_first(
    desk: Desk, agent_client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import workflows.search

    ids = add_tickets(desk, 3, subject="Scanner {i}", body="scanner scanner {i}")
    monkeypatch.setattr(workflows.search, "RANK_LIMIT", 2)
    html = page(agent_client, "?q=scanner")
    assert refs(html) == [ref(i) for i in reversed(ids)]
    assert "listed newest first, not by relevance" in html and "newest first</caption>" in html
    assert "<caption>3 tickets," in html
    monkeypatch.setattr(workflows.search, "COUNT_LIMIT", 2)
    html = page(agent_client, "?q=scanner")
    assert "<caption>More than 2 tickets," in html
    assert refs(html) == [ref(i) for i in reversed(ids)]
