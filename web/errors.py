"""One error handler: domain errors become pages (or JSON under /api/), with the message."""

from __future__ import annotations

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.wrappers import Response

from engine.errors import DefinitionError, FormInvalid
from workflows.errors import Conflict, DeskError, InvalidInput, NotFound, PermissionDenied

from .db import fail

STATUS = {NotFound: 404, PermissionDenied: 403, Conflict: 409, InvalidInput: 422}
TITLES = {
    400: "Bad request",
    401: "Log in first",
    403: "Not yours",
    404: "Not found",
    405: "Not allowed",
    409: "Someone was faster",
    413: "Too large",
    422: "Please check",
    429: "Slow down",
    500: "Our fault",
}


def _wants_json() -> bool:
    """The API, a caller asking for JSON, and a JSON request (the studio's editor) get JSON."""
    return (
        request.path.startswith("/api/")
        or request.is_json
        or request.accept_mimetypes.best == "application/json"
    )


def answer(status: int, message: str, errors: dict[str, str] | None = None) -> tuple[Response | str, int]:
    fail()
    if _wants_json():
        body: dict[str, object] = {"error": message, "status": status, "fields": errors or {}}
        return jsonify(body), status
    return render_template(
        "error.html", status=status, title=TITLES.get(status, "Error"), message=message
    ), status


def init_app(app: Flask) -> None:
    @app.errorhandler(DeskError)
    def _desk_error(exc: DeskError) -> tuple[Response | str, int]:
        status = next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 400)
        return answer(status, str(exc))

    @app.errorhandler(DefinitionError)
    def _definition_error(exc: DefinitionError) -> tuple[Response | str, int]:
        fail()
        problems = [p.to_dict() for p in exc.problems]
        if _wants_json():
            return jsonify({"error": "the diagram has problems", "status": 422, "problems": problems}), 422
        message = "The diagram has problems: " + "; ".join(str(p) for p in exc.problems[:20])
        return render_template("error.html", status=422, title=TITLES[422], message=message), 422

    @app.errorhandler(FormInvalid)
    def _form_invalid(exc: FormInvalid) -> tuple[Response | str, int]:
        return answer(422, "Some fields need attention.", exc.errors)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response | str, int] | tuple[Response | str, int, dict[str, str]]:
        status = exc.code or 500
        message = exc.description or TITLES.get(status, "Error")
        if status == 400 and "CSRF" in (exc.description or ""):
            message = "The form expired or did not come from this site. Reload the page and try again."
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            return (*answer(status, message), {"Allow": ", ".join(exc.valid_methods)})
        return answer(status, message)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response | str, int]:
        app.logger.exception("unexpected error on %s %s", request.method, request.path)
        return answer(500, "Something went wrong on our side; it is logged. Try again, or tell an admin.")
