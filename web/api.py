"""The JSON API under /api/v1: bearer tokens, the web UI's authorisation rules, JSON errors.

Authentication is ``Authorization: Bearer ld_...`` and nothing else (``lanedesk user token``
makes one). The session cookie of the web UI is never looked at here, which is why the
blueprint is exempt from CSRF: a browser cannot be tricked into sending a bearer token.

Who may see and do what is decided by the same domain functions as in the web UI
(``may_work_on``, ``may_work_on_task``, the inbox's visibility; admins see everything), and
every change goes through the same services (claim, release, complete, reply, open), so the
API can do nothing an agent could not do in the browser. Errors are
``{"error": message, "status": code, "fields": {field: message}}`` (web/errors.py). The
OpenAPI 3.1 document describing all of this is served at ``/api/v1/openapi.json``.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify, make_response, request, url_for
from sqlalchemy import or_, select, update
from werkzeug.exceptions import BadRequest

from engine.errors import FormInvalid
from workflows import audit
from workflows.errors import InvalidInput, NotFound, PermissionDenied
from workflows.inbox import SORTS, VIEWS, TaskLine, Urgency, inbox_lines
from workflows.models import (
    TICKET_NUMBER_OFFSET,
    ApiToken,
    AuditEvent,
    ConversationEntry,
    Customer,
    Group,
    HumanTask,
    SlaClock,
    Ticket,
    User,
)
from workflows.operations import STATUSES
from workflows.output import iso
from workflows.search import MAX_QUERY_CHARS, STATUS_QUEUES, TicketRow, search_tickets
from workflows.search import SORTS as TICKET_SORTS
from workflows.sla import PRIORITIES
from workflows.tickets import (
    get_ticket,
    may_work_on,
    normalise_email,
    open_ticket,
    reference,
    reply_as_agent,
    ticket_view,
)
from workflows.users import user_for_token
from workflows.worklist import claim_task, complete_task, may_work_on_task, release_task

from . import openapi
from .db import db, desk
from .errors import answer

bp = Blueprint("api", __name__, url_prefix="/api/v1")

#: Endpoints anyone may read (the API's own description).
PUBLIC = {"api.openapi_document"}
DEFAULT_PER_PAGE = 25
MAX_PER_PAGE = 100
MAX_PAGE = 1_000_000
MAX_BODY = 100_000
#: Roles that may open tickets on a customer's behalf.
OPENERS = ("agent", "admin")
#: Inbox SLA filter values (``at_risk`` is a colour of a row, not a filter).
SLA_FILTERS = ("breached", "ok", "none")
_SAFE = {"GET", "HEAD", "OPTIONS"}


# -- authentication ----------------------------------------------------------------------------
@bp.before_request
def _authenticate() -> Response | None:
    if request.endpoint in PUBLIC:
        return None
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return _unauthorized("send an API token: Authorization: Bearer ld_... (see `lanedesk user token`)")
    user = _token_user(token) if len(token) <= 200 else None
    if user is None:
        return _unauthorized("the API token is unknown or revoked", invalid=True)
    g.api_user = user
    return None


def _token_user(token: str) -> User | None:
    """The token's user, loaded in the request's session.

    ``user_for_token`` stamps ``last_used_at`` now and then. A read-only request must not write
    in its own (read-only) transaction, so there the stamp is taken out and written in a short
    write transaction of its own; a writing request keeps it in its transaction.
    """
    session = db()
    if request.method not in _SAFE:
        return user_for_token(session, token, now=desk().clock())
    with session.no_autoflush:
        user = user_for_token(session, token, now=desk().clock())
    for row in [row for row in session.dirty if isinstance(row, ApiToken)]:
        token_id, used_at = row.id, row.last_used_at
        session.expunge(row)  # the change leaves the read-only transaction...
        if used_at is not None:  # ...and is written on its own (at most every few minutes)
            with desk().unit_of_work() as writer:
                writer.execute(
                    update(ApiToken)
                    .where(ApiToken.id == token_id)
                    .where(or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at < used_at))
                    .values(last_used_at=used_at)
                )
    return user


def _unauthorized(message: str, *, invalid: bool = False) -> Response:
    body, status = answer(401, message)
    response = make_response(body, status)
    challenge = 'Bearer realm="lanedesk"'
    response.headers["WWW-Authenticate"] = challenge + (', error="invalid_token"' if invalid else "")
    return response


def caller() -> User:
    """The user whose token authenticated this request."""
    user: User = g.api_user
    return user


# -- request parsing -----------------------------------------------------------------------------
def _int_arg(name: str, default: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or not 1 <= int(raw) <= high:
        raise FormInvalid({name: f"must be a whole number from 1 to {high}"})
    return int(raw)


def _choice_arg(name: str, allowed: tuple[str, ...]) -> str | None:
    raw = request.args.get(name) or None
    if raw is not None and raw not in allowed:
        raise FormInvalid({name: f"must be one of: {', '.join(allowed)}"})
    return raw


def _paging() -> tuple[int, int]:
    return _int_arg("page", 1, MAX_PAGE), _int_arg("per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE)


def _json_object(allowed: set[str]) -> dict[str, Any]:
    """The request's JSON object; keys outside ``allowed`` are refused, like unknown form fields."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object (Content-Type: application/json)")
    unknown = {key: "is not a field of this request" for key in sorted(set(data) - allowed)}
    if unknown:
        raise FormInvalid(unknown)
    return data


