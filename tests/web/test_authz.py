"""Who may use which route: a matrix over every rule of ``app.url_map`` and six kinds of caller.

Every (method, rule) the app answers must have a row in ROUTES: a new route fails
test_every_route_is_classified until someone decides who may use it. Rows whose route does not
exist (yet) are skipped, so the table may run ahead of the code.

The callers, all facing one ticket of Tier 1 with one open task, an attachment and an HTML mail:
anonymous; a customer (no login exists for them: anonymous, but knowing the ticket's reference
and inventing an API token); an agent of another group (tier-2); an agent of the ticket's group
(tier-1); a process owner in no group; an admin. The web UI is used with the session cookie
(and a CSRF token on POST), the API with bearer tokens.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from tests.workflows.helpers import TRIAGE
from workflows.app import Desk
from workflows.inbound import Envelope, process_mail, store_raw
from workflows.models import Attachment, HumanTask, Ticket, User
from workflows.studio import start_draft
from workflows.tickets import reference
from workflows.users import new_api_token

from ..conftest import MONDAY_9, REPO
from .conftest import csrf_of, log_in
from .test_auth import snapshot, use_cheap_passwords

ANONYMOUS, CUSTOMER, OTHER_GROUP, GROUP, OWNER, ADMIN = (
    "anonymous",
    "customer",
    "tier-2 agent",
    "tier-1 agent",
    "owner",
    "admin",
)
ACTORS = (ANONYMOUS, CUSTOMER, OTHER_GROUP, GROUP, OWNER, ADMIN)
LOGGED_OUT = (ANONYMOUS, CUSTOMER)
EVERYONE = frozenset({OTHER_GROUP, GROUP, OWNER, ADMIN})
#: Who may work on a Tier 1 ticket: its group and admins (owners see what their groups see: none).
TIER_1 = frozenset({GROUP, ADMIN})
#: Who may use the studio.
OWNERS = frozenset({OWNER, ADMIN})
LIFECYCLE = (REPO / "bpmn" / "ticket_lifecycle.bpmn").read_text()
#: The users behind the logged-in callers.
USERS = {
    OTHER_GROUP: ("petra@desk.example", "agent", ("tier-2",)),
    GROUP: ("tereza@desk.example", "agent", ("tier-1",)),
    OWNER: ("olga@desk.example", "owner", ()),
    ADMIN: ("adam@desk.example", "admin", ()),
}


@dataclass(frozen=True)
class Route:
    """Who may use a route, and what an allowed caller gets.

    ``auth``: ``skip`` (static files: not checked), ``public``, ``session`` (cookie; anonymous
    callers are sent to the login page) or ``bearer`` (API; anonymous callers get 401).
    ``allowed``: the logged-in callers who may use it; the others get 403. For a list
    (``lists=True``) everyone logged in gets the page, and only ``allowed`` find the ticket in it.
    ``args``: what fills the URL's parameters, in order: ticket, task, attachment or mail.
    ``data``: the form (or JSON) an allowed caller posts; ``ok``: the status they get.
    ``query``: added to the URL (a list's widest view).
    """

    auth: str
    allowed: frozenset[str] = EVERYONE
    ok: int = 200
    args: tuple[str, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)
    lists: bool = False
    query: str = ""


def page(*args: str) -> Route:
    """An HTML page about the ticket: its group and admins only."""
    return Route("session", TIER_1, args=args)


def action(*args: str, data: dict[str, Any] | None = None) -> Route:
    """A form post about the ticket: its group and admins only."""
    return Route("session", TIER_1, ok=302, args=args, data=data or {})


def api(
    *args: str, ok: int = 200, allowed: frozenset[str] = TIER_1, data: dict[str, Any] | None = None
) -> Route:
    """A call of the API (a ticket's or task's: its group and admins only)."""
    return Route("bearer", allowed, ok=ok, args=args, data=data or {})


def studio(*args: str, ok: int = 200, data: dict[str, Any] | None = None) -> Route:
    """A page or call of the process owner's studio: owners and admins only."""
    return Route("session", OWNERS, ok=ok, args=args, data=data or {})


#: Keyed by "METHOD /rule" with every parameter written <>.
ROUTES: dict[str, Route] = {
    # Files.
    "GET /static/<>": Route("skip"),
    "GET /static/vendor/<>": Route("skip"),
    # Public.
    "GET /": Route("public", ok=302),  # to the inbox
    "GET /healthz": Route("public"),
    "GET /login": Route("public"),
    "POST /login": Route("public", ok=422),  # posted empty: the form's errors
    "POST /logout": Route("session", ok=302),
    # Lists: everyone logged in, filtered to what they may see.
    "GET /inbox": Route("session", TIER_1, lists=True, query="?view=all"),
    "GET /inbox/rows": Route("session", TIER_1, lists=True, query="?view=all"),
    "GET /tickets": Route("session", TIER_1, lists=True, query="?status=all"),
    # The ticket, its task and what hangs off them.
    "GET /tickets/<>": page("ticket"),
    "POST /tickets/<>/reply": action("ticket", data={"body": "We are on it."}),
    "POST /tickets/<>/note": action("ticket", data={"body": "Checked the logs."}),
    "GET /tickets/<>/diagram.bpmn": page("ticket"),
    "GET /tickets/<>/diagram-state.json": page("ticket"),
    "GET /attachments/<>": page("attachment"),
    "GET /mail/<>/html": page("mail"),
    "GET /mail/<>/original.eml": page("mail"),
    "GET /tasks/<>": page("task"),
    "POST /tasks/<>": action("task", data=TRIAGE),
    "POST /tasks/<>/claim": action("task"),
    "POST /tasks/<>/unclaim": action("task"),
    "POST /tasks/<>/assign": action("task", data={"assignee": USERS[GROUP][0]}),
    # The API: bearer tokens only.
    "GET /api/v1/openapi.json": Route("public"),
    "GET /api/v1/me": api(allowed=EVERYONE),
    "GET /api/v1/tickets": Route("bearer", TIER_1, lists=True, query="?status=all"),
    "POST /api/v1/tickets": api(
        allowed=frozenset({OTHER_GROUP, GROUP, ADMIN}),  # agents and admins open tickets
        ok=201,
        data={"requester": "jana@customer.example", "subject": "Opened for Jana", "body": "She called."},
    ),
    "GET /api/v1/tickets/<>": api("ticket"),
    "POST /api/v1/tickets/<>/reply": api("ticket", ok=201, data={"body": "We are on it."}),
    "GET /api/v1/tasks": Route("bearer", TIER_1, lists=True, query="?view=all"),
    "GET /api/v1/tasks/<>": api("task"),
    "POST /api/v1/tasks/<>/claim": api("task"),
    "POST /api/v1/tasks/<>/unclaim": api("task"),
    "POST /api/v1/tasks/<>/assign": api("task", data={"assignee": USERS[GROUP][0]}),
    "POST /api/v1/tasks/<>/complete": api("task", data={"data": TRIAGE}),
    # The studio: process owners and admins only.
    "GET /studio": studio(),
    "POST /studio/upload": studio(ok=422),  # posted without a file: "choose a .bpmn file"
    "POST /studio/check": studio(data={"xml": LIFECYCLE}),
    "GET /studio/processes/<>": studio("process"),
    "POST /studio/processes/<>/drafts": studio("process", ok=302),
    "GET /studio/processes/<>/versions/<>": studio("process", "version"),
    "GET /studio/processes/<>/versions/<>/diagram.bpmn": studio("process", "version"),
    "POST /studio/processes/<>/versions/<>/roll-back": studio("process", "version", ok=302),
    "GET /studio/processes/<>/compare": studio("process"),
    "GET /studio/processes/<>/monitor": studio("process"),
    "GET /studio/processes/<>/monitor.json": studio("process"),
    "GET /studio/processes/<>/monitor/<>": studio("process", "element"),
    "GET /studio/processes/<>/migrate": studio("process"),
    "POST /studio/processes/<>/migrate": studio("process", ok=422, data={"to": "1"}),  # nothing ticked
    "GET /studio/drafts/<>": studio("draft"),
    "GET /studio/drafts/<>/diagram.bpmn": studio("draft"),
    "GET /studio/drafts/<>/history": studio("draft"),
    "POST /studio/drafts/<>/save": studio("draft", ok=201, data={"xml": LIFECYCLE}),
    "POST /studio/drafts/<>/deploy": studio("draft", ok=201, data={"xml": LIFECYCLE, "note": "same"}),
    "POST /studio/drafts/<>/discard": studio("draft", ok=302),
    "GET /studio/drafts/<>/simulate": studio("draft"),
    "POST /studio/drafts/<>/simulate": studio("draft"),  # the example scenario
}

PARAMETER = re.compile(r"<[^>]+>")


def key_of(method: str, rule: str) -> str:
    return f"{method} {PARAMETER.sub('<>', rule)}"


def registered(app: Flask) -> dict[str, Any]:
    """Every (method, rule) the app answers, as ROUTES keys, with its werkzeug rule."""
    found = {}
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            found[key_of(method, rule.rule)] = rule
    return found


def test_every_route_is_classified(app: Flask) -> None:
    unclassified = sorted(set(registered(app)) - set(ROUTES))
    assert unclassified == [], (
        "routes nobody has decided the access rules of: add them to ROUTES in tests/web/test_authz.py"
    )


def test_the_table_matches_the_rules_where_they_exist(app: Flask) -> None:
    rules = registered(app)
    for key, route in ROUTES.items():
        if key in rules and route.auth != "skip":
            assert len(route.args) == len(rules[key].arguments), key


# -- the world every caller faces ----------------------------------------------------------------
@dataclass
class Objects:
    """What fills URL parameters: one ticket of Tier 1, its open task, a mail and an attachment."""

    ticket: str
    task: str
    attachment: int
    mail: int
    subject: str
    draft: int  # a studio draft of the lifecycle
    process: str = "ticket_lifecycle"
    version: int = 1
    element: str = "triage"

    def fill(self, kind: str) -> str:
        return str(getattr(self, kind))


def tier_1_ticket(desk: Desk, n: int) -> Objects:
    """A ticket opened by a mail with an HTML part and a PDF; its Triage task is Tier 1's."""
    mail = EmailMessage()
    mail["From"] = "Jana Novak <jana@customer.example>"
    mail["To"] = "support@desk.example"
    mail["Subject"] = subject = f"VPN drops every hour ({n})"
    mail["Message-ID"] = f"<vpn-{n}@customer.example>"
    mail.set_content("The VPN drops every hour.")
    mail.add_alternative("<p>The VPN <b>drops</b> every hour.</p>", subtype="html")
    mail.add_attachment(b"%PDF-1.4 log", maintype="application", subtype="pdf", filename="log.pdf")
    with desk.unit_of_work() as session:
        stored = store_raw(session, bytes(mail), Envelope(recipients=("support@desk.example",)), now=MONDAY_9)
        outcome = process_mail(session, desk.settings, stored.id, now=MONDAY_9)
        ticket = session.get(Ticket, outcome.ticket_id)
        assert ticket is not None and ticket.group is not None and ticket.group.slug == "tier-1"
        task = session.scalars(select(HumanTask).where(HumanTask.ticket_id == ticket.id)).one()
        attachment = session.scalars(select(Attachment).where(Attachment.ticket_id == ticket.id)).one()
        admin = session.scalars(select(User).where(User.role == "admin")).first()
        draft = (
            start_draft(session, xml=LIFECYCLE.encode(), filename="x.bpmn", actor=admin, now=MONDAY_9)
            if admin
            else None
        )
        return Objects(
            reference(desk.settings, ticket),
            task.id,
            attachment.id,
            stored.id,
            subject,
            draft.id if draft else 0,
        )


@dataclass
class World:
    app: Flask
    desk: Desk
    objects: Objects
    cookies: dict[str, str]  # actor -> session cookie
    tokens: dict[str, str]  # actor -> API token
    made: int = 0

    def client(self, actor: str) -> FlaskClient:
        """A new client with the actor's session (so a logout here logs out nobody else)."""
        client = self.app.test_client()
        if actor in self.cookies:
            client.set_cookie("lanedesk_session", self.cookies[actor])
        return client

    def fresh(self) -> Objects:
        self.made += 1
        return tier_1_ticket(self.desk, self.made)


@pytest.fixture
def world(app: Flask, desk: Desk, make_user: Callable[..., User], monkeypatch: pytest.MonkeyPatch) -> World:
    use_cheap_passwords(monkeypatch)
    cookies, tokens = {}, {}
    for actor, (email, role, groups) in USERS.items():
        user = make_user(email, role=role, groups=groups)
        client = app.test_client()
        log_in(client, email)
        cookie = client.get_cookie("lanedesk_session")
        assert cookie is not None
        cookies[actor] = cookie.value
        with desk.unit_of_work() as session:
            tokens[actor] = new_api_token(session, session.merge(user), "matrix", now=MONDAY_9)
    tokens[CUSTOMER] = "ld_" + "jana" * 10  # made up: there is no customer login
    built = World(app, desk, tier_1_ticket(desk, 0), cookies, tokens)  # made after the admin: has a draft
    for actor in USERS:  # the first use of a token stamps it: do that before anything is compared
        built.app.test_client().get("/api/v1/me", headers=bearer(built, actor))
    return built


def bearer(world: World, actor: str) -> dict[str, str]:
    token = world.tokens.get(actor)
    return {"Authorization": f"Bearer {token}"} if token else {}


# -- asking and judging --------------------------------------------------------------------------
def url_for_key(key: str, route: Route, objects: Objects) -> tuple[str, str]:
    method, path = key.split(" ", 1)
    for kind in route.args:
        path = path.replace("<>", objects.fill(kind), 1)
    return method, path + route.query


def ask(world: World, key: str, route: Route, actor: str, objects: Objects, *, csrf: bool = True) -> Any:
    method, path = url_for_key(key, route, objects)
    client = world.client(actor)
    if route.auth == "bearer" or path.startswith("/api/"):
        headers = bearer(world, actor)
        if method == "GET":
            return client.get(path, headers=headers)
        return client.post(path, json=route.data, headers=headers)
    if method == "GET":
        return client.get(path)
    data = dict(route.data)
    if csrf:
        data["csrf_token"] = csrf_of(client.get("/login").get_data(as_text=True))
    return client.post(path, data=data)


def outcome(answer: Any, route: Route, objects: Objects) -> str:
    location = answer.headers.get("Location", "")
    if answer.status_code == 302 and location.startswith("/login?next="):
        return "login"
    if route.lists and answer.status_code == 200:
        body = answer.get_data(as_text=True)
        return "listed" if objects.ticket in body or objects.task in body else "not listed"
    return str(answer.status_code)


def expected(route: Route, actor: str, *, csrf: bool = True) -> str:
    if not csrf:
        return "400"  # Flask-WTF refuses before anything else runs, logged in or not
    if route.auth == "public":
        return str(route.ok)
    if actor in LOGGED_OUT:
        return "login" if route.auth == "session" else "401"
    if route.lists:
        return "listed" if actor in route.allowed else "not listed"
    return str(route.ok) if actor in route.allowed else "403"


def present(app: Flask, method: str) -> dict[str, Route]:
    rules = registered(app)
    return {
        key: route
        for key, route in ROUTES.items()
        if key in rules and key.startswith(f"{method} ") and route.auth != "skip"
    }


# -- the matrix ----------------------------------------------------------------------------------
def test_who_may_read_what(world: World) -> None:
    routes = present(world.app, "GET")
    assert "GET /tickets/<>" in routes and "GET /tasks/<>" in routes
    actual, wanted = {}, {}

    for key, route in routes.items():
        for actor in ACTORS:
            answer = ask(world, key, route, actor, world.objects)
            actual[key, actor] = outcome(answer, route, world.objects)
            wanted[key, actor] = expected(route, actor)
            if actual[key, actor] in ("403", "401", "login"):  # a refusal tells nothing about it
                assert world.objects.subject not in answer.get_data(as_text=True), (key, actor)

    assert actual == wanted


def test_who_may_change_what(world: World) -> None:
    routes = present(world.app, "POST")
    assert "POST /tasks/<>" in routes and "POST /logout" in routes
    actual, wanted = {}, {}

    for key, route in routes.items():
        for actor in ACTORS:
            for csrf in (False, True) if route.auth != "bearer" else (True,):
                allowed = expected(route, actor, csrf=csrf) == str(route.ok)
                # A caller who may act gets a ticket of their own: the first one's action
                # (a claim, a completion) must not decide what the next caller gets.
                objects = world.fresh() if allowed and route.auth != "public" else world.objects
                before = None if allowed else snapshot(world.desk)
                answer = ask(world, key, route, actor, objects, csrf=csrf)
                actual[key, actor, csrf] = outcome(answer, route, objects)
                wanted[key, actor, csrf] = expected(route, actor, csrf=csrf)
                if before is not None:  # refused: nothing changed
                    assert snapshot(world.desk) == before, (key, actor, csrf)

    assert actual == wanted


def test_the_api_ignores_the_session_cookie(world: World) -> None:
    """A logged-in browser cannot be made to call the API (it is exempt from CSRF)."""
    routes = {key: route for key, route in ROUTES.items() if key.split(" ", 1)[1].startswith("/api/")}
    routes = {key: route for key, route in routes.items() if route.auth == "bearer"}
    rules = registered(world.app)
    before = snapshot(world.desk)

    answers = {}
    for key, route in routes.items():
        if key in rules:
            method, path = url_for_key(key, route, world.objects)
            client = world.client(ADMIN)
            answer = client.get(path) if method == "GET" else client.post(path, json=route.data)
            answers[key] = answer.status_code

    assert answers and set(answers.values()) == {401}, answers
    assert snapshot(world.desk) == before


def test_a_customer_who_knows_the_reference_sees_nothing(world: World) -> None:
    customer = world.client(CUSTOMER)
    ref = world.objects.ticket

    page_answer = customer.get(f"/tickets/{ref}")
    api_answer = customer.get(f"/api/v1/tickets/{ref}", headers=bearer(world, CUSTOMER))
    plain_api = customer.get(f"/api/v1/tickets/{ref}")

    assert page_answer.status_code == 302
    assert page_answer.headers["Location"].startswith("/login?next=")
    assert (api_answer.status_code, plain_api.status_code) == (401, 401)
    for answer in (page_answer, api_answer, plain_api):
        body = answer.get_data(as_text=True)
        assert world.objects.subject not in body and "jana@customer.example" not in body
