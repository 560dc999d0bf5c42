"""The JSON API under /api/v1: bearer tokens only, the web UI's authorisation, JSON errors, and an
OpenAPI document that matches the routes and the answers."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from workflows.app import Desk
from workflows.models import ApiToken, AuditEvent, ConversationEntry, HumanTask, User
from workflows.tickets import open_ticket, reference
from workflows.users import new_api_token

from ..conftest import MONDAY_9

Json = dict[str, Any]


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture
def token_for(desk: Desk, make_user: Callable[..., User]) -> Callable[..., str]:
    """A user (created unless they exist) and a fresh API token of theirs."""

    def make(email: str, role: str = "agent", groups: tuple[str, ...] = ("tier-1",), **kw: Any) -> str:
        with desk.unit_of_work(readonly=True) as session:
            exists = session.scalar(select(User).where(User.email == email)) is not None
        if not exists:
            make_user(email, role=role, groups=groups, **kw)
        with desk.unit_of_work() as session:
            user = session.scalars(select(User).where(User.email == email)).one()
            return new_api_token(session, user, "tests", now=MONDAY_9)

    return make


class Api:
    """The test client with a bearer token (or none)."""

    def __init__(self, client: FlaskClient, token: str | None):
        self.client, self.token = client, token

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def get(self, path: str, **query: Any) -> Any:
        return self.client.get(f"/api/v1{path}", query_string=query, headers=self._headers())

    def post(self, path: str, body: Any = None) -> Any:
        return self.client.post(f"/api/v1{path}", json=body, headers=self._headers())


@pytest.fixture
def api(app: Flask, token_for: Callable[..., str]) -> Callable[..., Api]:
    def make(email: str = "tereza@desk.example", **kw: Any) -> Api:
        return Api(app.test_client(), token_for(email, **kw))

    return make


@pytest.fixture
def open_one(desk: Desk) -> Callable[..., str]:
    """Open a ticket (the lifecycle puts it in tier-1 with a triage task); its reference."""

    def make(subject: str = "Cannot log in", priority: str = "P3") -> str:
        with desk.unit_of_work() as session:
            ticket = open_ticket(
                session,
                desk.settings,
                requester="jana@customer.example",
                subject=subject,
                body="The login page says no.",
                priority=priority,
                now=MONDAY_9,
            )
            return reference(desk.settings, ticket)

    return make


def task_of(api: Api, ref: str) -> Json:
    tasks = api.get(f"/tickets/{ref}").get_json()["open_tasks"]
    assert len(tasks) == 1, tasks
    found: Json = tasks[0]
    return found


def assert_error(response: Any, status: int, *fields: str) -> Json:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body: Json = response.get_json()
    assert body["status"] == status and body["error"]
    assert sorted(body["fields"]) == sorted(fields)
    return body


# -- a tiny JSON Schema subset, enough to hold the document to what the API answers -----------------
def resolve(doc: Json, node: Json) -> Json:
    while "$ref" in node:
        path = node["$ref"].removeprefix("#/").split("/")
        target: Any = doc
        for part in path:
            target = target[part]
        node = target
    return node


def conforms(doc: Json, schema: Json, value: Any, where: str = "$") -> None:
    schema = resolve(doc, schema)
    for part in schema.get("allOf", []):
        conforms(doc, part, value, where)
    kinds = schema.get("type")
    if kinds is not None:
        kinds = kinds if isinstance(kinds, list) else [kinds]
        python: dict[str, Any] = {
            "object": dict,
            "array": list,
            "string": str,
            "integer": int,
            "boolean": bool,
            "null": type(None),
            "number": (int, float),
        }
        assert any(isinstance(value, python[k]) for k in kinds), f"{where}: {value!r} is not {kinds}"
        if isinstance(value, bool):
            assert "boolean" in kinds, f"{where}: {value!r} is not {kinds}"
    if "enum" in schema and value is not None:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if isinstance(value, dict):
        for key in schema.get("required", []):
            assert key in value, f"{where}: no {key!r}"
        properties = schema.get("properties", {})
        if schema.get("additionalProperties") is False:
            assert set(value) <= set(properties), f"{where}: extra {set(value) - set(properties)}"
        for key, sub in properties.items():
            if key in value:
                conforms(doc, sub, value[key], f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            conforms(doc, schema["items"], item, f"{where}[{i}]")


@pytest.fixture
def document(app: Flask) -> Json:
    body: Json = app.test_client().get("/api/v1/openapi.json").get_json()
    return body


def answers(doc: Json, path: str, method: str, status: int, value: Any) -> None:
    """``value`` is what the document promises for ``method path`` answering ``status``."""
    response = resolve(doc, doc["paths"][path][method]["responses"][str(status)])
    conforms(doc, response["content"]["application/json"]["schema"], value)


# -- authentication ------------------------------------------------------------------------------
def test_calls_without_a_valid_token_get_401_with_a_bearer_challenge(
    app: Flask, api: Callable[..., Api], desk: Desk
) -> None:
    client = app.test_client()
    for headers in ({}, {"Authorization": "Basic dGVyZXphOnNlY3JldA=="}, {"Authorization": "Bearer"}):
        answer = client.get("/api/v1/me", headers=headers)
        assert_error(answer, 401)
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = client.get("/api/v1/tickets", headers={"Authorization": "Bearer ld_not-a-token"})
    assert_error(wrong, 401)
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    assert_error(client.post("/api/v1/tasks/x/claim", headers={"Authorization": "Bearer " + "x" * 5000}), 401)

    tereza = api()
    assert tereza.get("/me").status_code == 200
    with desk.unit_of_work() as session:
        for row in session.scalars(select(ApiToken)):
            row.revoked_at = MONDAY_9
    assert_error(tereza.get("/me"), 401)


def test_the_session_cookie_alone_is_refused_and_no_csrf_token_is_needed(
    app: Flask, agent_client: FlaskClient, open_one: Callable[..., str], token_for: Callable[..., str]
) -> None:
    ref = open_one()
    assert agent_client.get("/inbox").status_code == 200  # the cookie does log in the web UI
    assert_error(agent_client.get("/api/v1/me"), 401)
    assert_error(agent_client.get(f"/api/v1/tickets/{ref}"), 401)
    # A forged cross-site POST riding on the cookie is refused as unauthenticated (not as CSRF),
    # and changes nothing; a bearer token works without any CSRF token.
    assert_error(agent_client.post(f"/api/v1/tickets/{ref}/reply", json={"body": "Hi"}), 401)
    token = token_for("tereza@desk.example")
    answer = agent_client.post(
        f"/api/v1/tickets/{ref}/reply", json={"body": "Hi"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 201, answer.get_data(as_text=True)
    assert "Set-Cookie" not in answer.headers


def test_me_says_who_the_token_belongs_to_and_the_use_is_recorded(
    api: Callable[..., Api], desk: Desk, document: Json
) -> None:
    lead = api("lena@desk.example", groups=("tier-2",), lead_of=("tier-2",))
    answer = lead.get("/me")
    assert answer.status_code == 200
    me = answer.get_json()
    assert me["email"] == "lena@desk.example" and me["role"] == "agent"
    assert me["groups"] == ["tier-2"] and me["lead_of"] == ["tier-2"]
    answers(document, "/me", "get", 200, me)
    with desk.unit_of_work(readonly=True) as session:
        assert session.scalars(select(ApiToken.last_used_at)).one() == MONDAY_9


# -- tickets ---------------------------------------------------------------------------------------
def test_ticket_list_shows_visible_tickets_with_filters(
    api: Callable[..., Api], open_one: Callable[..., str], document: Json
) -> None:
    first, second = open_one("Printer on fire", "P1"), open_one("VPN slow", "P3")
    tereza = api()
    page = tereza.get("/tickets").get_json()
    answers(document, "/tickets", "get", 200, page)
    assert page["total"] == 2 and page["page"] == 1 and page["pages"] == 1
    assert {t["reference"] for t in page["items"]} == {first, second}
    item = next(t for t in page["items"] if t["reference"] == first)
    assert item["subject"] == "Printer on fire" and item["priority"] == "P1"
    assert item["group"] == "tier-1" and item["requester"] == "jana@customer.example"
    assert item["status"] == "new" and item["assignee"] is None and item["sla_due_at"]
    assert [t["reference"] for t in tereza.get("/tickets", priority="P1").get_json()["items"]] == [first]
    assert tereza.get("/tickets", group="tier-2").get_json()["total"] == 0
    assert tereza.get("/tickets", group="tier-1", status="new").get_json()["total"] == 2
    assert tereza.get("/tickets", status="closed").get_json()["total"] == 0
    assert_error(tereza.get("/tickets", priority="P9"), 422, "priority")

    # An agent of another group sees none of them; an admin sees all.
    assert api("piet@desk.example", groups=("tier-2",)).get("/tickets").get_json()["total"] == 0
    assert api("ada@desk.example", role="admin", groups=()).get("/tickets").get_json()["total"] == 2


def test_ticket_list_searches_sorts_and_filters_by_assignee(
    api: Callable[..., Api], open_one: Callable[..., str], document: Json
) -> None:
    printer, vpn = open_one("Printer on fire", "P1"), open_one("VPN slow", "P3")
    tereza = api()
    found = tereza.get("/tickets", q="printer").get_json()
    answers(document, "/tickets", "get", 200, found)
    assert [t["reference"] for t in found["items"]] == [printer]
    assert tereza.get("/tickets", q="login page").get_json()["total"] == 2  # the opening mail's words
    assert tereza.get("/tickets", q="printer -fire").get_json()["total"] == 0
    assert tereza.get("/tickets", q="!!!").get_json()["total"] == 0
    assert api("piet@desk.example", groups=("tier-2",)).get("/tickets", q="printer").get_json()["total"] == 0
    assert_error(tereza.get("/tickets", q="x" * 257), 422, "q")

    urgent = [t["reference"] for t in tereza.get("/tickets", sort="urgent").get_json()["items"]]
    assert urgent == [printer, vpn]
    assert_error(tereza.get("/tickets", sort="random"), 422, "sort")
    assert tereza.get("/tickets", status="unresolved").get_json()["total"] == 2
    assert_error(tereza.get("/tickets", status="lost"), 422, "status")
    assert tereza.get("/tickets", breached="true").get_json()["total"] == 0
    assert_error(tereza.get("/tickets", breached="maybe"), 422, "breached")

    task_id = task_of(tereza, vpn)["id"]
    assert tereza.post(f"/tasks/{task_id}/claim").status_code == 200
    # Claiming a task holds the task, not the ticket: the ticket's assignee is the lifecycle's.
    none = {t["reference"] for t in tereza.get("/tickets", assignee="none").get_json()["items"]}
    assert none == {printer, vpn}
    assert tereza.get("/tickets", assignee="tereza@desk.example").get_json()["total"] == 0
    assert tereza.get("/tickets", assignee="me").get_json()["total"] == 0
    assert_error(tereza.get("/tickets", assignee="nobody@desk.example"), 422, "assignee")


def test_pagination_bounds(api: Callable[..., Api], open_one: Callable[..., str]) -> None:
    refs = [open_one(f"Ticket {i}") for i in range(3)]
    tereza = api()
    one = tereza.get("/tickets", per_page=2).get_json()
    assert (one["page"], one["pages"], one["total"], one["per_page"]) == (1, 2, 3, 2)
    two = tereza.get("/tickets", per_page=2, page=2).get_json()
    assert len(one["items"]) == 2 and len(two["items"]) == 1
    assert {t["reference"] for t in one["items"] + two["items"]} == set(refs)
    beyond = tereza.get("/tickets", per_page=2, page=3).get_json()
    assert beyond["items"] == [] and beyond["page"] == 3 and beyond["total"] == 3
    assert tereza.get("/tickets", per_page=100).status_code == 200
    for bad in ({"per_page": 101}, {"per_page": 0}, {"per_page": -1}, {"per_page": "ten"}):
        assert_error(tereza.get("/tickets", **bad), 422, "per_page")
    for bad in ({"page": 0}, {"page": "x"}, {"page": 10**7}, {"page": "²"}, {"page": "9" * 5000}):
        assert_error(tereza.get("/tickets", **bad), 422, "page")
    tasks = tereza.get("/tasks", per_page=2, page=5).get_json()
    assert tasks["items"] == [] and tasks["total"] == 3 and tasks["pages"] == 2
    assert_error(tereza.get("/tasks", per_page=500), 422, "per_page")


def test_open_a_ticket(api: Callable[..., Api], desk: Desk, document: Json) -> None:
    tereza = api()
    answer = tereza.post(
        "/tickets",
        {
            "requester": "Jana@Customer.example",
            "subject": "  Cannot   log in ",
            "body": "Help",
            "priority": "P2",
        },
    )
    assert answer.status_code == 201, answer.get_data(as_text=True)
    created = answer.get_json()
    answers(document, "/tickets", "post", 201, created)
    assert re.fullmatch(r"LD-\d+", created["reference"])
    assert created["subject"] == "Cannot log in" and created["priority"] == "P2"
    assert created["requester"] == "jana@customer.example"
    assert answer.headers["Location"] == f"/api/v1/tickets/{created['reference']}"
    shown = tereza.client.get(answer.headers["Location"], headers=tereza._headers()).get_json()
    assert shown["conversation"][0]["body"] == "Help" and shown["conversation"][0]["kind"] == "inbound"
    assert any(e["action"] == "ticket_opened_via_api" for e in shown["timeline"])
    with desk.unit_of_work(readonly=True) as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "ticket_opened_via_api")).one()
        assert event.actor == "user:tereza@desk.example"


def test_opening_a_ticket_refuses_bad_fields_and_owners(api: Callable[..., Api], desk: Desk) -> None:
    tereza = api()
    assert_error(
        tereza.post("/tickets", {"requester": "nobody", "priority": "P7"}),
        422,
        "requester",
        "subject",
        "priority",
    )
    assert_error(tereza.post("/tickets", {"requester": "a@b.example", "subject": "x", "cc": "y"}), 422, "cc")
    assert_error(tereza.post("/tickets", {"requester": "a@b.example", "subject": 42}), 422, "subject")
    assert_error(tereza.post("/tickets", ["not", "an", "object"]), 400)
    raw = tereza.client.post("/api/v1/tickets", data="{broken", headers=tereza._headers())
    assert_error(raw, 400)
    owner = api("olga@desk.example", role="owner", groups=("tier-1",))
    assert_error(owner.post("/tickets", {"requester": "a@b.example", "subject": "x"}), 403)
    with desk.unit_of_work(readonly=True) as session:
        assert session.scalar(select(func.count()).select_from(ConversationEntry)) == 0


def test_ticket_detail_with_conversation_notes_tasks_sla_and_timeline(
    api: Callable[..., Api], open_one: Callable[..., str], document: Json
) -> None:
    ref = open_one()
    tereza = api()
    triage = task_of(tereza, ref)
    done = tereza.post(
        f"/tasks/{triage['id']}/complete",
        {"data": {"category": "incident", "priority": "P2", "summary": "Login broken"}},
    )
    assert done.status_code == 200, done.get_data(as_text=True)
    work = task_of(tereza, ref)
    assert work["element_id"] == "work_tier_1"
    assert tereza.post(f"/tickets/{ref}/reply", {"body": "Which browser?"}).status_code == 201
    done = tereza.post(
        f"/tasks/{work['id']}/complete",
        {"data": {"outcome": "wait_customer", "note": "Asked for the browser"}},
    )
    assert done.status_code == 200, done.get_data(as_text=True)

    answer = tereza.get(f"/tickets/{ref}")
    assert answer.status_code == 200
    ticket = answer.get_json()
    answers(document, "/tickets/{reference}", "get", 200, ticket)
    assert ticket["reference"] == ref and ticket["priority"] == "P2" and ticket["category"] == "incident"
    kinds = [(e["kind"], e["author"], e["customer"]) for e in ticket["conversation"]]
    assert kinds == [
        ("inbound", None, "jana@customer.example"),
        ("outbound", "tereza@desk.example", None),
        ("note", "tereza@desk.example", None),
    ]
    assert ticket["conversation"][2]["body"] == "Asked for the browser"
    assert {c["name"] for c in ticket["sla"]} >= {"first_response", "resolution"}
    actions = [e["action"] for e in ticket["timeline"]]
    assert "ticket_opened" in actions and "task_completed" in actions and "agent_replied" in actions
    assert ticket["process"]["status"] == "running" and ticket["process"]["id"] == "ticket_lifecycle"
    assert tereza.get(f"/tickets/{ref.removeprefix('LD-')}").get_json()["reference"] == ref
    assert_error(tereza.get("/tickets/LD-999999"), 404)
    assert_error(tereza.get("/tickets/nonsense"), 404)


def test_another_groups_agent_gets_403_on_tier_1_tickets_and_tasks(
    api: Callable[..., Api], open_one: Callable[..., str]
) -> None:
    ref = open_one()
    triage = task_of(api(), ref)
    piet = api("piet@desk.example", groups=("tier-2",))
    assert_error(piet.get(f"/tickets/{ref}"), 403)
    assert_error(piet.post(f"/tickets/{ref}/reply", {"body": "Hello"}), 403)
    assert_error(piet.get(f"/tasks/{triage['id']}"), 403)
    assert_error(piet.post(f"/tasks/{triage['id']}/claim"), 403)
    assert_error(piet.post(f"/tasks/{triage['id']}/unclaim"), 403)
    assert_error(piet.post(f"/tasks/{triage['id']}/assign", {"assignee": "piet@desk.example"}), 403)
    assert_error(piet.post(f"/tasks/{triage['id']}/complete", {"data": {}}), 403)
    assert piet.get("/tasks").get_json()["total"] == 0
    assert piet.get("/tasks", view="all", group="tier-1").get_json()["items"] == []
    admin = api("ada@desk.example", role="admin", groups=())
    assert admin.get(f"/tickets/{ref}").status_code == 200
    assert admin.get(f"/tasks/{triage['id']}").status_code == 200


def test_reply_to_the_customer(
    api: Callable[..., Api], open_one: Callable[..., str], desk: Desk, document: Json
) -> None:
    ref = open_one()
    tereza = api()
    answer = tereza.post(f"/tickets/{ref}/reply", {"body": "  We are on it.  "})
    assert answer.status_code == 201, answer.get_data(as_text=True)
    entry = answer.get_json()
    answers(document, "/tickets/{reference}/reply", "post", 201, entry)
    assert entry["kind"] == "outbound" and entry["body"] == "We are on it."
    assert entry["author"] == "tereza@desk.example"
    assert_error(tereza.post(f"/tickets/{ref}/reply", {"body": "   "}), 422, "body")
    assert_error(tereza.post(f"/tickets/{ref}/reply", {}), 422, "body")
    assert_error(tereza.post(f"/tickets/{ref}/reply", {"body": "x" * 100_001}), 422, "body")
    assert_error(tereza.post(f"/tickets/{ref}/reply", {"text": "hi"}), 422, "text")
    assert_error(tereza.post("/tickets/LD-999999/reply", {"body": "hi"}), 404)
    with desk.unit_of_work(readonly=True) as session:
        assert session.scalar(select(func.count()).where(ConversationEntry.kind == "outbound")) == 1


# -- tasks ---------------------------------------------------------------------------------------
def test_inbox_lists_the_callers_tasks_with_filters(
    api: Callable[..., Api], open_one: Callable[..., str], document: Json
) -> None:
    urgent, normal = open_one("Down", "P1"), open_one("Question", "P4")
    tereza = api()
    page = tereza.get("/tasks").get_json()
    answers(document, "/tasks", "get", 200, page)
    assert page["total"] == 2
    assert [t["ticket"]["reference"] for t in page["items"]] == [urgent, normal]  # most urgent first
    row = page["items"][0]
    assert row["name"] == "Triage" and row["group"] == "tier-1" and row["state"] == "open"
    assert row["urgency"]["clock"] and row["urgency"]["state"] in ("ok", "at_risk", "breached")
    by_priority = tereza.get("/tasks", sort="priority").get_json()["items"]
    assert [t["ticket"]["priority"] for t in by_priority] == ["P1", "P4"]
    assert tereza.get("/tasks", priority="P4").get_json()["total"] == 1
    assert tereza.get("/tasks", view="mine").get_json()["total"] == 0
    assert tereza.post(f"/tasks/{row['id']}/claim").status_code == 200
    mine = tereza.get("/tasks", view="mine").get_json()
    assert [t["id"] for t in mine["items"]] == [row["id"]]
    # A list item says of a task what its own page says (read by other queries): held, by whom, since.
    detail = tereza.get(f"/tasks/{row['id']}").get_json()
    listed = mine["items"][0]
    assert listed["assignee"] == detail["assignee"] is not None and listed["claimed_at"] is not None
    assert {k: v for k, v in listed.items() if k != "urgency"} == {
        k: v for k, v in detail.items() if k != "form"
    }
    assert tereza.get("/tasks", view="groups").get_json()["total"] == 1
    assert tereza.get("/tasks", sla="none").get_json()["total"] == 0
    for bad in ("view", "sort", "sla", "priority"):
        assert_error(tereza.get("/tasks", **{bad: "nonsense"}), 422, bad)


def test_task_detail_has_its_form_fields(
    api: Callable[..., Api], open_one: Callable[..., str], document: Json
) -> None:
    ref = open_one()
    tereza = api()
    triage = task_of(tereza, ref)
    answer = tereza.get(f"/tasks/{triage['id']}")
    assert answer.status_code == 200
    task = answer.get_json()
    answers(document, "/tasks/{task_id}", "get", 200, task)
    assert task["ticket"]["reference"] == ref and task["element_id"] == "triage"
    fields = {f["id"]: f for f in task["form"]}
    assert list(fields) == ["category", "priority", "summary"]
    assert fields["category"]["type"] == "enum" and fields["category"]["required"] is True
    assert {"id": "wish", "name": "Wish"} in fields["category"]["options"]
    assert fields["priority"]["default"] == "P3"
    assert fields["summary"]["validation"]["maxlength"] == "200"
    assert_error(tereza.get("/tasks/no-such-task"), 404)


def test_claim_unclaim_and_assign(
    api: Callable[..., Api], open_one: Callable[..., str], desk: Desk, document: Json
) -> None:
    ref = open_one()
    tereza, marek = api(), api("marek@desk.example")
    task_id = task_of(tereza, ref)["id"]

    claimed = tereza.post(f"/tasks/{task_id}/claim")
    assert claimed.status_code == 200
    answers(document, "/tasks/{task_id}/claim", "post", 200, claimed.get_json())
    assert claimed.get_json()["assignee"] == "tereza@desk.example"
    taken = assert_error(marek.post(f"/tasks/{task_id}/claim"), 409)
    assert "tereza@desk.example" in taken["error"]
    assert_error(marek.post(f"/tasks/{task_id}/unclaim"), 409)

    released = tereza.post(f"/tasks/{task_id}/unclaim")
    assert released.status_code == 200 and released.get_json()["assignee"] is None

    assigned = tereza.post(f"/tasks/{task_id}/assign", {"assignee": "Marek@desk.example"})
    assert assigned.status_code == 200, assigned.get_data(as_text=True)
    assert assigned.get_json()["assignee"] == "marek@desk.example"
    assert_error(marek.post(f"/tasks/{task_id}/assign", {"assignee": "nobody@desk.example"}), 422, "assignee")
    assert_error(marek.post(f"/tasks/{task_id}/assign", {"assignee": "not an address"}), 422, "assignee")
    assert_error(marek.post(f"/tasks/{task_id}/assign", {}), 422, "assignee")
    api("piet@desk.example", groups=("tier-2",))
    assert_error(marek.post(f"/tasks/{task_id}/assign", {"assignee": "piet@desk.example"}), 403)
    assert_error(tereza.post("/tasks/no-such-task/claim"), 404)
    with desk.unit_of_work(readonly=True) as session:
        task = session.get(HumanTask, task_id)
        assert task is not None and task.assignee is not None and task.assignee.email == "marek@desk.example"


def test_complete_validates_the_form_and_a_second_completion_conflicts(
    api: Callable[..., Api], open_one: Callable[..., str], desk: Desk, document: Json
) -> None:
    ref = open_one()
    tereza, marek = api(), api("marek@desk.example")
    task_id = task_of(tereza, ref)["id"]

    invalid = assert_error(
        tereza.post(f"/tasks/{task_id}/complete", {"data": {"category": "gossip", "bogus": 1}}),
        422,
        "category",
        "summary",
        "bogus",
    )
    assert invalid["fields"]["summary"] == "is required"
    assert_error(tereza.post(f"/tasks/{task_id}/complete", {"data": "category=incident"}), 422, "data")
    assert_error(tereza.post(f"/tasks/{task_id}/complete", {"values": {}}), 422, "values")
    with desk.unit_of_work(readonly=True) as session:
        assert session.get(HumanTask, task_id).state == "open"  # type: ignore[union-attr]
        completed = select(func.count()).where(AuditEvent.action == "task_completed")
        assert session.scalar(completed) == 0

    data = {"category": "question", "priority": "P2", "summary": "How to reset"}
    done = tereza.post(f"/tasks/{task_id}/complete", {"data": data})
    assert done.status_code == 200, done.get_data(as_text=True)
    answers(document, "/tasks/{task_id}/complete", "post", 200, done.get_json())
    assert done.get_json()["state"] == "completed"
    assert done.get_json()["completed_by"] == "tereza@desk.example"

    again = assert_error(marek.post(f"/tasks/{task_id}/complete", {"data": data}), 409)
    assert again["error"] == "task “Triage” was already completed by tereza@desk.example; nothing was changed"
    assert_error(tereza.post(f"/tasks/{task_id}/claim"), 409)
    with desk.unit_of_work(readonly=True) as session:
        assert session.scalar(select(func.count()).where(AuditEvent.action == "task_completed")) == 1
    ticket = tereza.get(f"/tickets/{ref}").get_json()
    assert ticket["priority"] == "P2" and ticket["open_tasks"][0]["element_id"] == "work_tier_1"


# -- errors and the document -----------------------------------------------------------------------
def test_unknown_routes_and_methods_answer_json(api: Callable[..., Api], app: Flask) -> None:
    tereza = api()
    assert_error(tereza.get("/nothing-here"), 404)
    assert_error(app.test_client().get("/api/v2/tickets"), 404)
    wrong_method = tereza.client.delete("/api/v1/tickets", headers=tereza._headers())
    assert_error(wrong_method, 405)
    assert set(wrong_method.headers["Allow"].split(", ")) >= {"GET", "POST"}
    assert_error(tereza.get("/tasks/x/claim"), 405)


def _api_routes(app: Flask) -> set[tuple[str, str]]:
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[0] != "api":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule.removeprefix("/api/v1"))
        found |= {(path, m.lower()) for m in rule.methods or () if m not in ("HEAD", "OPTIONS")}
    return found


METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def test_openapi_document_describes_exactly_the_registered_routes(app: Flask, document: Json) -> None:
    documented = {(path, m) for path, item in document["paths"].items() for m in item if m in METHODS}
    routes = _api_routes(app)
    assert routes, "no api routes registered"
    assert routes - documented == set(), "routes missing from openapi.json"
    assert documented - routes == set(), "openapi.json documents routes that do not exist"


def test_openapi_document_is_structurally_valid(app: Flask, document: Json) -> None:
    assert re.fullmatch(r"3\.1\.\d+", document["openapi"])
    assert document["info"]["title"] and document["info"]["version"]
    assert document["servers"][0]["url"] == "/api/v1"
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert document["security"] == [{"bearer": []}]

    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    for ref in refs:
        assert ref.startswith("#/components/"), ref
        resolve(document, {"$ref": ref})  # raises KeyError when dangling

    operation_ids = []
    for path, item in document["paths"].items():
        assert path.startswith("/")
        shared = [resolve(document, p) for p in item.get("parameters", [])]
        for method, operation in item.items():
            if method not in METHODS:
                continue
            operation_ids.append(operation["operationId"])
            assert operation["summary"] and operation["responses"]
            for status, response in operation["responses"].items():
                assert re.fullmatch(r"[1-5]\d\d", status)
                assert resolve(document, response)["description"]
            params = shared + [resolve(document, p) for p in operation.get("parameters", [])]
            for param in params:
                assert param["in"] in ("query", "path", "header", "cookie") and "schema" in param
                assert param["in"] != "path" or param["required"] is True
            in_path = {p["name"] for p in params if p["in"] == "path"}
            assert in_path == set(re.findall(r"{([^}]+)}", path)), (path, method)
            if method == "post" and not path.endswith(("/claim", "/unclaim")):
                assert "application/json" in resolve(document, operation["requestBody"])["content"]
    assert len(operation_ids) == len(set(operation_ids))
    # The document itself needs no token; everything else does.
    assert document["paths"]["/openapi.json"]["get"]["security"] == []
    assert app.test_client().get("/api/v1/openapi.json").status_code == 200


# -- the command line ---------------------------------------------------------------------------
def test_token_commands_create_list_and_revoke(
    app: Flask, desk: Desk, make_user: Callable[..., User]
) -> None:
    from web.cli import main

    make_user("tereza@desk.example")
    runner = CliRunner()

    def cli(*args: str) -> Any:
        return runner.invoke(main, list(args), obj=desk, catch_exceptions=False)

    made = cli("user", "token", "tereza@desk.example", "--name", "zapier")
    assert made.exit_code == 0, made.output
    token = made.stdout.strip()
    assert re.fullmatch(r"ld_[\w-]{40,}", token)
    assert "shown only now" in made.stderr
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/me", headers=headers).get_json()["email"] == "tereza@desk.example"

    listed = cli("user", "tokens", "tereza@desk.example", "--json")
    assert listed.exit_code == 0 and '"name": "zapier"' in listed.stdout and token not in listed.stdout
    assert cli("user", "revoke-token", "tereza@desk.example", "--name", "zapier").exit_code == 0
    assert_error(client.get("/api/v1/me", headers=headers), 401)
    again = cli("user", "revoke-token", "tereza@desk.example", "--name", "zapier")
    assert again.exit_code == 1 and "no live API token" in again.stderr
    assert cli("user", "token", "nobody@desk.example", "--name", "x").exit_code == 1
    assert cli("user", "token", "tereza@desk.example", "--name", " ").exit_code == 1
