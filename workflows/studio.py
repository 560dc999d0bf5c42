"""The process owner's studio: drafts with history, checks, versions, comparison, roll-back,
uploads from other modelers and the monitoring numbers drawn on the deployed diagram.

Only owners and admins change anything here (:func:`require_owner`); every deploy, roll-back and
upload is audited. A draft is any well-formed diagram (it may still have problems: that is what
Check is for); a version is immutable and deployed only when it has none.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta

from lxml import etree
from sqlalchemy import func, select
from sqlalchemy.orm import Session, joinedload

from engine.compare import Comparison, compare
from engine.errors import DefinitionError, Problem
from engine.lint import BPMN_NS, source_line
from engine.validate import executable_process_id
from engine.xmlload import load_xml

from . import audit
from .definitions import deploy_definition, get_version, latest_version, validate_definition
from .errors import Conflict, NotFound, PermissionDenied
from .models import (
    DefinitionContent,
    HumanTask,
    ProcessDraft,
    ProcessDraftRevision,
    ProcessVersion,
    User,
    WorkflowInstance,
)
from .settings import Settings

#: How far back "median time spent" looks at completed tasks.
MONITOR_WINDOW_DAYS = 30


def require_owner(user: User | None) -> User:
    if user is None or user.role not in ("owner", "admin"):
        who = f"{user.email} is an {user.role}" if user else "nobody is logged in"
        raise PermissionDenied(f"{who}; only process owners and admins use the studio")
    return user


# -- versions --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcessSummary:
    process_id: str
    latest: int
    deployed_at: datetime
    versions: int
    running: int  # running instances, all versions
    drafts: int  # open drafts


def processes(session: Session) -> list[ProcessSummary]:
    """Every deployed process with its latest version, running instances and open drafts."""
    latest = (
        select(
            ProcessVersion.process_id,
            func.max(ProcessVersion.version).label("latest"),
            func.max(ProcessVersion.deployed_at).label("deployed_at"),
            func.count().label("versions"),
        )
        .group_by(ProcessVersion.process_id)
        .order_by(ProcessVersion.process_id)
    )
    running = dict(
        session.execute(
            select(ProcessVersion.process_id, func.count())
            .join(WorkflowInstance, WorkflowInstance.process_version_id == ProcessVersion.id)
            .where(WorkflowInstance.status == "running")
            .group_by(ProcessVersion.process_id)
        ).all()
    )
    drafts = dict(
        session.execute(
            select(ProcessDraft.process_id, func.count())
            .where(ProcessDraft.closed_at.is_(None))
            .group_by(ProcessDraft.process_id)
        ).all()
    )
    found = [
        ProcessSummary(pid, n, at, count, running.get(pid, 0), drafts.get(pid, 0))
        for pid, n, at, count in session.execute(latest).all()
    ]
    known = {p.process_id for p in found}
    for pid, count in sorted(drafts.items()):  # uploaded or new, never deployed
        if pid not in known:
            found.append(ProcessSummary(pid, 0, datetime.min, 0, 0, count))
    return found


@dataclass(frozen=True)
class VersionRow:
    version: ProcessVersion
    deployed_by: str | None
    running: int


def versions(session: Session, process_id: str) -> list[VersionRow]:
    """The versions of ``process_id``, newest first, with who deployed them and what runs on them."""
    running = dict(
        session.execute(
            select(WorkflowInstance.process_version_id, func.count())
            .join(ProcessVersion, WorkflowInstance.process_version_id == ProcessVersion.id)
            .where(ProcessVersion.process_id == process_id, WorkflowInstance.status == "running")
            .group_by(WorkflowInstance.process_version_id)
        ).all()
    )
    rows = session.execute(
        select(ProcessVersion, User.email)
        .outerjoin(User, User.id == ProcessVersion.deployed_by_id)
        .where(ProcessVersion.process_id == process_id)
        .order_by(ProcessVersion.version.desc())
    ).all()
    return [VersionRow(v, email, running.get(v.id, 0)) for v, email in rows]


def version_numbers(session: Session, process_id: str) -> list[int]:
    """The version numbers of ``process_id``, newest first (nothing else read)."""
    return list(
        session.scalars(
            select(ProcessVersion.version)
            .where(ProcessVersion.process_id == process_id)
            .order_by(ProcessVersion.version.desc())
        )
    )


def newest_version(session: Session, process_id: str) -> ProcessVersion:
    """The newest version of ``process_id``; NotFound when it was never deployed."""
    found = latest_version(session, process_id)
    if found is None:
        raise NotFound(f"no process {process_id!r} is deployed")
    return found


def version_xml(session: Session, version: ProcessVersion) -> bytes:
    content = session.get(DefinitionContent, version.content_hash)
    if content is None:
        raise NotFound(f"definition content {version.content_hash} is missing")
    return content.xml


def compare_versions(session: Session, process_id: str, old: int, new: int) -> Comparison:
    """Elements added, removed and changed from version ``old`` to version ``new``."""
    before, after = get_version(session, process_id, old), get_version(session, process_id, new)
    return compare(
        version_xml(session, before),
        version_xml(session, after),
        old_name=f"version {old}",
        new_name=f"version {new}",
    )


def roll_back(
    session: Session,
    settings: Settings,
    *,
    process_id: str,
    to: int,
    actor: User,
    now: datetime,
    note: str = "",
) -> tuple[ProcessVersion, bool]:
    """Deploy version ``to`` again as the newest version (running tickets stay where they are).

    Returns ``(version, created)``: when the newest version already has that content, nothing
    is deployed (rolling back twice is harmless).
    """
    require_owner(actor)
    old = get_version(session, process_id, to)
    version, created = deploy_definition(
        session,
        settings,
        xml=version_xml(session, old),
        filename=old.filename,
        now=now,
        actor=actor,
        note=note or f"roll back to version {to}",
    )
    if not created:
        return version, False
    audit.record(
        session,
        ticket_id=None,
        actor=audit.actor_of(actor),
        action="definition_rolled_back",
        now=now,
        detail=f"{process_id} v{version.version} = v{to}",
        data={"process_id": process_id, "version": version.version, "from_version": to},
    )
    return version, True


# -- drafts ----------------------------------------------------------------------------------
def _loadable(xml: bytes, filename: str) -> str:
    """The executable process id of ``xml``; DefinitionError if it is no diagram we could load."""
    root = load_xml(xml, filename)
    if etree.QName(root).namespace != BPMN_NS or etree.QName(root).localname != "definitions":
        found = etree.QName(root)
        namespace = found.namespace or "no namespace"
        message = f"not a BPMN 2.0 diagram: the document is <{found.localname}> in {namespace}"
        raise DefinitionError(
            [
                Problem(
                    filename, source_line(root) or 1, "", message + f"; expected <definitions> in {BPMN_NS}"
                )
            ]
        )
    try:
        return executable_process_id(root, filename)
    except DefinitionError:
        raise
    except Exception as exc:  # a foreign document: say what it is instead of a traceback
        raise DefinitionError([Problem(filename, 1, "", f"not a BPMN diagram: {exc}")]) from None


def start_draft(
    session: Session,
    *,
    xml: bytes,
    filename: str,
    actor: User,
    now: datetime,
    based_on: ProcessVersion | None = None,
    title: str = "",
) -> ProcessDraft:
    """A new draft whose first revision is ``xml`` (which must load; problems are allowed).

    Opened from ``based_on``, the XML is that version's and is not parsed again.
    """
    require_owner(actor)
    process_id = based_on.process_id if based_on else _loadable(xml, filename)
    return _new_draft(session, process_id, xml, filename, actor, now, based_on, title)


def _new_draft(
    session: Session,
    process_id: str,
    xml: bytes,
    filename: str,
    actor: User,
    now: datetime,
    based_on: ProcessVersion | None,
    title: str,
) -> ProcessDraft:
    draft = ProcessDraft(
        process_id=process_id,
        title=title or (f"from version {based_on.version}" if based_on else filename),
        based_on_id=based_on.id if based_on else None,
        revision=0,
        created_by_id=actor.id,
        created_at=now,
        updated_at=now,
    )
    session.add(draft)
    session.flush()
    _add_revision(session, draft, xml, actor, now)
    return draft


class StaleDraft(Conflict):
    """Someone saved the draft after the editor opened it; ``latest`` is their revision."""

    def __init__(self, draft: ProcessDraft, base_revision: int):
        self.latest = draft.revision
        super().__init__(
            f"draft {draft.id} was saved again (revision {draft.revision}) after you opened revision "
            f"{base_revision}: reload it to see theirs, or save yours over it"
        )


def save_draft(
    session: Session, draft_id: int, *, xml: bytes, base_revision: int | None, actor: User, now: datetime
) -> ProcessDraftRevision:
    """Save ``xml`` as the next revision of the draft.

    ``base_revision`` is the revision the editor started from: if someone saved since, the save
    is refused with :class:`Conflict` (nothing is overwritten; the editor keeps its work).
    """
    require_owner(actor)
    draft = get_draft(session, draft_id, for_update=True)
    if draft.closed_at is not None:
        raise Conflict(f"draft {draft.id} was already deployed or discarded; start a new one")
    if base_revision is not None and base_revision != draft.revision:
        raise StaleDraft(draft, base_revision)
    _loadable(xml, f"draft-{draft.id}.bpmn")
    return _add_revision(session, draft, xml, actor, now)


def _add_revision(
    session: Session, draft: ProcessDraft, xml: bytes, actor: User, now: datetime
) -> ProcessDraftRevision:
    draft.revision += 1
    draft.updated_at = now
    row = ProcessDraftRevision(
        draft_id=draft.id, revision=draft.revision, xml=xml, size=len(xml), saved_by_id=actor.id, saved_at=now
    )
    session.add(row)
    session.flush()
    return row


def get_draft(session: Session, draft_id: int, *, for_update: bool = False) -> ProcessDraft:
    query = select(ProcessDraft).where(ProcessDraft.id == draft_id)
    if for_update:
        query = query.with_for_update()
    draft = session.scalar(query)
    if draft is None:
        raise NotFound(f"no draft {draft_id}")
    return draft


def draft_revision(
    session: Session, draft: ProcessDraft, revision: int | None = None
) -> ProcessDraftRevision:
    number = draft.revision if revision is None else revision
    row = session.scalar(
        select(ProcessDraftRevision).where(
            ProcessDraftRevision.draft_id == draft.id, ProcessDraftRevision.revision == number
        )
    )
    if row is None:
        raise NotFound(f"draft {draft.id} has no revision {number}")
    return row


def draft_history(session: Session, draft: ProcessDraft) -> list[tuple[int, datetime, str | None, int]]:
    """(revision, saved at, saved by, size) of every save, newest first (without the XML)."""
    rows = session.execute(
        select(
            ProcessDraftRevision.revision,
            ProcessDraftRevision.saved_at,
            User.email,
            ProcessDraftRevision.size,
        )
        .outerjoin(User, User.id == ProcessDraftRevision.saved_by_id)
        .where(ProcessDraftRevision.draft_id == draft.id)
        .order_by(ProcessDraftRevision.revision.desc())
    ).all()
    return [(r, at, email, size) for r, at, email, size in rows]


def drafts(session: Session, process_id: str, *, include_closed: bool = False) -> list[ProcessDraft]:
    query = select(ProcessDraft).where(ProcessDraft.process_id == process_id)
    if not include_closed:
        query = query.where(ProcessDraft.closed_at.is_(None))
    return list(session.scalars(query.order_by(ProcessDraft.updated_at.desc())))


def discard_draft(session: Session, draft_id: int, *, actor: User, now: datetime) -> ProcessDraft:
    require_owner(actor)
    draft = get_draft(session, draft_id, for_update=True)
    if draft.closed_at is None:
        draft.closed_at = now
    return draft


def deploy(
    session: Session,
    settings: Settings,
    *,
    xml: bytes,
    filename: str,
    actor: User,
    now: datetime,
    note: str,
    draft_id: int | None = None,
) -> tuple[ProcessVersion, bool]:
    """Check and deploy ``xml`` (from the editor) as the next version; close its draft if any.

    Raises :class:`DefinitionError` with every problem (nothing stored) when it cannot run.
    """
    require_owner(actor)
    version, created = deploy_definition(
        session, settings, xml=xml, filename=filename, now=now, actor=actor, note=note.strip()
    )
    if draft_id is not None:
        draft = get_draft(session, draft_id, for_update=True)
        if draft.closed_at is None:
            draft.closed_at = now
            draft.deployed_as_id = version.id
    return version, created


def check(session: Session, settings: Settings, xml: bytes, filename: str) -> list[Problem]:
    """Every problem deploying ``xml`` would meet (loading problems included), [] when none."""
    try:
        return validate_definition(session, settings, xml, filename)
    except DefinitionError as exc:
        return exc.problems


@dataclass(frozen=True)
class UploadReport:
    """What the desk makes of a diagram drawn elsewhere."""

    filename: str
    process_id: str | None
    problems: list[Problem]
    draft: ProcessDraft | None  # stored only when it can run as it is


def upload(
    session: Session, settings: Settings, *, xml: bytes, filename: str, actor: User, now: datetime
) -> UploadReport:
    """Check a diagram from another modeler; store it as a draft only if it can run here.

    A file that cannot be loaded (malformed, DTD/entities, too large, not BPMN) or that has
    problems (unsupported elements, scripts the sandbox refuses...) is reported with every
    problem, element and line, and nothing is stored. Audited either way.
    """
    require_owner(actor)
    name = filename or "upload.bpmn"
    process_id: str | None = None
    try:
        process_id = _loadable(xml, name)
    except DefinitionError as exc:
        problems = exc.problems
    else:
        problems = check(session, settings, xml, name)
    draft = None
    if not problems:
        assert process_id is not None  # loaded above
        draft = _new_draft(session, process_id, xml, name, actor, now, None, f"uploaded {name}")
    audit.record(
        session,
        ticket_id=None,
        actor=audit.actor_of(actor),
        action="definition_uploaded" if draft else "definition_upload_refused",
        now=now,
        detail=f"{name}: " + (f"draft {draft.id}" if draft else f"{len(problems)} problem(s)"),
        data={"filename": name, "process_id": process_id, "problems": [str(p) for p in problems[:50]]},
    )
    return UploadReport(name, process_id, problems, draft)


# -- monitoring ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ElementLoad:
    element_id: str
    name: str
    waiting: int  # open tasks there now
    median_waiting_seconds: float | None  # how long the open ones have waited (median)
    median_spent_seconds: float | None  # completed there in the window: median time open

    def to_dict(self) -> dict[str, object]:
        return {
            "element_id": self.element_id,
            "name": self.name,
            "waiting": self.waiting,
            "median_waiting_seconds": self.median_waiting_seconds,
            "median_spent_seconds": self.median_spent_seconds,
        }


def monitor(
    session: Session, process_id: str, *, now: datetime, names: dict[str, str] | None = None
) -> list[ElementLoad]:
    """Per user task of ``process_id`` (every version): tickets waiting there and time spent.

    Two grouped queries over human_task joined to its instance's version; medians computed by
    the database on PostgreSQL (percentile_cont), in Python on SQLite.
    """
    since = now - timedelta(days=MONITOR_WINDOW_DAYS)
    names = names or {}
    pg = session.get_bind().dialect.name == "postgresql"
    of_process = (
        select(HumanTask.id)
        .join(WorkflowInstance, WorkflowInstance.id == HumanTask.instance_id)
        .join(ProcessVersion, ProcessVersion.id == WorkflowInstance.process_version_id)
        .where(ProcessVersion.process_id == process_id)
    )
    open_q = of_process.where(HumanTask.state == "open")
    done_q = of_process.where(HumanTask.state == "completed", HumanTask.completed_at >= since)
    waiting: dict[str, tuple[int, float | None]] = {}
    spent: dict[str, float | None] = {}
    if pg:
        age = func.extract("epoch", now - HumanTask.created_at)
        duration = func.extract("epoch", HumanTask.completed_at - HumanTask.created_at)
        for element, count, median in session.execute(
            open_q.with_only_columns(
                HumanTask.element_id, func.count(), func.percentile_cont(0.5).within_group(age)
            ).group_by(HumanTask.element_id)
        ):
            waiting[element] = (count, float(median) if median is not None else None)
        for element, median in session.execute(
            done_q.with_only_columns(
                HumanTask.element_id, func.percentile_cont(0.5).within_group(duration)
            ).group_by(HumanTask.element_id)
        ):
            spent[element] = float(median) if median is not None else None
    else:
        ages: dict[str, list[float]] = {}
        for element, created in session.execute(
            open_q.with_only_columns(HumanTask.element_id, HumanTask.created_at)
        ):
            ages.setdefault(element, []).append((now - created).total_seconds())
        waiting = {e: (len(a), statistics.median(a)) for e, a in ages.items()}
        durations: dict[str, list[float]] = {}
        for element, created, completed in session.execute(
            done_q.with_only_columns(HumanTask.element_id, HumanTask.created_at, HumanTask.completed_at)
        ):
            if completed is not None:  # the query asks for completed ones; the column is nullable
                durations.setdefault(element, []).append((completed - created).total_seconds())
        spent = {e: statistics.median(d) for e, d in durations.items()}
    return [
        ElementLoad(
            element, names.get(element) or element, *waiting.get(element, (0, None)), spent.get(element)
        )
        for element in sorted(set(waiting) | set(spent))
    ]


def waiting_at(session: Session, process_id: str, element_id: str, *, limit: int = 200) -> list[HumanTask]:
    """The open tasks at ``element_id`` of ``process_id``, longest waiting first."""
    return list(
        session.scalars(
            select(HumanTask)
            .join(WorkflowInstance, WorkflowInstance.id == HumanTask.instance_id)
            .join(ProcessVersion, ProcessVersion.id == WorkflowInstance.process_version_id)
            .where(
                ProcessVersion.process_id == process_id,
                HumanTask.element_id == element_id,
                HumanTask.state == "open",
            )
            .order_by(HumanTask.created_at)
            .limit(limit)
            .options(joinedload(HumanTask.ticket))
        )
    )
