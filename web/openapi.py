"""The OpenAPI 3.1 document of /api/v1, written by hand (tests check it against the routes)."""

from __future__ import annotations

from typing import Any

from workflows.operations import STATUSES

VERSION = "1.0.0"

_DATE = {"type": ["string", "null"], "format": "date-time"}
_TEXT_OR_NULL = {"type": ["string", "null"]}
_PRIORITY = {"type": "string", "enum": ["P1", "P2", "P3", "P4"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(properties: dict[str, Any], *, required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        **extra,
    }


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    names = {
        400: "BadRequest",
        401: "Unauthorized",
        403: "Forbidden",
        404: "NotFound",
        409: "Conflict",
        422: "Unprocessable",
    }
    return {str(code): {"$ref": f"#/components/responses/{names[code]}"} for code in codes}


def _body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"required": True, "description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


_PAGING = [{"$ref": "#/components/parameters/page"}, {"$ref": "#/components/parameters/per_page"}]
_TICKET_REF = {"$ref": "#/components/parameters/reference"}
_TASK_ID = {"$ref": "#/components/parameters/task_id"}

SCHEMAS: dict[str, Any] = {
    "Error": _obj(
        {
            "error": {"type": "string", "description": "What went wrong, fit to show a person."},
            "status": {"type": "integer", "description": "The HTTP status code again."},
            "fields": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "Field (or query parameter) → what is wrong with it; empty otherwise.",
            },
        }
    ),
    "TicketSummary": _obj(
        {
            "reference": {"type": "string", "examples": ["LD-1001"]},
            "subject": {"type": "string"},
            "status": {"type": "string", "description": "Set by the lifecycle: new, escalated, closed, ..."},
            "priority": _PRIORITY,
            "category": _TEXT_OR_NULL,
            "group": {**_TEXT_OR_NULL, "description": "The owning agent group's slug, e.g. tier-1."},
            "assignee": {**_TEXT_OR_NULL, "description": "E-mail of the agent holding the ticket."},
            "requester": {"type": "string", "format": "email"},
            "sla_due_at": {**_DATE, "description": "When the most urgent running SLA clock is due."},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "closed_at": _DATE,
        }
    ),
    "TicketListItem": {"allOf": [_ref("TicketSummary"), _obj({"urgency": _ref("Urgency")})]},
    "Urgency": _obj(
        {
            "clock": {**_TEXT_OR_NULL, "description": "The most urgent running or paused SLA clock."},
            "due_at": _DATE,
            "used_percent": {
                "type": ["integer", "null"],
                "description": "Share of the SLA target used, in business time.",
            },
            "state": {"type": "string", "enum": ["breached", "at_risk", "ok", "paused", "none"]},
        }
    ),
    "TicketPage": _obj(
        {
            "items": {"type": "array", "items": _ref("TicketListItem")},
            "page": {"type": "integer", "minimum": 1},
            "per_page": {"type": "integer", "minimum": 1, "maximum": 100},
            "pages": {"type": "integer", "minimum": 1},
            "total": {"type": "integer", "minimum": 0},
        }
    ),
    "Ticket": {
        "allOf": [
            _ref("TicketSummary"),
            _obj(
                {
                    "mailbox": _TEXT_OR_NULL,
                    "language": _TEXT_OR_NULL,
                    "process": _obj(
                        {
                            "id": {"type": "string"},
                            "version": {"type": "integer"},
                            "status": {"type": "string", "enum": ["running", "completed", "failed"]},
                            "error": _TEXT_OR_NULL,
                            "next_wake_at": _DATE,
                        }
                    ),
                    "open_tasks": {"type": "array", "items": _ref("Task")},
                    "sla": {"type": "array", "items": _ref("SlaClock")},
                    "conversation": {"type": "array", "items": _ref("ConversationEntry")},
                    "timeline": {"type": "array", "items": _ref("TimelineEvent")},
                }
            ),
        ]
    },
    "NewTicket": _obj(
        {
            "requester": {"type": "string", "format": "email", "maxLength": 320},
            "requester_name": {"type": "string", "maxLength": 200},
            "subject": {"type": "string", "minLength": 1, "maxLength": 998},
            "body": {"type": "string", "maxLength": 100000},
            "priority": {**_PRIORITY, "default": "P3"},
        },
        required=["requester", "subject"],
        additionalProperties=False,
    ),
    "Reply": _obj(
        {"body": {"type": "string", "minLength": 1, "maxLength": 100000}}, additionalProperties=False
    ),
    "ConversationEntry": _obj(
        {
            "id": {"type": "integer"},
            "kind": {
                "type": "string",
                "enum": ["inbound", "outbound", "note"],
                "description": "inbound: from the customer; outbound: an agent's reply; note: internal.",
            },
            "author": {**_TEXT_OR_NULL, "description": "The agent who wrote it (outbound, note)."},
            "customer": {**_TEXT_OR_NULL, "description": "The customer who wrote it (inbound)."},
            "body": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "mail_id": {"type": ["integer", "null"]},
        }
    ),
    "SlaClock": _obj(
        {
            "name": {"type": "string", "examples": ["first_response", "next_response", "resolution"]},
            "state": {"type": "string", "enum": ["running", "paused", "met", "breached", "stopped"]},
            "policy": {"type": "string"},
            "calendar": {"type": "string"},
            "target_seconds": {"type": "integer", "description": "Business seconds."},
            "elapsed_seconds": {"type": "integer"},
            "started_at": {"type": "string", "format": "date-time"},
            "paused_at": _DATE,
            "due_at": _DATE,
            "breached_at": _DATE,
            "stopped_at": _DATE,
        }
    ),
    "TimelineEvent": _obj(
        {
            "id": {"type": "integer"},
            "at": {"type": "string", "format": "date-time"},
            "actor": {"type": "string", "examples": ["user:tereza@desk.example", "timer"]},
            "action": {"type": "string"},
            "element_id": _TEXT_OR_NULL,
            "task_id": _TEXT_OR_NULL,
            "detail": {"type": "string"},
            "data": {"type": "object"},
        }
    ),
    "Task": _obj(
        {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "element_id": {"type": "string"},
            "state": {"type": "string", "enum": ["open", "completed", "cancelled"]},
            "group": _TEXT_OR_NULL,
            "assignee": _TEXT_OR_NULL,
            "ticket": _obj(
                {
                    "reference": {"type": "string"},
                    "subject": {"type": "string"},
                    "status": {"type": "string"},
                    "priority": _PRIORITY,
                }
            ),
            "created_at": {"type": "string", "format": "date-time"},
            "claimed_at": _DATE,
            "completed_at": _DATE,
            "completed_by": _TEXT_OR_NULL,
        }
    ),
    "InboxTask": {
        "allOf": [
            _ref("Task"),
            _obj(
                {
                    "urgency": _ref("Urgency"),
                }
            ),
        ]
    },
    "TaskPage": _obj(
        {
            "items": {"type": "array", "items": _ref("InboxTask")},
            "page": {"type": "integer", "minimum": 1},
            "per_page": {"type": "integer", "minimum": 1, "maximum": 100},
            "pages": {"type": "integer", "minimum": 1},
            "total": {"type": "integer", "minimum": 0},
        }
    ),
    "FormField": _obj(
        {
            "id": {"type": "string"},
            "label": {"type": "string"},
            "type": {"type": "string", "enum": ["string", "long", "boolean", "date", "enum"]},
            "default": _TEXT_OR_NULL,
            "required": {"type": "boolean"},
            "readonly": {"type": "boolean"},
            "options": {
                "type": "array",
                "items": _obj({"id": {"type": "string"}, "name": {"type": "string"}}),
                "description": "The choices of an enum field.",
            },
            "validation": {
                "type": "object",
                "additionalProperties": {"type": ["string", "null"]},
                "description": "The diagram's constraints: required, readonly, min, max, minlength, "
                "maxlength, pattern.",
            },
        }
    ),
    "TaskDetail": {"allOf": [_ref("Task"), _obj({"form": {"type": "array", "items": _ref("FormField")}})]},
    "Assign": _obj(
        {
            "assignee": {
                "type": "string",
                "format": "email",
                "description": "A colleague of the task's group.",
            }
        },
        additionalProperties=False,
    ),
    "Completion": _obj(
        {
            "data": {
                "type": "object",
                "description": "Form field id → value (text, or JSON numbers and booleans for "
                "long and boolean fields; dates as YYYY-MM-DD).",
            }
        },
        required=[],
        additionalProperties=False,
    ),
    "Me": _obj(
        {
            "id": {"type": "integer"},
            "email": {"type": "string", "format": "email"},
            "name": {"type": "string"},
            "role": {"type": "string", "enum": ["agent", "owner", "admin"]},
            "groups": {"type": "array", "items": {"type": "string"}},
            "lead_of": {"type": "array", "items": {"type": "string"}},
        }
    ),
}

RESPONSES: dict[str, Any] = {
    "BadRequest": _json(_ref("Error"), "The body is not a JSON object."),
    "Unauthorized": {
        **_json(_ref("Error"), "No API token, or an unknown or revoked one."),
        "headers": {
            "WWW-Authenticate": {"schema": {"type": "string"}, "description": 'Bearer realm="lanedesk"'}
        },
    },
    "Forbidden": _json(_ref("Error"), "The caller may not do this (not in the group, wrong role)."),
    "NotFound": _json(_ref("Error"), "No such ticket or task."),
    "Conflict": _json(
        _ref("Error"), "Someone else was faster (completed, claimed or moved it first); nothing changed."
    ),
    "Unprocessable": _json(_ref("Error"), "Some fields or parameters are wrong: see `fields`."),
}

PARAMETERS: dict[str, Any] = {
    "page": _query("page", "Page number, from 1.", {"type": "integer", "minimum": 1, "default": 1}),
    "per_page": _query(
        "per_page", "Items per page.", {"type": "integer", "minimum": 1, "maximum": 100, "default": 25}
    ),
    "reference": {
        "name": "reference",
        "in": "path",
        "required": True,
        "description": "The ticket reference (LD-1001) or its number (1001).",
        "schema": {"type": "string"},
    },
    "task_id": {
        "name": "task_id",
        "in": "path",
        "required": True,
        "description": "The task id (a UUID).",
        "schema": {"type": "string"},
    },
}


def _paths() -> dict[str, Any]:
    task_answer = _json(_ref("Task"), "The task as it is now.")
    return {
        "/tickets": {
            "get": {
                "operationId": "listTickets",
                "summary": "Tickets the caller may see: filtered, searched, sorted",
                "tags": ["tickets"],
                "parameters": [
                    *_PAGING,
                    _query(
                        "q",
                        "Full-text search of the subject and the whole conversation (internal notes "
                        'too): words, "quoted phrases", `or` between alternatives, `-word` to '
                        "exclude; every word must occur somewhere in the ticket. A ticket reference "
                        "is just a word here: use GET /tickets/{reference} to open one.",
                        {"type": "string", "maxLength": 256},
                    ),
                    _query(
                        "status",
                        "all (default), unresolved (neither resolved nor closed), or one status.",
                        {"type": "string", "enum": ["all", "unresolved", *STATUSES], "default": "all"},
                    ),
                    _query(
                        "group", "Only tickets of this group (slug); `none`: of no group.", {"type": "string"}
                    ),
                    _query(
                        "assignee",
                        "`me`, `none` (held by nobody), or a user's e-mail address.",
                        {"type": "string"},
                    ),
                    _query("priority", "Only tickets of this priority.", _PRIORITY),
                    _query(
                        "breached",
                        "true: only tickets whose most urgent SLA clock is overdue.",
                        {"type": "boolean", "default": False},
                    ),
                    _query(
                        "sort",
                        "relevance (the default with q), newest (the default without), oldest, "
                        "urgent (earliest SLA due first), updated (most recently updated first).",
                        {"type": "string", "enum": ["relevance", "newest", "oldest", "urgent", "updated"]},
                    ),
                ],
                "responses": {
                    "200": _json(_ref("TicketPage"), "One page of tickets."),
                    **_errors(401, 422),
                },
            },
            "post": {
                "operationId": "openTicket",
                "summary": "Open a ticket on a customer's behalf (agents and admins)",
                "tags": ["tickets"],
                "requestBody": _body(_ref("NewTicket"), "The customer's request."),
                "responses": {
                    "201": {
                        **_json(_ref("TicketSummary"), "The ticket, its lifecycle started."),
                        "headers": {
                            "Location": {"schema": {"type": "string"}, "description": "The ticket's URL."}
                        },
                    },
                    **_errors(400, 401, 403, 422),
                },
            },
        },
        "/tickets/{reference}": {
            "parameters": [_TICKET_REF],
            "get": {
                "operationId": "getTicket",
                "summary": "A ticket: conversation (with internal notes), open tasks, SLA clocks, timeline",
                "tags": ["tickets"],
                "responses": {"200": _json(_ref("Ticket"), "The ticket."), **_errors(401, 403, 404)},
            },
        },
        "/tickets/{reference}/reply": {
            "parameters": [_TICKET_REF],
            "post": {
                "operationId": "replyToTicket",
                "summary": "Answer the customer (mailed to the requester and Cc; the process hears it)",
                "tags": ["tickets"],
                "requestBody": _body(_ref("Reply"), "The answer's text."),
                "responses": {
                    "201": _json(_ref("ConversationEntry"), "The reply on the conversation."),
                    **_errors(400, 401, 403, 404, 409, 422),
                },
            },
        },
        "/tasks": {
            "get": {
                "operationId": "listTasks",
                "summary": "The caller's inbox: open tasks they may work on",
                "tags": ["tasks"],
                "parameters": [
                    *_PAGING,
                    _query(
                        "view",
                        "mine: held by me; groups: my groups' unclaimed tasks; all: everything I may see.",
                        {"type": "string", "enum": ["mine", "groups", "all"], "default": "all"},
                    ),
                    _query("group", "Only tasks of this group (slug).", {"type": "string"}),
                    _query("priority", "Only tasks of tickets with this priority.", _PRIORITY),
                    _query(
                        "sla",
                        "breached: overdue; ok: due later; none: no running SLA clock.",
                        {"type": "string", "enum": ["breached", "ok", "none"]},
                    ),
                    _query(
                        "sort",
                        "urgency: earliest SLA due first.",
                        {
                            "type": "string",
                            "enum": ["urgency", "oldest", "newest", "priority"],
                            "default": "urgency",
                        },
                    ),
                ],
                "responses": {"200": _json(_ref("TaskPage"), "One page of tasks."), **_errors(401, 422)},
            },
        },
        "/tasks/{task_id}": {
            "parameters": [_TASK_ID],
            "get": {
                "operationId": "getTask",
                "summary": "A task with its form fields",
                "tags": ["tasks"],
                "responses": {"200": _json(_ref("TaskDetail"), "The task."), **_errors(401, 403, 404)},
            },
        },
        "/tasks/{task_id}/claim": {
            "parameters": [_TASK_ID],
            "post": {
                "operationId": "claimTask",
                "summary": "Take the task (when nobody else holds it)",
                "tags": ["tasks"],
                "responses": {"200": task_answer, **_errors(401, 403, 404, 409)},
            },
        },
        "/tasks/{task_id}/unclaim": {
            "parameters": [_TASK_ID],
            "post": {
                "operationId": "unclaimTask",
                "summary": "Give the task back to its group's queue",
                "tags": ["tasks"],
                "responses": {"200": task_answer, **_errors(401, 403, 404, 409)},
            },
        },
        "/tasks/{task_id}/assign": {
            "parameters": [_TASK_ID],
            "post": {
                "operationId": "assignTask",
                "summary": "Hand the task to a colleague of its group",
                "description": "The holder may; with nobody holding it anyone of the group may; the "
                "group's lead and admins may move any task of the group. The colleague is notified.",
                "tags": ["tasks"],
                "requestBody": _body(_ref("Assign"), "Who gets the task."),
                "responses": {"200": task_answer, **_errors(400, 401, 403, 404, 409, 422)},
            },
        },
        "/tasks/{task_id}/complete": {
            "parameters": [_TASK_ID],
            "post": {
                "operationId": "completeTask",
                "summary": "Complete the task with its form data; the process runs on",
                "description": "Validated against the diagram's form on the server. A field error "
                "answers 422 with `fields`; a task completed (or claimed) by someone else first "
                "answers 409. Either way nothing was changed.",
                "tags": ["tasks"],
                "requestBody": _body(_ref("Completion"), "The form's values."),
                "responses": {
                    "200": _json(_ref("Task"), "The completed task."),
                    **_errors(400, 401, 403, 404, 409, 422),
                },
            },
        },
        "/me": {
            "get": {
                "operationId": "getMe",
                "summary": "The user the token belongs to",
                "tags": ["me"],
                "responses": {"200": _json(_ref("Me"), "The caller."), **_errors(401)},
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document",
                "tags": ["me"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "The OpenAPI 3.1 document.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }


def document(*, server: str = "/api/v1") -> dict[str, Any]:
    """The OpenAPI 3.1 document; ``server`` is the API's base URL (path) the paths hang off."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Lanedesk API",
            "version": VERSION,
            "summary": "Tickets and the agent's inbox of a Lanedesk service desk.",
            "description": "Authenticate every call with `Authorization: Bearer ld_...` (create a "
            "token with `lanedesk user token EMAIL --name NAME`; revoke it with `lanedesk user "
            "revoke-token`). The web UI's session cookie is not accepted. What a token may see "
            "and do is what its user may in the web UI: agents their groups' tickets and tasks, "
            'admins everything. Errors are JSON: `{"error", "status", "fields"}`.',
            "license": {"name": "AGPL-3.0-or-later", "identifier": "AGPL-3.0-or-later"},
        },
        "servers": [{"url": server}],
        "security": [{"bearer": []}],
        "tags": [
            {"name": "tickets", "description": "Tickets and their conversation."},
            {"name": "tasks", "description": "The human tasks the diagrams hand out."},
            {"name": "me", "description": "The caller and this description."},
        ],
        "paths": _paths(),
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "ld_ token",
                    "description": "An API token from `lanedesk user token`.",
                }
            },
            "schemas": SCHEMAS,
            "responses": RESPONSES,
            "parameters": PARAMETERS,
        },
    }
