"""The process owner's studio: processes and their versions, drafts in the BPMN editor, Check,
deploy, compare, roll back, upload from another modeler, simulate, and monitoring on the diagram.

Owners and admins only (every route). The editor's calls are JSON (CSRF token in the
``X-CSRFToken`` header); the rest are pages and plain forms that work without JavaScript.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_login import login_required
from flask_wtf.csrf import generate_csrf
from sqlalchemy import select
from werkzeug.wrappers import Response

from engine.compare import element_names
from engine.errors import DefinitionError
from engine.xmlload import MAX_DIAGRAM_BYTES
from workflows import simulation, studio
from workflows.definitions import get_version
from workflows.errors import DeskError, InvalidInput
from workflows.models import Group, ProcessDraft, ProcessVersion
from workflows.process_migration import candidates, migrate_instances, preview_migration
from workflows.studio import StaleDraft
from workflows.tickets import reference

from . import assets
from .auth import me
from .db import db, desk, fail

bp = Blueprint("studio", __name__, url_prefix="/studio")

#: Diagram XML served to the editor or downloaded: never rendered by the browser as a document.
INERT_CSP = "sandbox; default-src 'none'"


@bp.before_request
@login_required
def _owners_only() -> None:
    studio.require_owner(me())


def _xml_from_request() -> tuple[bytes, dict[str, Any]]:
    """The diagram posted by the editor (JSON ``{"xml": ...}``) or a form field ``xml``."""
    if request.content_length is not None and request.content_length > MAX_DIAGRAM_BYTES + 65536:
        abort(413, f"a diagram may be at most {MAX_DIAGRAM_BYTES:,} bytes")
    payload = request.get_json(silent=True) if request.is_json else None
    fields: dict[str, Any] = payload if isinstance(payload, dict) else request.form.to_dict()
    xml = fields.get("xml")
    if not isinstance(xml, str) or not xml.strip():
        raise InvalidInput("no diagram was sent (the field xml is empty)")
    return xml.encode("utf-8"), fields


def _xml_response(xml: bytes, filename: str, *, download: bool) -> Response:
    response = Response(xml, mimetype="application/xml")
    response.headers["Content-Security-Policy"] = INERT_CSP
    response.headers["Cache-Control"] = "private, no-cache"
    disposition = "attachment" if download else "inline"
    response.headers["Content-Disposition"] = f'{disposition}; filename="{filename}"'
    return response


# -- processes and versions ------------------------------------------------------------------
@bp.get("")
def index() -> str:
    return render_template("studio/index.html", processes=studio.processes(db()), max_bytes=MAX_DIAGRAM_BYTES)


@bp.get("/processes/<process_id>")
def process(process_id: str) -> str:
    rows = studio.versions(db(), process_id)
    drafts = studio.drafts(db(), process_id)
    if not rows and not drafts:
        abort(404, f"no process {process_id!r} is deployed or drafted")
    return render_template("studio/process.html", process_id=process_id, rows=rows, drafts=drafts)


@bp.get("/processes/<process_id>/versions/<int:number>")
def version(process_id: str, number: int) -> str:
    found = get_version(db(), process_id, number)
    return _editor(
        process_id,
        title=f"{process_id} · version {found.version} (read-only)",
        xml_url=url_for(".version_xml", process_id=process_id, number=number),
        read_only=True,
    )


@bp.get("/processes/<process_id>/versions/<int:number>/diagram.bpmn")
def version_xml(process_id: str, number: int) -> Response:
    found = get_version(db(), process_id, number)
    return _xml_response(
        studio.version_xml(db(), found),
        f"{process_id}-v{number}.bpmn",
        download=request.args.get("download") == "1",
    )


@bp.get("/processes/<process_id>/compare")
def compare(process_id: str) -> str:
    numbers = _numbers(process_id)
    new = request.args.get("to", numbers[0], type=int) or numbers[0]
    old = request.args.get("from", max(new - 1, 1), type=int) or 1
    comparison = studio.compare_versions(db(), process_id, old, new)
    return render_template(
        "studio/compare.html", process_id=process_id, old=old, new=new, numbers=numbers, comparison=comparison
    )


def _numbers(process_id: str) -> list[int]:
    """The process's version numbers, newest first; 404 when it was never deployed."""
    numbers = studio.version_numbers(db(), process_id)
    if not numbers:
        abort(404, f"no process {process_id!r} is deployed")
    return numbers


