"""The workspace in a real browser: headless Chromium (Debian's /usr/bin/chromium) via Playwright.

One agent's morning: log in, claim the new ticket's triage task, submit its form with a mistake
and then fixed, watch the diagram's highlight move from triage to the next task, and answer the
customer. The app runs in a real HTTP server on loopback (werkzeug, in a thread) against the
suite's database. Screenshots go to var/screenshots/ (not committed) for a human to look at.

Skipped when Chromium or the npm packages are missing, unless LANEDESK_REQUIRE_CHROMIUM=1 (CI).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from sqlalchemy import select

from workflows.app import Desk
from workflows.models import ConversationEntry, HumanTask, OutboxMessage, User
from workflows.tickets import open_ticket

from ..conftest import MONDAY_9
from .browser import chromium_tab, require_browser, serve, shot
from .conftest import PASSWORD

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def server(app: Flask) -> Iterator[str]:
    require_browser()
    with serve(app) as url:
        yield url


@pytest.fixture
def page(server: str) -> Iterator[object]:
    with chromium_tab(width=1280, expected="status of 422") as tab:
        yield tab


def marked(tab: object, marker: str) -> set[str]:
    """Element ids the diagram shows with ``marker`` (bpmn-js puts it on the element's <g>)."""
    ids = tab.eval_on_selector_all(  # type: ignore[attr-defined]
        f".diagram g.djs-element.{marker}", "els => els.map(e => e.getAttribute('data-element-id'))"
    )
    return set(ids)


def test_an_agent_claims_fills_in_the_form_watches_the_diagram_and_replies(
    desk: Desk, server: str, page: object, make_user: Callable[..., User]
) -> None:
    make_user("tereza@desk.example", groups=("tier-1",))
    with desk.unit_of_work() as session:
        ticket = open_ticket(
            session,
            desk.settings,
            requester="jana@customer.example",
            subject="VPN drops every hour",
            body="Since Monday the VPN disconnects every hour.",
            now=MONDAY_9,
        )
        reference = f"{desk.settings.ticket_prefix}-{ticket.number}"
    tab = page

    tab.goto(f"{server}/inbox")  # type: ignore[attr-defined]
    assert tab.url.startswith(f"{server}/login")  # type: ignore[attr-defined]
    tab.get_by_label("E-mail").fill("tereza@desk.example")  # type: ignore[attr-defined]
    tab.get_by_label("Password").fill(PASSWORD)  # type: ignore[attr-defined]
    tab.get_by_role("button", name="Log in").click()  # type: ignore[attr-defined]
    tab.get_by_role("link", name="My groups, unclaimed").click()  # type: ignore[attr-defined]
    row = tab.get_by_role("row").filter(has_text=reference)  # type: ignore[attr-defined]
    sync_api.expect(row).to_contain_text("Triage")
    shot(tab, "1-inbox")

    row.get_by_role("button", name="Claim").click()
    sync_api.expect(tab.get_by_role("status")).to_contain_text("You hold")  # type: ignore[attr-defined]
    with desk.unit_of_work(readonly=True) as session:
        task = session.scalars(select(HumanTask).where(HumanTask.state == "open")).one()
        assert task.assignee is not None and task.assignee.email == "tereza@desk.example"

    # The ticket page before: triage is where the ticket stands.
    tab.goto(f"{server}/tickets/{reference}")  # type: ignore[attr-defined]
    tab.wait_for_selector(".diagram g.djs-element.current")  # type: ignore[attr-defined]
    before = marked(tab, "current")  # the task, and the events waiting on its boundary
    assert "triage" in before and "work_tier_1" not in before
    shot(tab, "2-ticket-before")

    # The form, first with a mistake: the summary is required.
    tab.goto(f"{server}/tasks/{task.id}")  # type: ignore[attr-defined]
    tab.get_by_label("Category").select_option("incident")  # type: ignore[attr-defined]
    tab.get_by_label("Priority").select_option("P2")  # type: ignore[attr-defined]
    tab.get_by_label("Summary").fill("")  # type: ignore[attr-defined]
    tab.get_by_role("button", name="Complete “Triage”").click()  # type: ignore[attr-defined]
    summary = tab.get_by_label("Summary")  # type: ignore[attr-defined]
    sync_api.expect(summary).to_have_attribute("aria-invalid", "true")
    sync_api.expect(tab.locator("#e-summary")).to_contain_text("is required")  # type: ignore[attr-defined]
    sync_api.expect(tab.get_by_label("Priority")).to_have_value("P2")  # type: ignore[attr-defined]
    shot(tab, "3-form-error")
    summary.fill("VPN drops hourly for one user")
    tab.get_by_role("button", name="Complete “Triage”").click()  # type: ignore[attr-defined]

    # Back on the ticket: the highlight moved on, triage is marked as done.
    tab.wait_for_url(f"{server}/tickets/{reference}*")  # type: ignore[attr-defined]
    tab.wait_for_selector(".diagram g.djs-element.completed")  # type: ignore[attr-defined]
    current = marked(tab, "current")
    assert "triage" not in current and "work_tier_1" in current
    assert "triage" in marked(tab, "completed")
    shot(tab, "4-ticket-after")

    # Answer the customer.
    tab.get_by_label("Your reply").fill("Please send us the VPN client's log file.")  # type: ignore[attr-defined]
    tab.get_by_role("button", name="Send reply").click()  # type: ignore[attr-defined]
    sync_api.expect(tab.locator(".entry.outbound").last).to_contain_text("VPN client's log file")  # type: ignore[attr-defined]
    shot(tab, "5-replied")
    with desk.unit_of_work(readonly=True) as session:
        reply = session.scalars(select(ConversationEntry).where(ConversationEntry.kind == "outbound")).one()
        assert reply.body == "Please send us the VPN client's log file."
        mailed = session.scalars(select(OutboxMessage).where(OutboxMessage.template == "agent_reply")).one()
        assert (mailed.recipient, mailed.state) == ("jana@customer.example", "queued")
