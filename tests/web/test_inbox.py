"""The inbox (views, filters, urgency, pages, live rows), claiming and assigning, and task forms."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import lxml.html
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, func, select

from tests.workflows.helpers import TRIAGE, open_task, work
from web.inbox import PAGES
from workflows.app import Desk
from workflows.definitions import deploy_definition
from workflows.models import AuditEvent, ConversationEntry, HumanTask, OutboxMessage, Ticket, User
from workflows.tickets import DEFAULT_PROCESS, open_ticket, reference
from workflows.worklist import claim_task

from ..conftest import MONDAY_9
from .conftest import csrf_of, log_in
from .test_auth import Clock, snapshot, use_cheap_passwords

#: A lifecycle whose first task has a field of every type the desk renders, and no SLA clock.
ALL_FIELDS = b"""<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
                  xmlns:camunda="http://camunda.org/schema/1.0/bpmn"
                  id="all_fields_defs" targetNamespace="http://lanedesk.example/tests">
  <bpmn:collaboration id="all_fields_collaboration">
    <bpmn:participant id="all_fields_desk" processRef="all_fields"/>
  </bpmn:collaboration>
  <bpmn:process id="all_fields" isExecutable="true">
    <bpmn:laneSet id="all_fields_lanes">
      <bpmn:lane id="lane_tier_1" name="Tier 1">
        <bpmn:flowNodeRef>start</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>route</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>fill</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>check</bpmn:flowNodeRef>
        <bpmn:flowNodeRef>end</bpmn:flowNodeRef>
      </bpmn:lane>
    </bpmn:laneSet>
    <bpmn:startEvent id="start"><bpmn:outgoing>f1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:scriptTask id="route" name="Route" scriptFormat="python">
      <bpmn:incoming>f1</bpmn:incoming><bpmn:outgoing>f2</bpmn:outgoing>
      <bpmn:script>assign_group("tier-1")</bpmn:script>
    </bpmn:scriptTask>
    <bpmn:userTask id="fill" name="Plan the visit">
      <bpmn:extensionElements>
        <camunda:formData>
          <camunda:formField id="count" label="Devices affected" type="long">
            <camunda:validation>
              <camunda:constraint name="required"/>
              <camunda:constraint name="min" config="1"/>
              <camunda:constraint name="max" config="500"/>
            </camunda:validation>
          </camunda:formField>
          <camunda:formField id="onsite" label="Visit on site" type="boolean"/>
          <camunda:formField id="visit" label="Visit date" type="date">
            <camunda:validation><camunda:constraint name="required"/></camunda:validation>
          </camunda:formField>
          <camunda:formField id="kind" label="Kind of device" type="enum">
            <camunda:validation><camunda:constraint name="required"/></camunda:validation>
            <camunda:value id="laptop" name="Laptop"/>
            <camunda:value id="printer" name="Printer"/>
          </camunda:formField>
          <camunda:formField id="summary" label="Summary" type="string">
            <camunda:validation>
              <camunda:constraint name="required"/>
              <camunda:constraint name="maxlength" config="40"/>
            </camunda:validation>
          </camunda:formField>
          <camunda:formField id="note" label="Internal note" type="string"/>
        </camunda:formData>
      </bpmn:extensionElements>
      <bpmn:incoming>f2</bpmn:incoming><bpmn:outgoing>f3</bpmn:outgoing>
    </bpmn:userTask>
    <bpmn:userTask id="check" name="Check the visit">
      <bpmn:incoming>f3</bpmn:incoming><bpmn:outgoing>f4</bpmn:outgoing>
    </bpmn:userTask>
    <bpmn:endEvent id="end"><bpmn:incoming>f4</bpmn:incoming></bpmn:endEvent>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="route"/>
    <bpmn:sequenceFlow id="f2" sourceRef="route" targetRef="fill"/>
    <bpmn:sequenceFlow id="f3" sourceRef="fill" targetRef="check"/>
    <bpmn:sequenceFlow id="f4" sourceRef="check" targetRef="end"/>
  </bpmn:process>
