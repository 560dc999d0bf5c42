"""Mail templates: bundled per language, overridable by administrators without a deploy.

A template is a subject, a plain-text body and an HTML body, written in Jinja. The bundled
ones live in ``workflows/mail_templates/<language>.yaml``; an administrator's version of one
(``lanedesk template set``, later the web UI) is a ``mail_template`` row and wins over the
bundled file. Templates are rendered in Jinja's immutable sandbox with strict undefined
variables: a template can read the context it is given and nothing else, and a typo is refused
when the template is saved, not when a customer's mail is due.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from sqlalchemy import select
from sqlalchemy.orm import Session

from .errors import InvalidInput
from .mailparse import sanitise_html
from .models import MailTemplate, User

#: Mail to customers, by template: the RFC 3834 Auto-Submitted value it carries (None: a person
#: wrote it). The acknowledgement answers the customer's mail; the others are generated.
CUSTOMER_TEMPLATES: dict[str, str | None] = {
    "acknowledgement": "auto-replied",
    "agent_reply": None,
    "reminder": "auto-generated",
    "auto_closed": "auto-generated",
    "resolved": "auto-generated",
}
#: Notifications to agents; all generated.
AGENT_TEMPLATES: dict[str, str | None] = {
    "first_response_due": "auto-generated",
    "sla_warning": "auto-generated",
    "escalated": "auto-generated",
    "assigned": "auto-generated",
}
TEMPLATES = {**CUSTOMER_TEMPLATES, **AGENT_TEMPLATES}
PARTS = ("subject", "text", "html")
BUNDLED_DIR = Path(__file__).with_name("mail_templates")
MAX_OUTPUT_CHARS = 200_000  # a rendered body longer than this is a template bug, not a mail
MAX_SUBJECT_CHARS = 250


@dataclass(frozen=True)
class Source:
    name: str
    language: str
    subject: str
    text: str
    html: str
    origin: str  # bundled | custom


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str  # sanitised fragment (the caller wraps it in a document)
    language: str


class TemplateProblem(InvalidInput):
    """A template that does not compile or render: which part, which line, what."""


# -- sources -----------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def bundled() -> dict[str, dict[str, dict[str, str]]]:
    """``{language: {template: {subject, text, html}}}`` from the bundled YAML files."""
    found: dict[str, dict[str, dict[str, str]]] = {}
    for path in sorted(BUNDLED_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        found[path.stem] = {name: {part: str(body[part]) for part in PARTS} for name, body in data.items()}
    return found


def languages() -> list[str]:
    return sorted(bundled())


def bundled_source(name: str, language: str, default_language: str = "en") -> Source:
    """The bundled template in ``language``, else in ``default_language``, else in English."""
    lang = next(lang for lang in (language, default_language, "en") if name in bundled().get(lang, {}))
    parts = bundled()[lang][name]
    return Source(name, lang, parts["subject"], parts["text"], parts["html"], "bundled")


def source(session: Session, name: str, language: str, default_language: str) -> Source:
    """The template to use: the custom one in ``language``, the bundled one in ``language``, then
    the same two in ``default_language``, then bundled English."""
    _known(name)
    candidates = [language, default_language, "en"]
    rows = {
        row.language: row
        for row in session.scalars(
            select(MailTemplate).where(MailTemplate.name == name, MailTemplate.language.in_(candidates))
        )
    }
    for lang in candidates:
        if lang in rows:
            row = rows[lang]
            return Source(name, lang, row.subject, row.text, row.html, "custom")
        if name in bundled().get(lang, {}):
            return bundled_source(name, lang)
    raise LookupError(f"no template {name!r} in any language")  # the bundled files cover every name


def listing(session: Session) -> list[Source]:
    """Every template in every language, custom versions in place of bundled ones."""
    custom = {(row.name, row.language): row for row in session.scalars(select(MailTemplate))}
    out = []
    for lang in sorted({*languages(), *(lang for _, lang in custom)}):
        for name in TEMPLATES:
            if (name, lang) in custom:
                row = custom[(name, lang)]
                out.append(Source(name, lang, row.subject, row.text, row.html, "custom"))
            elif name in bundled().get(lang, {}):
                out.append(bundled_source(name, lang))
    return out


def save(
    session: Session,
    *,
    name: str,
    language: str,
    subject: str,
    text: str,
    html: str,
    by: User | None,
    now: datetime,
) -> MailTemplate:
    """Store an administrator's version; refused (nothing stored) unless it renders."""
    _known(name)
    if by is not None and by.role != "admin":
        raise InvalidInput(f"{by.email} is not an admin; only admins edit mail templates")
    if not language or not language.replace("-", "").isalnum() or len(language) > 16:
        raise InvalidInput(f"language must be a tag such as en or de-at; got {language!r}")
    candidate = Source(name, language.lower(), subject, text, html, "custom")
    render(candidate, sample_context(name))  # raises TemplateProblem
    row = session.scalar(
        select(MailTemplate).where(MailTemplate.name == name, MailTemplate.language == candidate.language)
    )
    if row is None:
        row = MailTemplate(name=name, language=candidate.language)
        session.add(row)
    row.subject, row.text, row.html = subject, text, html
    row.updated_at, row.updated_by_id = now, by.id if by is not None else None
    return row