@bp.post("/processes/<process_id>/versions/<int:number>/roll-back")
def roll_back(process_id: str, number: int) -> Response:
    deployed, created = studio.roll_back(
        db(), desk().settings, process_id=process_id, to=number, actor=me(), now=desk().clock()
    )
    if created:
        flash(f"Deployed version {deployed.version} with the content of version {number}.", "success")
    else:
        flash(f"Version {deployed.version} already has the content of version {number}; nothing deployed.")
    return redirect(url_for(".process", process_id=process_id))


# -- drafts and the editor -------------------------------------------------------------------
@bp.post("/processes/<process_id>/drafts")
def new_draft(process_id: str) -> Response:
    """A draft from a deployed version (the newest unless ``version`` says otherwise)."""
    number = request.form.get("version", type=int)
    base = get_version(db(), process_id, number) if number else studio.newest_version(db(), process_id)
    draft = studio.start_draft(
        db(),
        xml=studio.version_xml(db(), base),
        filename=base.filename,
        actor=me(),
        now=desk().clock(),
        based_on=base,
    )
    return redirect(url_for(".draft", draft_id=draft.id))


@bp.get("/drafts/<int:draft_id>")
def draft(draft_id: int) -> str:
    found = studio.get_draft(db(), draft_id)
    return _editor(
        found.process_id,
        title=f"{found.process_id} · draft {found.id} ({found.title}), revision {found.revision}",
        xml_url=url_for(".draft_xml", draft_id=found.id),
        read_only=found.closed_at is not None,
        draft=found,
    )


@bp.get("/drafts/<int:draft_id>/diagram.bpmn")
def draft_xml(draft_id: int) -> Response:
    found = studio.get_draft(db(), draft_id)
    row = studio.draft_revision(db(), found, request.args.get("revision", type=int))
    return _xml_response(
        row.xml,
        f"{found.process_id}-draft{found.id}-r{row.revision}.bpmn",
        download=request.args.get("download") == "1",
    )


@bp.get("/drafts/<int:draft_id>/history")
def draft_history(draft_id: int) -> str:
    found = studio.get_draft(db(), draft_id)
    return render_template("studio/history.html", draft=found, history=studio.draft_history(db(), found))


@bp.post("/drafts/<int:draft_id>/save")
def save_draft(draft_id: int) -> tuple[Response, int]:
    xml, fields = _xml_from_request()
    base = fields.get("base_revision")
    if base is not None and not isinstance(base, int):
        base = int(base) if str(base).isdigit() else None
    try:
        row = studio.save_draft(db(), draft_id, xml=xml, base_revision=base, actor=me(), now=desk().clock())
    except StaleDraft as exc:  # the editor offers to save over the newer revision
        fail()
        return jsonify({"error": str(exc), "status": 409, "latest_revision": exc.latest}), 409
    body = {
        "draft": draft_id,
        "revision": row.revision,
        "saved_at": row.saved_at.isoformat(),
        "url": url_for(".draft", draft_id=draft_id),
    }
    return jsonify(body), 201


@bp.post("/drafts/<int:draft_id>/discard")
def discard_draft(draft_id: int) -> Response:
    found = studio.discard_draft(db(), draft_id, actor=me(), now=desk().clock())
    flash(f"Draft {found.id} discarded; its saves stay in the history.")
    return redirect(url_for(".process", process_id=found.process_id))