</bpmn:definitions>
"""


@dataclass(frozen=True)
class Opened:
    ref: str
    task_id: str
    ticket_id: int


@pytest.fixture
def clock(app: Flask, desk: Desk) -> Clock:
    moving = Clock(MONDAY_9)
    desk.clock = moving
    return moving


@pytest.fixture
def people(
    app: Flask, make_user: Callable[..., User], monkeypatch: pytest.MonkeyPatch
) -> dict[str, FlaskClient]:
    """Logged-in clients: tereza and jan (tier-1), petra (tier-2), an admin."""
    use_cheap_passwords(monkeypatch)
    make_user("tereza@desk.example")
    make_user("jan@desk.example")
    make_user("petra@desk.example", groups=("tier-2",))
    make_user("admin@desk.example", role="admin", groups=())
    clients = {}
    for name in ("tereza", "jan", "petra", "admin"):
        clients[name] = app.test_client()
        log_in(clients[name], f"{name}@desk.example")
    return clients


def open_one(
    desk: Desk, subject: str, *, at: datetime = MONDAY_9, priority: str = "P3", process: str = ""
) -> Opened:
    with desk.unit_of_work() as session:
        if process == "all_fields":
            deploy_definition(session, desk.settings, xml=ALL_FIELDS, filename="all_fields.bpmn", now=at)
        ticket = open_ticket(
            session,
            desk.settings,
            requester="jana@customer.example",
            subject=subject,
            body="Please help.",
            now=at,
            priority=priority,
            process_id=process or DEFAULT_PROCESS,
        )
        return Opened(reference(desk.settings, ticket), open_task(session, ticket).id, ticket.id)


def claim(desk: Desk, opened: Opened, email: str) -> None:
    with desk.unit_of_work() as session:
        user = session.scalar(select(User).where(User.email == email))
        assert user is not None
        claim_task(session, task_id=opened.task_id, user=user, now=MONDAY_9)


def escalated(desk: Desk, subject: str) -> Opened:
    """A ticket whose open task is Tier 2's: triaged, then escalated by a Tier 1 agent."""
    opened = open_one(desk, subject)
    with desk.unit_of_work() as session:
        ticket = session.get(Ticket, opened.ticket_id)
        agent = session.scalar(select(User).where(User.email == "tereza@desk.example"))
        assert ticket is not None and agent is not None
        work(session, desk.settings, ticket, agent, TRIAGE, MONDAY_9)
        work(session, desk.settings, ticket, agent, {"outcome": "escalate"}, MONDAY_9)
        task = open_task(session, ticket)
        assert task.group is not None and task.group.slug == "tier-2"
        return Opened(opened.ref, task.id, ticket.id)


def parse_html(html: str) -> Any:
    """The page as an lxml tree (typed Any: lxml-stubs' xpath results are a wide union)."""
    return lxml.html.fromstring(html)


@dataclass(frozen=True)
class Row:
    task_id: str
    ref: str
    sla: str
    holder: str


def rows_of(html: str) -> list[Row]:
    doc = parse_html(html)
    found = []
    for tr in doc.xpath("//tbody/tr"):
        task_link = tr.xpath(".//a[starts-with(@href, '/tasks/')]/@href")[0]
        ticket_link = tr.xpath(".//a[starts-with(@href, '/tickets/')]/@href")[0]
        sla = tr.xpath(".//span[contains(@class, 'sla')]/@class")[0].split()[-1]
        holder = tr.xpath("./td")[7].text_content().strip()
        found.append(Row(task_link.rsplit("/", 1)[-1], ticket_link.rsplit("/", 1)[-1], sla, holder))
    return found


def listed(client: FlaskClient, query: str = "") -> list[str]:
    page = client.get(f"/inbox{query}")
    assert page.status_code == 200, page.get_data(as_text=True)
    return [row.task_id for row in rows_of(page.get_data(as_text=True))]


def token(client: FlaskClient) -> str:
    return csrf_of(client.get("/inbox").get_data(as_text=True))


def post(client: FlaskClient, url: str, **data: str) -> Any:
    return client.post(url, data={"csrf_token": token(client), **data})


def actions(desk: Desk, ticket_id: int) -> list[str]:
    with desk.unit_of_work(readonly=True) as session:
        query = select(AuditEvent.action).where(AuditEvent.ticket_id == ticket_id).order_by(AuditEvent.id)
        return list(session.scalars(query))


