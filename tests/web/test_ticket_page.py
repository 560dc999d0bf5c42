"""The ticket page: conversation, reply and note, properties, attachments, mail HTML, diagram."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, select

from engine.state import waiting_elements
from workflows.app import Desk
from workflows.definitions import deploy_definition
from workflows.inbound import Envelope, process_mail, store_raw
from workflows.models import (
    Attachment,
    AuditEvent,
    CannedResponse,
    ConversationEntry,
    DefinitionContent,
    HumanTask,
    MailMessage,
    OutboxMessage,
    ProcessVersion,
    Ticket,
    User,
)
from workflows.ticket_page import forget_mail_facts
from workflows.tickets import add_note, reply_as_agent
from workflows.worklist import complete_task

from ..conftest import MONDAY_9
from ..workflows.helpers import TRIAGE
from .conftest import csrf_of, log_in

SUPPORT = "support@desk.example"
JANA = "jana@customer.example"
MAIL_CSP = "sandbox; default-src 'none'; img-src data: cid:; style-src 'unsafe-inline'"
FIRST = """Since Monday the VPN drops every hour.

Jana Nováková
Customer Ltd."""
FOLLOW_UP = """Still broken after the restart.

On Mon, 2 Mar 2026 at 09:05, Lanedesk <support@desk.example> wrote:
> We received your request and will answer soon.
> Your reference is LD-1001."""


def mail(
    *,
    subject: str = "VPN drops every hour",
    text: str = FIRST,
    html: str | None = None,
    message_id: str = "<m1@customer.example>",
    attachments: tuple[tuple[str, str, bytes], ...] = (),
    sender: str = JANA,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Jana Nováková <{sender}>"
    msg["To"] = SUPPORT
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    for filename, content_type, data in attachments:
        maintype, subtype = content_type.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return bytes(msg)


def deliver(desk: Desk, raw: bytes) -> int:
    """Store and process one inbound mail; the ticket it went to."""
    with desk.unit_of_work() as session:
        stored = store_raw(session, raw, Envelope("smtp", "bounce@x.example", (SUPPORT,)), now=MONDAY_9)
        outcome = process_mail(session, desk.settings, stored.id, now=MONDAY_9)
    assert outcome.state == "processed" and outcome.ticket_id is not None, outcome
    return outcome.ticket_id


def ref(desk: Desk, ticket_id: int) -> str:
    return f"{desk.settings.ticket_prefix}-{ticket_id + 1000}"


def follow_up(desk: Desk, reference: str, tag: str, **kw: Any) -> None:
    subject = f"Re: [{reference}] VPN drops"
    deliver(desk, mail(subject=subject, text=FOLLOW_UP, message_id=f"<f-{tag}@c.example>", **kw))


@pytest.fixture
def ticket(desk: Desk) -> str:
    """A ticket opened by mail (with a PDF), then a customer follow-up quoting the desk."""
    reference = ref(
        desk, deliver(desk, mail(attachments=(("report.pdf", "application/pdf", b"%PDF-1.4 x"),)))
    )
    follow_up(desk, reference, "1")
    return reference


def page_of(client: FlaskClient, reference: str) -> str:
    answer = client.get(f"/tickets/{reference}")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.get_data(as_text=True)


def entries_html(page: str) -> list[str]:
    return re.findall(r'<article class="entry (\w+)".*?</article>', page, re.S)


def rows(desk: Desk, model: type[Any], *where: Any) -> list[Any]:
    with desk.unit_of_work(readonly=True) as session:
        return list(session.scalars(select(model).where(*where)))


# -- conversation ---------------------------------------------------------------------------------
def test_it_shows_the_conversation_oldest_first_with_quotes_folded(
    agent_client: FlaskClient, desk: Desk, ticket: str
) -> None:
    page = page_of(agent_client, ticket)

    articles = re.findall(r'<article class="entry (\w+)"(.*?)</article>', page, re.S)
    assert [kind for kind, _ in articles] == ["inbound", "inbound"]
    opening, reply = (body for _, body in articles)
    assert "Since Monday the VPN drops every hour." in opening
    assert "Jana Nováková" in opening and "Mon 2026-03-02 09:00 UTC" in opening  # who and when
    shown, folded = reply.split("<details", 1)
    assert "Still broken after the restart." in shown
    assert "We received your request" not in shown
    assert "quoted text folded" in folded
    assert "&gt; We received your request and will answer soon." in folded


def test_it_styles_replies_notes_and_automatic_entries_apart(
    agent_client: FlaskClient, desk: Desk, ticket: str
) -> None:
    with desk.unit_of_work() as session:
        reply_as_agent(
            session,
            desk.settings,
            ticket_ref=ticket,
            agent_email="tereza@desk.example",
            body="Try this.",
            now=MONDAY_9,
        )
        add_note(
            session,
            desk.settings,
            ticket_ref=ticket,
            agent_email="tereza@desk.example",
            body="Looks like DHCP.",
            now=MONDAY_9,
        )
        ticket_id = int(ticket.split("-")[1]) - 1000
        session.add(
            ConversationEntry(ticket_id=ticket_id, kind="auto", body="Out of office", created_at=MONDAY_9)
        )

    page = page_of(agent_client, ticket)

    assert entries_html(page) == ["inbound", "inbound", "outbound", "note", "auto"]
    articles = dict(re.findall(r'<article class="entry (\w+)"(.*?)</article>', page, re.S))
    assert "<strong>tereza</strong>" in articles["outbound"] and "replied" in articles["outbound"]
    assert "<strong>tereza</strong>" in articles["note"] and "internal note" in articles["note"]
    assert "Automatic message" in articles["auto"]
    assert "Mailed to jana@customer.example (queued)" in articles["outbound"]


# -- mail HTML and attachments ----------------------------------------------------------------------
EVIL_HTML = (
    "<p>Hello <b>bold</b> world</p><script>alert('pwned')</script>"
    '<img src="x" onerror="alert(1)"><a href="javascript:alert(2)">link</a>'
)


def test_html_of_a_mail_is_only_served_sandboxed_and_without_script(
    agent_client: FlaskClient, desk: Desk
) -> None:
    reference = ref(desk, deliver(desk, mail(text="Hello bold world", html=EVIL_HTML)))
    mail_id = rows(desk, MailMessage)[0].id

    page = page_of(agent_client, reference)
    html = agent_client.get(f"/mail/{mail_id}/html")

    assert "alert(" not in page and "<b>bold</b>" not in page  # the page carries the text only
    frame = re.search(r"<iframe[^>]*>", page)
    assert frame and 'sandbox=""' in frame.group(0) and f'src="/mail/{mail_id}/html"' in frame.group(0)
    assert "allow-scripts" not in page and "allow-same-origin" not in page
    assert html.status_code == 200 and html.mimetype == "text/html"
    assert html.headers["Content-Security-Policy"] == MAIL_CSP
    assert html.headers["X-Frame-Options"] == "SAMEORIGIN"
    body = html.get_data(as_text=True)
    assert "<b>bold</b>" in body
    assert "script" not in body.lower() and "onerror" not in body and "javascript:" not in body
    page_headers = agent_client.get(f"/tickets/{reference}").headers
    assert (
        page_headers["X-Frame-Options"] == "DENY"
        and "frame-src 'self'" in page_headers["Content-Security-Policy"]
    )


def test_a_mail_without_html_has_no_formatting_toggle(
    agent_client: FlaskClient, desk: Desk, ticket: str
) -> None:
    mail_id = rows(desk, MailMessage)[0].id

    assert "<iframe" not in page_of(agent_client, ticket)
    assert agent_client.get(f"/mail/{mail_id}/html").status_code == 404


def test_attachments_are_listed_with_size_and_always_downloaded(
    agent_client: FlaskClient, desk: Desk
) -> None:
    files = (
        ("report.pdf", "application/pdf", b"%PDF-1.4 " + b"x" * 2000),
        ('tricky" name.html', "text/html", b"<script>alert(1)</script>"),
    )
    reference = ref(desk, deliver(desk, mail(attachments=files)))
    pdf, html = sorted(rows(desk, Attachment), key=lambda a: a.id)

    page = page_of(agent_client, reference)
    got_pdf = agent_client.get(f"/attachments/{pdf.id}")
    got_html = agent_client.get(f"/attachments/{html.id}")

    assert f'href="/attachments/{pdf.id}"' in page and "report.pdf" in page and "2 KB" in page
    assert got_pdf.status_code == 200 and got_pdf.data == files[0][2]
    assert got_pdf.mimetype == "application/pdf"
    assert got_pdf.headers["Content-Disposition"].startswith('attachment; filename="report.pdf"')
    assert got_pdf.headers["X-Content-Type-Options"] == "nosniff"
    assert got_html.mimetype == "application/octet-stream"  # never text/html, not even as a download
    disposition = got_html.headers["Content-Disposition"]
    assert disposition.startswith("attachment; ") and disposition.count('"') == 2
    assert got_html.headers["Content-Security-Policy"].startswith("sandbox")
    assert agent_client.get("/attachments/999999").status_code == 404


def test_the_original_mail_can_be_downloaded(agent_client: FlaskClient, desk: Desk, ticket: str) -> None:
    first = rows(desk, MailMessage)[0]

    answer = agent_client.get(f"/mail/{first.id}/original.eml")

    assert answer.status_code == 200 and answer.data == first.raw
    assert answer.headers["Content-Disposition"].startswith("attachment;")


# -- who may see it ---------------------------------------------------------------------------------
def test_an_agent_of_another_group_gets_403_everywhere(
    app: Flask, make_user: Callable[..., User], desk: Desk, ticket: str
) -> None:
    make_user("petr@desk.example", groups=("tier-2",))
    client = app.test_client()
    log_in(client, "petr@desk.example")
    attachment = rows(desk, Attachment)[0]
    token = csrf_of(client.get("/inbox").get_data(as_text=True))

    for url in (
        f"/tickets/{ticket}",
        f"/tickets/{ticket}/diagram.bpmn",
        f"/tickets/{ticket}/diagram-state.json",
        f"/attachments/{attachment.id}",
        f"/mail/{attachment.mail_id}/html",
        f"/mail/{attachment.mail_id}/original.eml",
    ):
        assert client.get(url).status_code == 403, url
    for action in ("reply", "note"):
        answer = client.post(f"/tickets/{ticket}/{action}", data={"body": "Hi", "csrf_token": token})
        assert answer.status_code == 403, action
    assert len(rows(desk, ConversationEntry)) == 2  # nothing was written


def test_unknown_tickets_are_404(agent_client: FlaskClient) -> None:
    assert agent_client.get("/tickets/LD-99999").status_code == 404
    assert agent_client.get("/tickets/nonsense/diagram.bpmn").status_code == 404


def test_the_page_needs_a_login(app: Flask, ticket: str) -> None:
    answer = app.test_client().get(f"/tickets/{ticket}")

    assert answer.status_code == 302 and "/login" in answer.headers["Location"]


# -- reply and note ---------------------------------------------------------------------------------
def test_a_reply_is_queued_to_the_requester_and_shown(
    agent_client: FlaskClient, desk: Desk, ticket: str
) -> None:
    token = csrf_of(page_of(agent_client, ticket))

    answer = agent_client.post(
        f"/tickets/{ticket}/reply", data={"body": "Please restart the router.", "csrf_token": token}
    )

    assert answer.status_code == 302 and answer.headers["Location"].startswith(f"/tickets/{ticket}#entry-")
    queued = rows(desk, OutboxMessage, OutboxMessage.template == "agent_reply")
    assert [(m.recipient, m.state) for m in queued] == [(JANA, "queued")]
    page = page_of(agent_client, ticket)
    assert "on its way to the customer" in page  # the flash
    outbound = page.split('<article class="entry outbound"')[1].split("</article>")[0]
    assert "Please restart the router." in outbound


def test_a_reply_without_csrf_token_is_refused(agent_client: FlaskClient, desk: Desk, ticket: str) -> None:
    answer = agent_client.post(f"/tickets/{ticket}/reply", data={"body": "Hi"})

    assert answer.status_code == 400
    assert rows(desk, OutboxMessage, OutboxMessage.template == "agent_reply") == []


@pytest.mark.parametrize("action", ["reply", "note"])
def test_an_empty_text_is_refused_inline(
    agent_client: FlaskClient, desk: Desk, ticket: str, action: str
) -> None:
    token = csrf_of(page_of(agent_client, ticket))

    answer = agent_client.post(f"/tickets/{ticket}/{action}", data={"body": "  \n ", "csrf_token": token})

    assert answer.status_code == 422
    page = answer.get_data(as_text=True)
    assert f"A {action} needs some text." in page and 'role="alert"' in page
    assert 'aria-invalid="true"' in page
    assert len(rows(desk, ConversationEntry)) == 2


def test_a_refused_text_is_kept(agent_client: FlaskClient, desk: Desk, ticket: str) -> None:
    token = csrf_of(page_of(agent_client, ticket))
    too_long = "Dear Jana, " + "x" * 100_000

    answer = agent_client.post(f"/tickets/{ticket}/reply", data={"body": too_long, "csrf_token": token})

    assert answer.status_code == 422
    assert "at most 100,000 characters" in answer.get_data(as_text=True)
    assert too_long in answer.get_data(as_text=True)


def test_a_note_is_on_the_conversation_but_never_mailed(
    agent_client: FlaskClient, desk: Desk, ticket: str
) -> None:
    token = csrf_of(page_of(agent_client, ticket))
    before = {m.id for m in rows(desk, OutboxMessage)}

    answer = agent_client.post(
        f"/tickets/{ticket}/note",
        data={"body": "Customer <b>is</b> on the old VPN client.", "csrf_token": token},
    )

    assert answer.status_code == 302
    assert {m.id for m in rows(desk, OutboxMessage)} == before
    notes = rows(desk, ConversationEntry, ConversationEntry.kind == "note")
    assert [n.body for n in notes] == ["Customer <b>is</b> on the old VPN client."]
    assert [e.actor for e in rows(desk, AuditEvent, AuditEvent.action == "note_added")] == [
        "user:tereza@desk.example"
    ]
    note = page_of(agent_client, ticket).split('<article class="entry note"')[1].split("</article>")[0]
    assert "Customer &lt;b&gt;is&lt;/b&gt; on the old VPN client." in note


def test_canned_responses_are_offered(agent_client: FlaskClient, desk: Desk, ticket: str) -> None:
    with desk.unit_of_work() as session:
        canned = CannedResponse(title="Restart", body='Please restart "it" & retry.', created_at=MONDAY_9)
        session.add(canned)
        session.flush()
        canned_id = canned.id

    page = page_of(agent_client, ticket)
    prefilled = page_of(agent_client, f"{ticket}?canned={canned_id}")

    assert 'data-insert="Please restart &#34;it&#34; &amp; retry."' in page
    assert 'data-target="reply-body"' in page and ">Restart</a>" in page
    textarea = re.search(r'<textarea id="reply-body"[^>]*>(.*?)</textarea>', prefilled, re.S)
    assert textarea and textarea.group(1) == "Please restart &#34;it&#34; &amp; retry."


# -- properties --------------------------------------------------------------------------------------
def test_the_panel_shows_properties_clocks_tasks_and_outgoing_mail(
    agent_client: FlaskClient, desk: Desk, ticket: str
) -> None:
    page = page_of(agent_client, ticket)
    props = page.split('id="h-props"')[1]

    assert "Tier 1" in props and "P3" in props and JANA in props
    assert "first response" in props and "Mon 2026-03-02 17:00 UTC" in props and "8 h" in props
    assert "resolution" in props and "Thu 2026-03-05 09:00 UTC" in props
    triage = rows(desk, HumanTask, HumanTask.state == "open")[0]
    assert f'href="/tasks/{triage.id}"' in props and f'action="/tasks/{triage.id}/claim"' in props
    assert f'name="next" value="/tickets/{ticket}"' in props
    assert "acknowledgement" in props and "queued" in props
    assert "ticket opened" in page and "task created" in page  # the audit trail
    assert re.search(r'<details class="panel" id="audit">', page)


def test_claiming_from_the_ticket_page_comes_back_to_it(
    agent_client: FlaskClient, desk: Desk, ticket: str
) -> None:
    page = page_of(agent_client, ticket)
    triage = rows(desk, HumanTask, HumanTask.state == "open")[0]

    answer = agent_client.post(
        f"/tasks/{triage.id}/claim", data={"csrf_token": csrf_of(page), "next": f"/tickets/{ticket}"}
    )

    assert answer.status_code == 302 and answer.headers["Location"] == f"/tickets/{ticket}"
    assert "Give back" in page_of(agent_client, ticket)


def test_the_diagram_scripts_load_on_the_ticket_page_only(agent_client: FlaskClient, ticket: str) -> None:
    page = page_of(agent_client, ticket)
    inbox = agent_client.get("/inbox").get_data(as_text=True)

    for asset in ("/static/vendor/bpmn-viewer.js", "/static/diagram.js", "/static/vendor/bpmn-js.css"):
        assert asset in page and asset not in inbox
    assert re.search(
        rf'<div class="diagram"[^>]*data-diagram-url="/tickets/{ticket}/diagram.bpmn"'
        rf'[^>]*data-state-url="/tickets/{ticket}/diagram-state.json"',
        page,
        re.S,
    )
    assert "<script>" not in page  # no inline script: the CSP forbids it


# -- the diagram -------------------------------------------------------------------------------------
def test_the_diagram_is_the_version_the_ticket_is_pinned_to(
    agent_client: FlaskClient, desk: Desk, ticket: str
) -> None:
    with desk.unit_of_work() as session:
        first = session.scalar(
            select(DefinitionContent.xml).join(ProcessVersion).where(ProcessVersion.version == 1)
        )
        assert first is not None
        newer = first.replace(b'name="Triage"', b'name="Triage (new)"')
        deploy_definition(session, desk.settings, xml=newer, filename="ticket_lifecycle.bpmn", now=MONDAY_9)

    answer = agent_client.get(f"/tickets/{ticket}/diagram.bpmn")

    assert answer.status_code == 200 and answer.mimetype == "application/xml"
    assert answer.data == first
    assert answer.headers["Content-Security-Policy"].startswith("sandbox")
    again = agent_client.get(
        f"/tickets/{ticket}/diagram.bpmn", headers={"If-None-Match": answer.headers["ETag"]}
    )
    assert again.status_code == 304


def test_the_diagram_state_marks_the_open_task_current_and_earlier_steps_completed(
    agent_client: FlaskClient, desk: Desk, ticket: str
) -> None:
    state = agent_client.get(f"/tickets/{ticket}/diagram-state.json").get_json()

    assert (state["process_id"], state["version"], state["status"]) == ("ticket_lifecycle", 1, "running")
    assert "triage" in state["current"]
    assert "triage_first_response_due" in state["current"]  # a timer waiting on the open task
    assert {"ticket_received", "acknowledge_customer"} <= set(state["completed"])
    assert "triage_customer_replied" in state["completed"]  # the follow-up mail fired it
    assert "triage" not in state["completed"]

    with desk.unit_of_work() as session:
        user = session.scalars(select(User).where(User.email == "tereza@desk.example")).one()
        task = session.scalars(select(HumanTask).where(HumanTask.state == "open")).one()
        complete_task(session, desk.settings, task_id=task.id, user=user, data=dict(TRIAGE), now=MONDAY_9)
    after = agent_client.get(f"/tickets/{ticket}/diagram-state.json").get_json()
    now_open = {t.element_id for t in rows(desk, HumanTask, HumanTask.state == "open")}

    assert "triage" in after["completed"] and "triage" not in after["current"]
    assert now_open and now_open <= set(after["current"])
    assert not set(after["current"]) & set(after["completed"])


def test_unreadable_state_marks_nothing_current() -> None:
    assert waiting_elements("not json") == []
    assert waiting_elements('{"format": "someone-else", "state": {}}') == []


# -- cost ----------------------------------------------------------------------------------------------
@contextmanager
def statements(desk: Desk) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(desk.engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(desk.engine, "before_cursor_execute", count)


def busy_ticket(desk: Desk, tag: str, *, mails: int, notes: int, replies: int) -> str:
    pdf = (("log.pdf", "application/pdf", b"%PDF-1.4 log"),)
    opening = mail(subject=f"VPN {tag}", message_id=f"<{tag}@c.example>", html="<p>hi</p>", attachments=pdf)
    reference = ref(desk, deliver(desk, opening))
    for n in range(mails):
        follow_up(desk, reference, f"{tag}-{n}", attachments=pdf)
    with desk.unit_of_work() as session:
        for n in range(notes):
            add_note(
                session,
                desk.settings,
                ticket_ref=reference,
                agent_email="tereza@desk.example",
                body=f"n{n}",
                now=MONDAY_9,
            )
        for n in range(replies):
            reply_as_agent(
                session,
                desk.settings,
                ticket_ref=reference,
                agent_email="tereza@desk.example",
                body=f"r{n}",
                now=MONDAY_9,
            )
    return reference


def test_the_page_costs_the_same_number_of_queries_for_3_or_60_entries(
    agent_client: FlaskClient, desk: Desk
) -> None:
    small = busy_ticket(desk, "small", mails=1, notes=1, replies=0)
    big = busy_ticket(desk, "big", mails=29, notes=15, replies=15)
    counts = {}
    for reference, entries in ((small, 3), (big, 60)):
        forget_mail_facts()  # both start cold: every mail is read and parsed
        with statements(desk) as seen:
            page = page_of(agent_client, reference)
        assert len(entries_html(page)) == entries
        counts[reference] = len(seen)

    assert counts[small] == counts[big], json.dumps(counts)
    assert counts[big] < 25
    with statements(desk) as warm:
        page_of(agent_client, f"{big}?again=1")  # another URL: rendered again
    assert len(warm) == counts[big] - 1  # parsed mail is remembered: no mail bytes are read again
    with statements(desk) as kept:
        page_of(agent_client, big)  # nothing changed: the kept page (the login, the revisions)
    assert len([s for s in kept if s.lstrip().upper().startswith("SELECT")]) == 2, kept


def test_the_ticket_row_is_not_written_by_viewing(agent_client: FlaskClient, desk: Desk, ticket: str) -> None:
    before = rows(desk, Ticket)[0].updated_at
    page_of(agent_client, ticket)
    assert rows(desk, Ticket)[0].updated_at == before


@pytest.mark.parametrize(
    ("now", "label", "shown"),
    [
        (MONDAY_9 + timedelta(hours=1, minutes=30), "Time left", "6 h 30 min"),  # due Mon 17:00; was "6 h"
        (MONDAY_9 + timedelta(days=1, hours=2, minutes=15), "Overdue by", "18 h 15 min"),  # 24x7 here
    ],
    ids=["time left", "overdue"],
)
def test_a_clock_shows_the_time_left_or_how_long_it_is_overdue_to_the_minute(
    agent_client: FlaskClient, desk: Desk, ticket: str, now: datetime, label: str, shown: str
) -> None:
    desk.clock = lambda: now
    props = page_of(agent_client, ticket).split('id="h-props"')[1]
    first_response = props.split("first response", 1)[1].split('<div class="clock">', 1)[0]
    assert re.search(rf"<dt>{label}</dt><dd>{shown}</dd>", first_response), first_response
    assert "<dt>Target</dt><dd>8 h business time" in first_response