@bp.post("/drafts/<int:draft_id>/deploy")
def deploy(draft_id: int) -> tuple[Response, int]:
    found = studio.get_draft(db(), draft_id)
    xml, fields = _xml_from_request()
    note = str(fields.get("note") or "").strip()
    deployed, created = studio.deploy(
        db(),
        desk().settings,
        xml=xml,
        filename=f"{found.process_id}.bpmn",
        actor=me(),
        now=desk().clock(),
        note=note,
        draft_id=found.id,
    )
    body = {
        "version": deployed.version,
        "created": created,
        "process_id": deployed.process_id,
        "url": url_for(".process", process_id=deployed.process_id),
    }
    if created:
        flash(f"Deployed {deployed.process_id} version {deployed.version}.", "success")
    return jsonify(body), 201


@bp.post("/check")
def check() -> Response:
    xml, fields = _xml_from_request()
    filename = str(fields.get("filename") or "diagram.bpmn")
    problems = studio.check(db(), desk().settings, xml, filename)
    return jsonify({"ok": not problems, "problems": [p.to_dict() for p in problems]})


def _editor(
    process_id: str, *, title: str, xml_url: str, read_only: bool, draft: ProcessDraft | None = None
) -> str:
    editable = draft is not None and not read_only
    return render_template(
        "studio/editor.html",
        process_id=process_id,
        title=title,
        xml_url=xml_url,
        save_url=url_for(".save_draft", draft_id=draft.id) if editable and draft else "",
        check_url=url_for(".check"),
        deploy_url=url_for(".deploy", draft_id=draft.id) if editable and draft else "",
        simulate_url=url_for(".simulate", draft_id=draft.id) if draft else "",
        read_only=not editable,
        draft=draft.id if draft else None,
        draft_revision=draft.revision if draft else None,
        back_url=url_for(".process", process_id=process_id),
        editor_built=assets.editor_built(current_app),
        csrf=generate_csrf(),
    )


# -- simulation --------------------------------------------------------------------------------
#: What the simulation form starts with: the issue's example, nobody acting after the reply.
EXAMPLE_SCENARIO = """\
# A P2 ticket arrives on Friday afternoon; the customer adds details three hours later;
# nobody on the desk acts. Times without a zone are on the calendar's time zone.
arrival: 2026-03-06T16:30
priority: P2
events:
  - after: 3h
    customer_replies: "Here are the logs you asked for."
until: 7d
"""


@bp.route("/drafts/<int:draft_id>/simulate", methods=["GET", "POST"])
def simulate(draft_id: int) -> str | tuple[str, int]:
    """Run the draft's newest save against a scenario on a virtual clock; show the timeline."""
    found = studio.get_draft(db(), draft_id)
    text = request.form.get("scenario", EXAMPLE_SCENARIO) if request.method == "POST" else EXAMPLE_SCENARIO
    timeline, problems, error = None, [], ""
    if request.method == "POST":
        xml = studio.draft_revision(db(), found).xml
        groups = {g.slug: g.name for g in db().scalars(select(Group))}
        try:
            scenario = simulation.parse_scenario(text, "scenario.yaml")
            timeline = simulation.simulate(
                desk().settings, xml, f"{found.process_id}.bpmn", scenario, groups=groups
            )
        except DefinitionError as exc:
            problems = exc.problems
        except DeskError as exc:
            error = str(exc)
    status = 422 if problems or error else 200
    html = render_template(
        "studio/simulate.html",
        draft=found,
        scenario=text,
        timeline=timeline,
        problems=problems,
        error=error,
    )
    return html, status


# -- moving running tickets ----------------------------------------------------------------------
#: Tickets previewed (and offered for moving) per page: each preview loads an instance.
MIGRATE_PAGE = 100