def problem(answer: Any) -> str:
    """The message of an error page."""
    doc = parse_html(answer.get_data(as_text=True))
    return " ".join(doc.xpath("//section[@class='problem']//p[1]")[0].text_content().split())


# -- views ---------------------------------------------------------------------------------------
def test_the_views_show_mine_my_groups_unclaimed_and_all(desk: Desk, people: dict[str, FlaskClient]) -> None:
    held, colleagues, free = (open_one(desk, s) for s in ("Held", "Colleague's", "Free"))
    tier_2 = escalated(desk, "Escalated")
    claim(desk, held, "tereza@desk.example")
    claim(desk, colleagues, "jan@desk.example")
    tereza, petra, admin = people["tereza"], people["petra"], people["admin"]

    assert listed(tereza, "?view=mine") == [held.task_id]
    assert listed(tereza, "?view=groups") == [free.task_id]
    assert sorted(listed(tereza, "?view=all")) == sorted([held.task_id, colleagues.task_id, free.task_id])
    assert listed(tereza) == [held.task_id]  # she holds something: "mine" first
    assert listed(petra) == listed(petra, "?view=groups") == [tier_2.task_id]  # holds nothing
    assert listed(petra, "?view=all") == [tier_2.task_id]
    assert listed(petra, "?view=mine") == []
    assert "you hold no open task" in petra.get("/inbox?view=mine").get_data(as_text=True)
    everything = [held.task_id, colleagues.task_id, free.task_id, tier_2.task_id]
    assert sorted(listed(admin, "?view=all")) == sorted(everything)
    assert sorted(listed(admin, "?view=groups")) == sorted([free.task_id, tier_2.task_id])
    assert listed(tereza, "?view=bogus") == [free.task_id]  # an unknown view: the group queue
    holders = {
        row.task_id: row.holder for row in rows_of(tereza.get("/inbox?view=all").get_data(as_text=True))
    }
    assert holders == {held.task_id: "tereza", colleagues.task_id: "jan", free.task_id: "—"}


def test_the_filters_narrow_by_group_priority_and_sla(
    desk: Desk, clock: Clock, people: dict[str, FlaskClient]
) -> None:
    urgent = open_one(desk, "Server down", priority="P1")  # first response due 10:00
    normal = open_one(desk, "Question", priority="P3")  # first response due 17:00
    no_clock = open_one(desk, "Visit", process="all_fields")
    tier_2 = escalated(desk, "Escalated")
    clock.advance(hours=2)  # 11:00: the P1 ticket is overdue
    admin = people["admin"]

    assert sorted(listed(admin, "?view=all&priority=P1")) == [urgent.task_id]
    assert listed(admin, "?view=all&sla=breached") == [urgent.task_id]
    assert sorted(listed(admin, "?view=all&sla=ok")) == sorted([normal.task_id, tier_2.task_id])
    assert listed(admin, "?view=all&sla=none") == [no_clock.task_id]
    assert listed(admin, "?view=all&group=tier-2") == [tier_2.task_id]
    assert sorted(listed(admin, "?view=all&group=tier-1")) == sorted(
        [urgent.task_id, normal.task_id, no_clock.task_id]
    )
    assert listed(admin, "?view=all&group=tier-1&priority=P1&sla=breached") == [urgent.task_id]
    assert listed(admin, "?view=all&group=tier-1&sla=ok") == [normal.task_id]
    # Unknown values are no filter, never an error.
    assert len(listed(admin, "?view=all&priority=P9&sla=soon&sort=random")) == 4
    # A group filter cannot reach past what the user may see.
    assert listed(people["tereza"], "?view=all&group=tier-2") == []
    page = admin.get("/inbox?view=all&priority=P1&sla=breached").get_data(as_text=True)
    assert "<option selected>P1</option>" in page and '<option value="breached" selected>' in page