def _text(data: dict[str, Any], name: str, errors: dict[str, str], *, limit: int, required: bool) -> str:
    value = data.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            errors[name] = "is required"
        return ""
    if not isinstance(value, str):
        errors[name] = "must be text"
        return ""
    if len(value) > limit:
        errors[name] = f"must be at most {limit:,} characters"
        return ""
    return value


# -- rendering -----------------------------------------------------------------------------------
def _ref(ticket_id: int) -> str:
    return f"{desk().settings.ticket_prefix}-{ticket_id + TICKET_NUMBER_OFFSET}"


def _emails(ids: set[int | None]) -> dict[int, str]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    return {
        user_id: email
        for user_id, email in db().execute(select(User.id, User.email).where(User.id.in_(wanted)))
    }


def _ticket_json(ticket: Ticket, assignee: str | None) -> dict[str, Any]:
    return {
        "reference": _ref(ticket.id),
        "subject": ticket.subject,
        "status": ticket.status,
        "priority": ticket.priority,
        "category": ticket.category,
        "group": ticket.group.slug if ticket.group else None,
        "assignee": assignee,
        "requester": ticket.requester.email,
        "sla_due_at": iso(ticket.sla_due_at),
        "created_at": iso(ticket.created_at),
        "updated_at": iso(ticket.updated_at),
        "closed_at": iso(ticket.closed_at),
    }


def _task_json(task: HumanTask) -> dict[str, Any]:
    ticket = task.ticket
    # Lists show open tasks only, so this costs a query only for a task just completed.
    completed_by = _emails({task.completed_by_id}).get(task.completed_by_id) if task.completed_by_id else None
    return {
        "id": task.id,
        "name": task.name,
        "element_id": task.element_id,
        "state": task.state,
        "group": task.group.slug if task.group else None,
        "assignee": task.assignee.email if task.assignee else None,
        "ticket": {
            "reference": _ref(ticket.id),
            "subject": ticket.subject,
            "status": ticket.status,
            "priority": ticket.priority,
        },
        "created_at": iso(task.created_at),
        "claimed_at": iso(task.claimed_at),
        "completed_at": iso(task.completed_at),
        "completed_by": completed_by,
    }


def _field_json(field: dict[str, Any]) -> dict[str, Any]:
    rules = field.get("validation") or {}
    return {
        "id": field["id"],
        "label": field.get("label") or field["id"],
        "type": field.get("type") or "string",
        "default": field.get("default"),
        "required": "required" in rules and str(rules.get("required") or "true").lower() != "false",
        "readonly": "readonly" in rules and str(rules.get("readonly") or "true").lower() != "false",
        "options": [{"id": value, "name": name} for value, name in field.get("options") or []],
        "validation": {name: config for name, config in rules.items()},
    }