def reset(session: Session, name: str, language: str) -> bool:
    """Drop the custom version (the bundled one applies again); False if there was none."""
    _known(name)
    row = session.scalar(
        select(MailTemplate).where(MailTemplate.name == name, MailTemplate.language == language.lower())
    )
    if row is None:
        return False
    session.delete(row)
    return True


def _known(name: str) -> None:
    if name not in TEMPLATES:
        raise InvalidInput(f"no mail template {name!r}; templates: {', '.join(TEMPLATES)}")


# -- rendering ---------------------------------------------------------------------------------
_TEXT_ENV = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
)
_HTML_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=True)


def _quote(text: object) -> str:
    """Mail quoting: every line of ``text`` prefixed with "> " (the `quote` filter)."""
    return "\n".join(f"> {line}" if line else ">" for line in str(text).splitlines())


for _env in (_TEXT_ENV, _HTML_ENV):
    _env.filters["quote"] = _quote


@lru_cache(maxsize=256)
def _compiled(kind: str, body: str) -> Any:
    return (_HTML_ENV if kind == "html" else _TEXT_ENV).from_string(body)


def render(template: Source, context: dict[str, Any]) -> Rendered:
    """Render all three parts; raise TemplateProblem naming the part and line at fault."""
    out: dict[str, str] = {}
    for part in PARTS:
        body = getattr(template, part)
        try:
            result = _compiled(part, body).render(context)
        except TemplateSyntaxError as exc:
            raise TemplateProblem(
                f"{template.name} ({template.language}) {part}: line {exc.lineno}: {exc.message}"
            ) from None
        except TemplateError as exc:  # undefined variables, sandbox refusals
            raise TemplateProblem(
                f"{template.name} ({template.language}) {part}: {_line_of(exc)}{exc}"
            ) from None
        except Exception as exc:  # the template's own expressions: 1/0, 1 + "a", range(10**6)
            raise TemplateProblem(
                f"{template.name} ({template.language}) {part}: {_line_of(exc)}{type(exc).__name__}: {exc}"
            ) from None
        if len(result) > MAX_OUTPUT_CHARS:
            raise TemplateProblem(
                f"{template.name} ({template.language}) {part}: renders {len(result)} characters "
                f"(at most {MAX_OUTPUT_CHARS})"
            )
        out[part] = result
    subject = " ".join(out["subject"].split())
    if not subject or len(subject) > MAX_SUBJECT_CHARS:
        raise TemplateProblem(
            f"{template.name} ({template.language}) subject: must render to 1-{MAX_SUBJECT_CHARS} "
            f"characters on one line; got {len(subject)}"
        )
    return Rendered(subject, out["text"].strip() + "\n", sanitise_html(out["html"]), template.language)


def _line_of(exc: BaseException) -> str:
    """``line N: `` for the template line a render-time error came from ('' when unknown)."""
    frames = traceback.walk_tb(exc.__traceback__)
    lines = [n for frame, n in frames if frame.f_code.co_filename == "<template>"]
    return f"line {lines[-1]}: " if lines else ""


def sample_context(name: str) -> dict[str, Any]:
    """A context with every variable any template may use (for checking a template on save)."""
    return {
        "desk": {"name": "Support", "address": "support@desk.example", "url": "https://desk.example"},
        "ticket": {
            "reference": "LD-1042",
            "subject": "Printer on floor 3 is jammed",
            "status": "open",
            "priority": "P2",
            "group": "Tier 1",
            "url": "https://desk.example/tickets/LD-1042",
        },
        "customer": {"name": "Ada Lovelace", "email": "ada@example.com"},
        "recipient": {"name": "Ada Lovelace", "email": "ada@example.com"},
        "agent": {"name": "Grace Hopper", "email": "grace@desk.example"},
        "body": "Could you send us the printer's serial number?",
        "excerpt": [
            {"who": "Ada Lovelace", "when": "2026-11-23 09:12 UTC", "kind": "inbound", "text": "It jams."},
        ],
        "survey_url": "https://desk.example/survey/LD-1042/abc123",
        "reason": "resolution target reached",
        "name": name,
    }