def test_most_urgent_first_follows_the_tickets_sla_due_times(
    desk: Desk, people: dict[str, FlaskClient]
) -> None:
    normal = open_one(desk, "Normal", at=MONDAY_9, priority="P3")  # due 17:00
    no_clock = open_one(desk, "No clock", at=MONDAY_9 + timedelta(minutes=5), process="all_fields")
    high = open_one(desk, "High", at=MONDAY_9 + timedelta(minutes=10), priority="P2")  # due 13:10
    critical = open_one(desk, "Critical", at=MONDAY_9 + timedelta(minutes=30), priority="P1")  # 10:30
    with desk.unit_of_work(readonly=True) as session:
        due = {t.id: t.sla_due_at for t in session.scalars(select(Ticket))}
    by_due = sorted(
        (normal, high, critical, no_clock), key=lambda o: (due[o.ticket_id] is None, due[o.ticket_id])
    )
    admin = people["admin"]

    assert [o.ref for o in by_due] == [critical.ref, high.ref, normal.ref, no_clock.ref]
    assert listed(admin, "?view=all") == [o.task_id for o in by_due]  # urgency is the default
    assert listed(admin, "?view=all&sort=urgency") == [o.task_id for o in by_due]
    assert listed(admin, "?view=all&sort=oldest") == [o.task_id for o in (normal, no_clock, high, critical)]
    assert listed(admin, "?view=all&sort=newest") == [o.task_id for o in (critical, high, no_clock, normal)]
    assert listed(admin, "?view=all&sort=priority") == [o.task_id for o in (critical, high, normal, no_clock)]


def test_the_inbox_shows_fifty_tasks_a_page(desk: Desk, people: dict[str, FlaskClient]) -> None:
    opened = [open_one(desk, f"Ticket {n}", at=MONDAY_9 + timedelta(minutes=n)) for n in range(55)]
    tereza = people["tereza"]

    first = tereza.get("/inbox?view=groups&sort=oldest").get_data(as_text=True)
    second = tereza.get("/inbox?view=groups&sort=oldest&page=2").get_data(as_text=True)

    assert [r.task_id for r in rows_of(first)] == [o.task_id for o in opened[:50]]
    assert [r.task_id for r in rows_of(second)] == [o.task_id for o in opened[50:]]
    assert "Page 1 of 2 (55 tasks)" in first and "Page 2 of 2 (55 tasks)" in second
    pager = parse_html(first).xpath("//nav[@class='pager']//a")
    assert [(a.text, a.get("href")) for a in pager] == [("Next", "/inbox?view=groups&sort=oldest&page=2")]
    previous = parse_html(second).xpath("//nav[@class='pager']//a")
    assert [a.text for a in previous] == ["Previous"]
    # Out-of-range or malformed page numbers show the nearest page.
    assert listed(tereza, "?view=groups&sort=oldest&page=99") == [o.task_id for o in opened[50:]]
    for bad in ("0", "-3", "abc"):
        assert listed(tereza, f"?view=groups&sort=oldest&page={bad}") == [o.task_id for o in opened[:50]]


def test_the_sla_colour_turns_amber_then_red_as_time_passes(
    desk: Desk, clock: Clock, people: dict[str, FlaskClient]
) -> None:
    urgent = open_one(desk, "Server down", priority="P1")  # first response: 1 h
    calm = open_one(desk, "Question", priority="P4")  # first response: 24 h
    no_clock = open_one(desk, "Visit", process="all_fields")
    admin = people["admin"]

    def colours() -> dict[str, str]:
        html = admin.get("/inbox?view=all").get_data(as_text=True)
        return {row.task_id: row.sla for row in rows_of(html)}

    assert colours() == {urgent.task_id: "sla-ok", calm.task_id: "sla-ok", no_clock.task_id: "sla-none"}
    clock.advance(minutes=50)  # 83 % of the hour
    assert colours()[urgent.task_id] == "sla-warn"
    assert colours()[calm.task_id] == "sla-ok"
    html = admin.get("/inbox?view=all").get_data(as_text=True)
    assert re.search(r'class="sla sla-warn"\s+title="first response: 83 % of the target used">83 %<', html)
    clock.advance(minutes=10)  # 100 %
    assert colours()[urgent.task_id] == "sla-bad"
    clock.advance(hours=18)  # the P4 clock is at 76 %
    assert colours() == {urgent.task_id: "sla-bad", calm.task_id: "sla-warn", no_clock.task_id: "sla-none"}