@bp.route("/processes/<process_id>/migrate", methods=["GET", "POST"])
def migrate(process_id: str) -> str | tuple[str, int]:
    """Preview where running tickets would land in a version; move the ones the owner ticks."""
    numbers = _numbers(process_id)
    to = request.values.get("to", numbers[0], type=int) or numbers[0]
    if to not in numbers:
        raise InvalidInput(f"{process_id} has no version {to}")
    report = None
    if request.method == "POST":
        chosen = [int(v) for v in request.form.getlist("instance") if v.isdigit()]
        if not chosen:
            raise InvalidInput("tick at least one ticket to move")
        revisions = {
            int(key.removeprefix("revision-")): int(value)
            for key, value in request.form.items()
            if key.startswith("revision-") and key[9:].isdigit() and value.isdigit()
        }
        report = migrate_instances(
            db(),
            desk().settings,
            process_id=process_id,
            to_version=to,
            instance_ids=chosen,
            actor=me(),
            now=desk().clock(),
            expected_revisions={i: revisions[i] for i in chosen if i in revisions},
        )
    everyone = candidates(db(), process_id=process_id, to_version=to)
    page = max(1, request.args.get("page", 1, type=int) or 1)
    shown = everyone[(page - 1) * MIGRATE_PAGE : page * MIGRATE_PAGE]
    previews = preview_migration(
        db(), desk().settings, process_id=process_id, to_version=to, instance_ids=shown
    )
    return render_template(
        "studio/migrate.html",
        process_id=process_id,
        to=to,
        numbers=numbers,
        previews=previews,
        total=len(everyone),
        page=page,
        pages=max(1, -(-len(everyone) // MIGRATE_PAGE)),
        report=report,
    )


# -- uploads -----------------------------------------------------------------------------------
@bp.post("/upload")
def upload() -> Response | tuple[str, int]:
    file = request.files.get("diagram")
    if file is None or not file.filename:
        raise InvalidInput("choose a .bpmn file to upload")
    data = file.stream.read(MAX_DIAGRAM_BYTES + 1)
    report = studio.upload(
        db(), desk().settings, xml=data, filename=file.filename, actor=me(), now=desk().clock()
    )
    if report.draft is not None:
        flash(
            f"{report.filename} can run here: it is draft {report.draft.id}. Check, simulate, deploy.",
            "success",
        )
        return redirect(url_for(".draft", draft_id=report.draft.id))
    return render_template("studio/upload.html", report=report), 422


# -- monitoring ----------------------------------------------------------------------------------
@bp.get("/processes/<process_id>/monitor")
def monitor(process_id: str) -> str:
    latest = studio.newest_version(db(), process_id)
    loads = _loads(process_id, latest)
    return render_template(
        "studio/monitor.html",
        process_id=process_id,
        latest=latest,
        data_url=url_for(".monitor_json", process_id=process_id),
        xml_url=url_for(".version_xml", process_id=process_id, number=latest.version),
        loads=loads,
        window=studio.MONITOR_WINDOW_DAYS,
    )


@bp.get("/processes/<process_id>/monitor.json")
def monitor_json(process_id: str) -> Response:
    loads = _loads(process_id, studio.newest_version(db(), process_id))
    return jsonify(
        {
            "elements": [
                {
                    **load.to_dict(),
                    "url": url_for(".waiting", process_id=process_id, element_id=load.element_id),
                }
                for load in loads
            ]
        }
    )


def _loads(process_id: str, latest: ProcessVersion) -> list[studio.ElementLoad]:
    """The monitoring numbers, with the task names the newest version gives them."""
    names = element_names(studio.version_xml(db(), latest))
    return studio.monitor(db(), process_id, now=desk().clock(), names=names)


@bp.get("/processes/<process_id>/monitor/<element_id>")
def waiting(process_id: str, element_id: str) -> str:
    tasks = studio.waiting_at(db(), process_id, element_id)
    settings = desk().settings
    return render_template(
        "studio/waiting.html",
        process_id=process_id,
        element_id=element_id,
        tasks=tasks,
        references={t.ticket_id: reference(settings, t.ticket) for t in tasks},
        now=desk().clock(),
    )