def _line_json(line: TaskLine) -> dict[str, Any]:
    """An inbox line as :func:`_task_json` shows a task (inbox lines are open tasks), with its
    urgency."""
    return {
        "id": line.task_id,
        "name": line.name,
        "element_id": line.element_id,
        "state": "open",
        "group": line.group_slug,
        "assignee": line.assignee_email,
        "ticket": {
            "reference": f"{desk().settings.ticket_prefix}-{line.ticket_number}",
            "subject": line.subject,
            "status": line.status,
            "priority": line.priority,
        },
        "created_at": iso(line.created_at),
        "claimed_at": iso(line.claimed_at),
        "completed_at": None,
        "completed_by": None,
        "urgency": _urgency_json(line.urgency),
    }


def _urgency_json(urgency: Urgency) -> dict[str, Any]:
    return {
        "clock": urgency.clock,
        "due_at": iso(urgency.due_at),
        "used_percent": urgency.percent,
        "state": urgency.state,
    }


def _entry_json(
    entry: ConversationEntry, agents: dict[int, str], customers: dict[int, str]
) -> dict[str, Any]:
    return {
        "id": entry.id,
        "kind": entry.kind,
        "author": agents.get(entry.author_id) if entry.author_id is not None else None,
        "customer": customers.get(entry.customer_id) if entry.customer_id is not None else None,
        "body": entry.body,
        "created_at": iso(entry.created_at),
        "mail_id": entry.mail_id,
    }


def _clock_json(clock: SlaClock) -> dict[str, Any]:
    return {
        "name": clock.name,
        "state": clock.state,
        "policy": clock.policy,
        "calendar": clock.calendar,
        "target_seconds": clock.target_seconds,
        "elapsed_seconds": clock.elapsed_seconds,
        "started_at": iso(clock.started_at),
        "paused_at": iso(clock.paused_at),
        "due_at": iso(clock.due_at),
        "breached_at": iso(clock.breached_at),
        "stopped_at": iso(clock.stopped_at),
    }


def _event_json(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": iso(event.created_at),
        "actor": event.actor,
        "action": event.action,
        "element_id": event.element_id,
        "task_id": event.task_id,
        "detail": event.detail,
        "data": event.data,
    }