def test_the_rows_partial_is_the_table_alone_with_the_same_filters(
    app: Flask, desk: Desk, clock: Clock, people: dict[str, FlaskClient]
) -> None:
    urgent = open_one(desk, "Server down", priority="P1")
    open_one(desk, "Question", priority="P3")
    admin = people["admin"]
    inbox_page = admin.get("/inbox?view=all&priority=P1").get_data(as_text=True)
    poll = parse_html(inbox_page).xpath("//div[@id='inbox-rows']/@hx-get")
    assert poll == ["/inbox/rows?view=all&priority=P1"]

    answer = admin.get(poll[0])

    html = answer.get_data(as_text=True)
    assert answer.status_code == 200
    assert "<html" not in html and "<body" not in html and "<h1" not in html
    assert [row.task_id for row in rows_of(html)] == [urgent.task_id]
    clock.advance(hours=1)
    assert [row.sla for row in rows_of(admin.get(poll[0]).get_data(as_text=True))] == ["sla-bad"]
    assert app.test_client().get(poll[0]).status_code == 302  # logged out: to the login page


# -- claiming and assigning ----------------------------------------------------------------------
def test_a_claimed_task_moves_to_mine_and_a_second_claim_gets_a_clear_409(
    desk: Desk, people: dict[str, FlaskClient]
) -> None:
    opened = open_one(desk, "Printer on fire")
    tereza, jan = people["tereza"], people["jan"]

    answer = post(tereza, f"/tasks/{opened.task_id}/claim", next="/inbox?view=groups&priority=P3")

    assert answer.status_code == 302
    assert answer.headers["Location"] == "/inbox?view=groups&priority=P3"
    assert "You hold “Triage” now." in tereza.get("/inbox").get_data(as_text=True)
    assert listed(tereza, "?view=mine") == [opened.task_id]
    assert listed(tereza, "?view=groups") == []
    assert listed(jan, "?view=groups") == []
    conflict = post(jan, f"/tasks/{opened.task_id}/claim")
    assert conflict.status_code == 409
    assert problem(conflict) == "task “Triage” is already claimed by tereza@desk.example"
    assert listed(tereza, "?view=mine") == [opened.task_id]
    assert actions(desk, opened.ticket_id).count("task_claimed") == 1


def test_claim_and_give_back_only_return_to_pages_of_this_site(
    desk: Desk, people: dict[str, FlaskClient]
) -> None:
    opened = open_one(desk, "Printer on fire")
    tereza = people["tereza"]

    for target in ("//evil.example", "https://evil.example/inbox", "javascript:alert(1)", "inbox", ""):
        for action in ("claim", "unclaim"):
            answer = post(tereza, f"/tasks/{opened.task_id}/{action}", next=target)
            assert answer.status_code == 302
            assert answer.headers["Location"] == "/inbox", (action, target)


def test_giving_a_task_back_puts_it_in_the_groups_queue(desk: Desk, people: dict[str, FlaskClient]) -> None:
    opened = open_one(desk, "Printer on fire")
    claim(desk, opened, "tereza@desk.example")
    tereza, jan = people["tereza"], people["jan"]

    refused = post(jan, f"/tasks/{opened.task_id}/unclaim")  # not jan's to give back
    answer = post(tereza, f"/tasks/{opened.task_id}/unclaim")

    assert refused.status_code == 409
    assert "held by tereza@desk.example" in problem(refused)
    assert answer.status_code == 302
    assert listed(tereza, "?view=mine") == []
    assert listed(jan, "?view=groups") == [opened.task_id]
    assert actions(desk, opened.ticket_id)[-2:] == ["task_claimed", "task_released"]


def test_a_task_can_be_assigned_to_a_colleague_of_its_group_who_is_told(
    desk: Desk, people: dict[str, FlaskClient]
) -> None:
    opened = open_one(desk, "Printer on fire")
    claim(desk, opened, "tereza@desk.example")
    tereza, jan = people["tereza"], people["jan"]
    form = parse_html(tereza.get(f"/tasks/{opened.task_id}").get_data(as_text=True))
    choices = form.xpath("//select[@id='assignee']/option/@value")
    assert "jan@desk.example" in choices and "petra@desk.example" not in choices

    answer = post(tereza, f"/tasks/{opened.task_id}/assign", assignee="Jan@Desk.Example")

    assert answer.status_code == 302
    assert listed(jan, "?view=mine") == [opened.task_id]
    assert listed(tereza, "?view=mine") == []
    with desk.unit_of_work(readonly=True) as session:
        mails = session.scalars(select(OutboxMessage).where(OutboxMessage.template == "assigned")).all()
        assert [(m.recipient, m.kind, m.ticket_id) for m in mails] == [
            ("jan@desk.example", "agent_notification", opened.ticket_id)
        ]
    assert actions(desk, opened.ticket_id)[-2:] == ["task_assigned", "mail_queued"]


def test_a_task_cannot_be_assigned_outside_its_group(desk: Desk, people: dict[str, FlaskClient]) -> None:
    opened = open_one(desk, "Printer on fire")
    claim(desk, opened, "tereza@desk.example")
    tereza = people["tereza"]
    before = snapshot(desk)

    outsider = post(tereza, f"/tasks/{opened.task_id}/assign", assignee="petra@desk.example")
    nobody = post(tereza, f"/tasks/{opened.task_id}/assign", assignee="ghost@desk.example")
    blank = post(tereza, f"/tasks/{opened.task_id}/assign", assignee="")

    assert outsider.status_code == 403
    assert "petra@desk.example is not in the group" in problem(outsider)
    assert nobody.status_code == 422 and "ghost@desk.example" in problem(nobody)
    assert blank.status_code == 422
    assert snapshot(desk) == before
    assert listed(tereza, "?view=mine") == [opened.task_id]


def test_an_agent_of_another_group_cannot_touch_the_task(desk: Desk, people: dict[str, FlaskClient]) -> None:
    opened = open_one(desk, "Printer on fire")
    petra = people["petra"]
    before = snapshot(desk)

    answers = {
        "form": petra.get(f"/tasks/{opened.task_id}"),
        "complete": post(petra, f"/tasks/{opened.task_id}", **TRIAGE),
        "claim": post(petra, f"/tasks/{opened.task_id}/claim"),
        "unclaim": post(petra, f"/tasks/{opened.task_id}/unclaim"),
        "assign": post(petra, f"/tasks/{opened.task_id}/assign", assignee="petra@desk.example"),
    }

    assert {name: a.status_code for name, a in answers.items()} == dict.fromkeys(answers, 403)
    assert "Triage" not in answers["form"].get_data(as_text=True)
    assert snapshot(desk) == before
    assert people["tereza"].get(f"/tasks/{opened.task_id}").status_code == 200
    assert people["petra"].get("/tasks/no-such-task").status_code == 404


# -- task forms ----------------------------------------------------------------------------------
def field(doc: Any, field_id: str) -> Any:
    found = doc.xpath(f"//*[@id='f-{field_id}']")
    assert len(found) == 1, field_id
    return found[0]


def label_of(doc: Any, field_id: str) -> str:
    labels = doc.xpath(f"//label[@for='f-{field_id}']") or [field(doc, field_id).getparent()]
    return " ".join(labels[0].text_content().split())


def test_the_task_form_renders_every_field_type_with_labels_and_required_marks(
    desk: Desk, people: dict[str, FlaskClient]
) -> None:
    opened = open_one(desk, "Visit", process="all_fields")

    page = people["tereza"].get(f"/tasks/{opened.task_id}")

    assert page.status_code == 200
    doc = parse_html(page.get_data(as_text=True))
    assert doc.xpath("//h1")[0].text == "Plan the visit"
    kinds = {
        name: (field(doc, name).tag, field(doc, name).get("type"))
        for name in ("count", "onsite", "visit", "kind", "summary", "note")
    }
    assert kinds == {
        "count": ("input", "number"),
        "onsite": ("input", "checkbox"),
        "visit": ("input", "date"),
        "kind": ("select", None),
        "summary": ("input", "text"),
        "note": ("textarea", None),
    }
    labels = {name: label_of(doc, name) for name in kinds}
    assert labels == {
        "count": "Devices affected *",
        "onsite": "Visit on site",
        "visit": "Visit date *",
        "kind": "Kind of device *",
        "summary": "Summary *",
        "note": "Internal note",
    }
    required = {name for name in kinds if field(doc, name).get("required") is not None}
    assert required == {"count", "visit", "kind", "summary"}
    assert (field(doc, "count").get("min"), field(doc, "count").get("max")) == ("1", "500")
    assert field(doc, "summary").get("maxlength") == "40"
    options = [(o.get("value"), o.text) for o in field(doc, "kind").xpath("./option")]
    assert options == [("laptop", "Laptop"), ("printer", "Printer")]
    assert doc.xpath("//form[@action=$url]/@method", url=f"/tasks/{opened.task_id}") == ["post"]