def _page_json(items: list[dict[str, Any]], page: int, per_page: int, total: int) -> dict[str, Any]:
    return {
        "items": items,
        "page": page,
        "per_page": per_page,
        "pages": max(1, -(-total // per_page)),
        "total": total,
    }


# -- tickets -------------------------------------------------------------------------------------
@bp.get("/tickets")
def tickets() -> dict[str, Any]:
    """One page of the tickets the caller may see: filtered, searched (``q``) and sorted as the
    web UI's ticket list does (workflows.search), with stricter checks of the parameters."""
    page, per_page = _paging()
    q = (request.args.get("q") or "").strip()
    if len(q) > MAX_QUERY_CHARS:
        raise FormInvalid({"q": f"must be at most {MAX_QUERY_CHARS} characters"})
    status = _choice_arg("status", (*STATUS_QUEUES, *STATUSES)) or "all"
    found = search_tickets(
        db(),
        desk().settings,
        caller(),
        now=desk().clock(),
        q=q,
        status=status,
        group=(request.args.get("group") or "").strip(),
        assignee=_assignee_arg(),
        priority=_choice_arg("priority", PRIORITIES) or "",
        breached=_flag_arg("breached"),
        sort=_choice_arg("sort", TICKET_SORTS) or "",
        page=page,
        page_size=per_page,
    )
    # search_tickets() shows the last page for a page beyond it; a client paging on must see the end.
    items = [_ticket_row_json(row) for row in found.rows] if page <= found.pages else []
    return _page_json(items, page, per_page, found.total)


def _assignee_arg() -> str:
    """``me``, ``none``, or a user's e-mail (as search_tickets' user id); empty: anyone."""
    raw = (request.args.get("assignee") or "").strip()
    if raw in ("", "me", "none"):
        return raw
    try:
        user_id = db().scalar(select(User.id).where(User.email == normalise_email(raw)))
    except InvalidInput:
        user_id = None
    if user_id is None:
        raise FormInvalid({"assignee": "must be me, none or the e-mail address of a user"})
    return str(user_id)


def _flag_arg(name: str) -> bool:
    raw = (request.args.get(name) or "").lower()
    if raw not in ("", "true", "false", "1", "0"):
        raise FormInvalid({name: "must be true or false"})
    return raw in ("true", "1")


def _ticket_row_json(row: TicketRow) -> dict[str, Any]:
    found = _ticket_json(row.ticket, row.assignee.email if row.assignee else None)
    found["urgency"] = _urgency_json(row.urgency)
    return found


@bp.post("/tickets")
def create_ticket() -> tuple[Response, int, dict[str, str]]:
    """Open a ticket on a customer's behalf (agents and admins)."""
    user = caller()
    if user.role not in OPENERS:
        raise PermissionDenied(f"only agents and admins open tickets; {user.email} is {user.role}")
    data = _json_object({"requester", "requester_name", "subject", "body", "priority"})
    errors: dict[str, str] = {}
    requester = _text(data, "requester", errors, limit=320, required=True)
    if requester:
        try:
            requester = normalise_email(requester)
        except InvalidInput:
            errors["requester"] = "must be an e-mail address"
    name = _text(data, "requester_name", errors, limit=200, required=False)
    subject = _text(data, "subject", errors, limit=998, required=True)
    body = _text(data, "body", errors, limit=MAX_BODY, required=False)
    priority = data.get("priority", "P3")
    if priority not in PRIORITIES:
        errors["priority"] = f"must be one of: {', '.join(PRIORITIES)}"
    if errors:
        raise FormInvalid(errors)
    now = desk().clock()
    ticket = open_ticket(
        db(),
        desk().settings,
        requester=requester,
        requester_name=name.strip(),
        subject=subject,
        body=body,
        priority=priority,
        now=now,
    )
    ref = reference(desk().settings, ticket)
    audit.record(
        db(),
        ticket_id=ticket.id,
        actor=audit.actor_of(user),
        action="ticket_opened_via_api",
        now=now,
        detail=f"opened by {user.email} for {requester}",
    )
    location = url_for("api.ticket", reference=ref)
    return jsonify(_ticket_json(ticket, None)), 201, {"Location": location}


def _ticket_for(ref: str) -> Ticket:
    found = get_ticket(db(), desk().settings, ref)
    if not may_work_on(db(), caller(), found):
        raise PermissionDenied("this ticket belongs to a group you are not in")
    return found


@bp.get("/tickets/<reference>")
def ticket(reference: str) -> dict[str, Any]:
    """A ticket with its conversation (notes too), open tasks, SLA clocks and timeline."""
    found = _ticket_for(reference)
    view = ticket_view(db(), desk().settings, found.id + TICKET_NUMBER_OFFSET)
    entries = view.conversation
    agents = _emails({e.author_id for e in entries} | {found.assignee_id})
    customer_ids = {e.customer_id for e in entries if e.customer_id is not None}
    query = select(Customer.id, Customer.email).where(Customer.id.in_(customer_ids))
    customers = {row_id: email for row_id, email in db().execute(query)} if customer_ids else {}
    version = view.instance.process_version
    return {
        **_ticket_json(found, agents.get(found.assignee_id) if found.assignee_id else None),
        "mailbox": found.mailbox,
        "language": found.language,
        "process": {
            "id": version.process_id,
            "version": version.version,
            "status": view.instance.status,
            "error": view.instance.error,
            "next_wake_at": iso(view.instance.next_wake_at),
        },
        "open_tasks": [_task_json(task) for task in view.open_tasks],
        "sla": [_clock_json(clock) for clock in view.sla],
        "conversation": [_entry_json(entry, agents, customers) for entry in entries],
        "timeline": [_event_json(event) for event in view.timeline],
    }


@bp.post("/tickets/<reference>/reply")
def reply(reference: str) -> tuple[dict[str, Any], int]:
    """An agent's answer to the customer: on the conversation, mailed, told to the process."""
    user = caller()
    _ticket_for(reference)
    data = _json_object({"body"})
    errors: dict[str, str] = {}
    body = _text(data, "body", errors, limit=MAX_BODY, required=True)
    if errors:
        raise FormInvalid(errors)
    entry = reply_as_agent(
        db(), desk().settings, ticket_ref=reference, agent_email=user.email, body=body, now=desk().clock()
    )
    return _entry_json(entry, {user.id: user.email}, {}), 201


# -- tasks ---------------------------------------------------------------------------------------
@bp.get("/tasks")
def tasks() -> dict[str, Any]:
    """The caller's inbox: open tasks they may work on, most urgent first by default."""
    page, per_page = _paging()
    found = inbox_lines(
        db(),
        desk().settings,
        caller(),
        now=desk().clock(),
        view=_choice_arg("view", VIEWS) or "all",
        group=request.args.get("group") or None,
        priority=_choice_arg("priority", PRIORITIES),
        sla=_choice_arg("sla", SLA_FILTERS),
        sort=_choice_arg("sort", SORTS) or "urgency",
        page=page,
        page_size=per_page,
    )
    # inbox_lines() shows the last page for a page beyond it; an API client paging on must see the end.
    items = [_line_json(line) for line in found.lines] if page <= found.pages else []
    return _page_json(items, page, per_page, found.total)


def _task_for(task_id: str) -> HumanTask:
    found = db().get(HumanTask, task_id)
    if found is None:
        raise NotFound(f"no task {task_id}")
    if not may_work_on_task(caller(), found):
        raise PermissionDenied("this task belongs to a group you are not in")
    return found


@bp.get("/tasks/<task_id>")
def task(task_id: str) -> dict[str, Any]:
    """A task with the form fields its diagram defines."""
    found = _task_for(task_id)
    return {**_task_json(found), "form": [_field_json(field) for field in found.form]}


@bp.post("/tasks/<task_id>/claim")
def claim(task_id: str) -> dict[str, Any]:
    """Take the task (only when nobody else holds it)."""
    return _task_json(claim_task(db(), task_id=task_id, user=caller(), now=desk().clock()))


@bp.post("/tasks/<task_id>/unclaim")
def unclaim(task_id: str) -> dict[str, Any]:
    """Give the task back to its group's queue."""
    released = release_task(
        db(), desk().settings, task_id=task_id, user=caller(), to=None, now=desk().clock()
    )
    return _task_json(released)


@bp.post("/tasks/<task_id>/assign")
def assign(task_id: str) -> dict[str, Any]:
    """Hand the task to a colleague of its group (holder, nobody holding it, group lead, admin)."""
    data = _json_object({"assignee"})
    errors: dict[str, str] = {}
    email = _text(data, "assignee", errors, limit=320, required=True)
    colleague = None
    if email:
        try:
            colleague = db().scalar(select(User).where(User.email == normalise_email(email)))
        except InvalidInput:
            errors["assignee"] = "must be an e-mail address"
        else:
            if colleague is None:
                errors["assignee"] = f"no user {email.strip()}"
    if errors or colleague is None:
        raise FormInvalid(errors)
    moved = release_task(
        db(), desk().settings, task_id=task_id, user=caller(), to=colleague, now=desk().clock()
    )
    return _task_json(moved)


@bp.post("/tasks/<task_id>/complete")
def complete(task_id: str) -> dict[str, Any]:
    """Complete the task with its form data; the process runs on. Nothing changes on an error."""
    data = _json_object({"data"})
    values = data.get("data", {})
    if not isinstance(values, dict):
        raise FormInvalid({"data": "must be an object of form field values"})
    done = complete_task(
        db(), desk().settings, task_id=task_id, user=caller(), data=values, now=desk().clock()
    )
    return _task_json(done)


# -- the caller and the description --------------------------------------------------------------
@bp.get("/me")
def whoami() -> dict[str, Any]:
    user = caller()
    led = db().scalars(select(Group.slug).where(Group.lead_id == user.id).order_by(Group.slug)).all()
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "role": user.role,
        "groups": sorted(group.slug for group in user.groups),
        "lead_of": list(led),
    }


@bp.get("/openapi.json")
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of this API (no token needed)."""
    return openapi.document(server=url_for("api.whoami").removesuffix("/me"))