def test_an_invalid_value_is_shown_next_to_its_field_with_everything_typed_kept(
    desk: Desk, people: dict[str, FlaskClient]
) -> None:
    opened = open_one(desk, "Visit", process="all_fields")
    tereza = people["tereza"]
    before = snapshot(desk)
    typed = {
        "count": "many",
        "onsite": "true",
        "visit": "2026-13-45",
        "kind": "printer",
        "summary": "x" * 41,
        "note": "Bring a spare <toner>",
    }

    answer = post(tereza, f"/tasks/{opened.task_id}", **typed)

    assert answer.status_code == 422
    doc = parse_html(answer.get_data(as_text=True))
    errors = {
        name: " ".join(doc.xpath(f"//*[@id='e-{name}']")[0].text_content().split())
        for name in ("count", "visit", "summary")
    }
    assert errors == {
        "count": "Devices affected must be a whole number",
        "visit": "Visit date must be a date (YYYY-MM-DD)",
        "summary": "Summary must be at most 40 characters",
    }
    for name in ("count", "visit", "summary"):
        assert field(doc, name).get("aria-invalid") == "true"
        assert field(doc, name).get("aria-describedby") == f"e-{name}"
        # The message sits in the same field block as its input.
        assert field(doc, name).getparent().xpath(f".//*[@id='e-{name}']")
    for name in ("onsite", "kind", "note"):
        assert field(doc, name).get("aria-invalid") is None
    assert field(doc, "count").get("value") == "many"
    assert field(doc, "visit").get("value") == "2026-13-45"
    assert field(doc, "summary").get("value") == "x" * 41
    assert field(doc, "note").text == "Bring a spare <toner>"
    assert field(doc, "onsite").get("checked") is not None
    assert field(doc, "kind").xpath("./option[@selected]/@value") == ["printer"]
    summary = doc.xpath("//div[@id='form-errors']//a/@href")
    assert sorted(summary) == ["#f-count", "#f-summary", "#f-visit"]
    assert snapshot(desk) == before


def test_a_missing_required_value_is_an_inline_error_too(desk: Desk, people: dict[str, FlaskClient]) -> None:
    opened = open_one(desk, "Printer on fire")

    answer = post(people["tereza"], f"/tasks/{opened.task_id}", category="", priority="P2", summary="")

    assert answer.status_code == 422
    doc = parse_html(answer.get_data(as_text=True))
    assert doc.xpath("//*[@id='e-category']")[0].text_content() == "Category is required"
    assert doc.xpath("//*[@id='e-summary']")[0].text_content() == "Summary is required"
    assert field(doc, "priority").xpath("./option[@selected]/@value") == ["P2"]


def test_a_valid_form_moves_the_workflow_on_and_leads_to_the_ticket(
    desk: Desk, people: dict[str, FlaskClient]
) -> None:
    opened = open_one(desk, "Printer on fire")

    answer = post(people["tereza"], f"/tasks/{opened.task_id}", **TRIAGE)

    assert answer.status_code == 302
    assert answer.headers["Location"] == f"/tickets/{opened.ref}"
    with desk.unit_of_work(readonly=True) as session:
        ticket = session.get(Ticket, opened.ticket_id)
        assert ticket is not None
        done = session.get(HumanTask, opened.task_id)
        assert done is not None and done.state == "completed"
        assert done.completed_by_id is not None
        following = open_task(session, ticket)
        assert following.name == "Work ticket (Tier 1)" and following.group is not None
        assert following.group.slug == "tier-1"
        assert ticket.priority == "P2"  # the triage applied
        event_data = session.scalar(
            select(AuditEvent.data).where(
                AuditEvent.ticket_id == ticket.id, AuditEvent.action == "task_completed"
            )
        )
        assert event_data == TRIAGE


def test_typed_values_reach_the_workflow_and_the_note_the_conversation(
    desk: Desk, people: dict[str, FlaskClient]
) -> None:
    opened = open_one(desk, "Visit", process="all_fields")
    typed = {
        "count": "3",
        "visit": "2026-03-05",
        "kind": "laptop",
        "summary": "Three laptops",
        "note": "Gate B",
    }

    answer = post(people["tereza"], f"/tasks/{opened.task_id}", **typed)  # the box left unticked

    assert answer.status_code == 302
    with desk.unit_of_work(readonly=True) as session:
        data = session.scalar(select(AuditEvent.data).where(AuditEvent.action == "task_completed"))
        assert data == {
            "count": 3,
            "onsite": False,
            "visit": "2026-03-05",
            "kind": "laptop",
            "summary": "Three laptops",
            "note": "Gate B",
        }
        notes = session.scalars(select(ConversationEntry.body).where(ConversationEntry.kind == "note")).all()
        assert notes == ["Gate B"]
        next_task = session.scalar(select(HumanTask).where(HumanTask.state == "open"))
        assert next_task is not None and next_task.name == "Check the visit"


def test_completing_a_task_someone_completed_meanwhile_is_a_409_that_changes_nothing(
    desk: Desk, people: dict[str, FlaskClient]
) -> None:
    opened = open_one(desk, "Printer on fire")
    tereza, jan = people["tereza"], people["jan"]
    stale_form = tereza.get(f"/tasks/{opened.task_id}").get_data(as_text=True)  # both open the form
    assert jan.get(f"/tasks/{opened.task_id}").status_code == 200
    assert post(jan, f"/tasks/{opened.task_id}", **TRIAGE).status_code == 302
    before = snapshot(desk)

    late = tereza.post(
        f"/tasks/{opened.task_id}",
        data={**TRIAGE, "category": "question", "csrf_token": csrf_of(stale_form)},
    )

    assert late.status_code == 409
    assert "already completed" in problem(late)
    assert snapshot(desk) == before
    with desk.unit_of_work(readonly=True) as session:
        count = select(func.count()).where(AuditEvent.action == "task_completed")
        assert session.scalar(count) == 1
    reread = tereza.get(f"/tasks/{opened.task_id}").get_data(as_text=True)
    assert "This task is completed; nothing can be submitted any more." in reread


# -- cost ----------------------------------------------------------------------------------------
@contextmanager
def counting(desk: Desk) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(desk.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(desk.engine, "before_cursor_execute", count)


def test_the_inbox_costs_the_same_queries_for_5_or_60_tasks(
    desk: Desk, people: dict[str, FlaskClient]
) -> None:
    opened = [open_one(desk, f"Ticket {n}", priority=("P1", "P2", "P3")[n % 3]) for n in range(5)]
    claim(desk, opened[0], "tereza@desk.example")
    claim(desk, opened[1], "jan@desk.example")
    tereza = people["tereza"]

    def cost(url: str, *, kept: bool = False) -> int:
        assert tereza.get(url).status_code == 200  # warm: nothing first-time in the count
        if not kept:  # a full render, not the page web.inbox keeps until something changes
            tereza.application.extensions[PAGES].clear()
        with counting(desk) as statements:
            assert tereza.get(url).status_code == 200
        return len(statements)

    urls = ("/inbox?view=all", "/inbox", "/inbox/rows?view=all", "/inbox?view=groups&sort=priority")
    few = {url: cost(url) for url in urls}
    more = [open_one(desk, f"Ticket {n}", priority=("P1", "P2", "P3")[n % 3]) for n in range(5, 60)]
    claim(desk, more[0], "jan@desk.example")
    claim(desk, more[1], "tereza@desk.example")
    many = {url: cost(url) for url in urls}

    assert len(rows_of(tereza.get("/inbox?view=all").get_data(as_text=True))) == 50
    assert many == few
    assert max(few.values()) <= 12, few
    # A kept page: the user, their groups, the revision (and "holds a task?" for the default view).
    assert max(cost(url, kept=True) for url in urls) <= 5  # SQLite sends its BEGIN too
