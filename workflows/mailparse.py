"""Inbound mail bytes → ``ParsedMail``, without ever raising (notes/email.md §2.5).

The caller stores the raw bytes before calling ``parse``; everything here is best effort. Each step
is guarded on its own, so a defect in one header or part costs only that field, and every fallback
taken is written to ``ParsedMail.problems``.

Why the structure is parsed with ``policy.compat32`` and the headers decoded here, not with
``policy.default`` as the notes sketch: the default policy's header parser is superlinear in time
and memory (a 100 KB Subject: 1.2 s and 23 MB; 1 MB: 14 s; 1 MB of encoded words ran out of
memory; 16 KB of quotes in an address header: 3 s), and its parser consults Content-Type through it.
compat32 only splits strings, and reads unquoted ``boundary=----=_NextPart`` values whole, so the
notes' boundary re-quoting pass is not needed. Every pattern here runs in linear time.

HTML policy: ``html`` is cleaned by nh3 with an e-mail allowlist (no script, style, forms, frames,
``on*`` handlers, CSS ``url()``/``expression()``); links keep only http, https and mailto; images
keep only ``cid:`` sources (to be rewritten to attachment URLs) and inline ``data:image/...``.
Remote images are dropped: in mail they are tracking pixels as often as content. Render the result
in a sandboxed iframe with a CSP all the same.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import html
import io
import mimetypes
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.generator import BytesGenerator, Generator
from email.message import Message
from email.parser import BytesParser
from email.policy import Compat32
from email.utils import getaddresses, parsedate_to_datetime
from functools import partial

import nh3
from email_reply_parser import EmailMessage as _ReplyFragments
from inscriptis import get_text
from inscriptis.css_profiles import CSS_PROFILES
from inscriptis.model.config import ParserConfig

REPLY_MARKER = "##- Please type your reply above this line -##"
LOOP_HEADER = "X-Lanedesk-Loop"
MAX_DEPTH = 30
MAX_PARTS = 500
MAX_HEADER_CHARS = 100_000  # what Postfix's header_size_limit lets through
MAX_CONTENT_HEADER_CHARS = 8_000  # Content-* values are parsed by the structure walk itself
REPLY_SCAN_CHARS = 32_000  # email_reply_parser is quadratic in fragments; replies sit at the top
MAX_HTML_NESTING = 2_000  # deeper HTML is flattened to text (see _fill_html)
RECORD_CHARS = 998


@dataclass
class Attachment:
    filename: str  # safe: no path, controls or leading dot, <= 200 chars, unique within the mail
    content_type: str
    data: bytes
    size: int
    content_id: str | None = None  # bare Content-ID, what an HTML ``src="cid:..."`` refers to


@dataclass
class Bounce:
    """A delivery status notification (RFC 3464)."""

    recipients: list[str]  # Final- and Original-Recipient of every block not delivered/relayed/expanded
    original_message_id: str | None  # of the bounced message: thread the bounce by it
    permanent: bool  # some recipient has Action: failed or a 5.x.x Status


@dataclass
class ParsedMail:
    message_id: str  # "<id>"; "<gen-{sha256(raw)[:32]}@inbound.invalid>" when missing or unusable
    in_reply_to: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    subject: str = ""
    from_address: str | None = None
    from_name: str = ""
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    reply_to: list[str] = field(default_factory=list)
    date: datetime | None = None
    text: str = ""  # the text/plain body, else the HTML as text; LF line ends
    html: str | None = None  # sanitised (module docstring)
    reply_text: str = ""  # above REPLY_MARKER, without quotes and signature
    attachments: list[Attachment] = field(default_factory=list)  # every other leaf, message/* whole
    auto_generated: str | None = None  # the first rule that matched, e.g. "Precedence: bulk"
    bounce: Bounce | None = None
    loop_header: str | None = None  # the value of our LOOP_HEADER
    language: str | None = None  # primary subtag of Content-Language ("de" for "de-AT, en")
    headers: dict[str, str] = field(default_factory=dict)  # From..Message-ID, decoded, <= 998 chars
    problems: list[str] = field(default_factory=list)  # every fallback taken


class _CappedPolicy(Compat32):
    """compat32 that cuts over-long header values while parsing, so no later step sees them."""

    def header_source_parse(self, sourcelines: list[str]) -> tuple[str, str]:
        name, value = super().header_source_parse(sourcelines)
        limit = MAX_CONTENT_HEADER_CHARS if name.lower().startswith("content-") else MAX_HEADER_CHARS
        return name, value[:limit]


def _words(text: str) -> set[str]:
    return set(text.split())


_POLICY = _CappedPolicy()
_SERIALISE = {
    crlf: _POLICY.clone(max_line_length=0, linesep="\r\n" if crlf else "\n") for crlf in (False, True)
}
_MSGID = re.compile(r"<([^<>\s]+)>")
# the look-behind starts a match only where a run of address characters starts: linear, not quadratic
_ADDR = re.compile(r"(?<![^\s<>()\[\],;:\"@])[^\s<>()\[\],;:\"@]+@[^\s<>()\[\],;:\"@]+")
_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_NAME_PARAM = re.compile(r'(?i)(?:^|;)\s*(?:file)?name\s*=\s*("(?:[^"\\]|\\.)*"?|[^;]*)')
_CHARSETS = {  # names mail clients use that Python does not know, or knows too narrowly
    **dict.fromkeys(("x-unknown", "unknown", "unknown-8bit", "none", "x-user-defined"), "utf-8"),
    **dict.fromkeys(("ks_c_5601-1987", "ks_c_5601"), "cp949"),
    **dict.fromkeys(("gb2312", "gbk"), "gb18030"),
    **{"iso-8859-8-i": "iso-8859-8", "x-sjis": "shift_jis"},
}
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)[^>]*>?")
_SELF_CLOSING = _words(
    "area base br col embed hr img input link meta param source track wbr p li dt dd tr td th"
)
# text codecs that are no mail charset; punycode decoding is quadratic (40 KB: 1.4 s)
_NOT_CHARSETS = {"punycode", "idna", "unicode-escape", "raw-unicode-escape", "undefined"}
_EXTENSIONS = {"message/rfc822": ".eml", "message/delivery-status": ".txt", "text/rfc822-headers": ".txt"}
_PREFIX = re.compile(r"(?i)(?:re|fwd?|aw|wg|sv|vs|odp|antw|tr|rif)\s*(?:\[\d+\]|\(\d+\))?\s*[:\uff1a]\s*")
_LIST_TAG = re.compile(r"\[[^\]\d]*\]\s*")  # "[riak-users]" goes, "[LD-1042]" or "[RT #5]" stays
_XARS_TOKENS = {"all", "oof", "autoreply", "dr"}
_ROBOT_LOCAL = re.compile(r"(?i)^(?:mailer-daemon|postmaster|no-?reply|do-?not-?reply)\b")
_INVISIBLE = re.compile(r"[\x00-\x20\x7f-\x9f\u00ad\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")
_HTML_TAGS = _words(
    "a abbr b bdi bdo blockquote br caption center cite code col colgroup dd del div dl dt em font h1 h2 h3"
    " h4 h5 h6 hr i img ins kbd li mark ol p pre q s small span strike strong sub sup table tbody td tfoot"
    " th thead tr tt u ul wbr"
)
_HTML_DROP = _words(  # removed with their content
    "script style title template noscript textarea select object embed applet iframe frame frameset"
    " noembed noframes svg math xmp"
)
_CELL = {"colspan", "rowspan", "nowrap"}
_HTML_ATTRS = {
    "*": {"align", "valign", "dir", "lang", "title", "style", "width", "height", "bgcolor"},
    **{"a": {"href", "name"}, "img": {"src", "alt", "border"}, "font": {"color", "face", "size"}},
    **{"table": {"border", "cellpadding", "cellspacing"}, "td": _CELL, "th": _CELL},
    **{"ol": {"start", "type"}, "ul": {"type"}, "li": {"value"}, "col": {"span"}, "colgroup": {"span"}},
}
_STYLE_PROPS = _words(  # layout and typography only: no background images, positions or behaviours
    "color background-color font font-family font-size font-style font-weight text-align text-decoration"
    " text-indent text-transform line-height letter-spacing white-space vertical-align display"
    " list-style-type width height max-width min-width border border-collapse border-color border-style"
    " border-width border-spacing border-top border-right border-bottom border-left margin margin-top"
    " margin-right margin-bottom margin-left padding padding-top padding-right padding-bottom"
    " padding-left"
)
_BAD_STYLE = ("url(", "expression(", "javascript:", "@import", "behavior:", "-moz-binding")
_LINK_SCHEMES = ("http:", "https:", "mailto:")
_IMAGE_SCHEMES = ("cid:", "data:image/png", "data:image/gif", "data:image/jpeg", "data:image/webp")
_TEXT_CONFIG = ParserConfig(css=CSS_PROFILES["strict"], display_links=True)


def parse(raw: bytes, *, max_attachment_bytes: int = 25 * 1024 * 1024) -> ParsedMail:
    """Parse raw RFC 5322 bytes. Never raises: whatever could not be read is noted in ``problems``.

    A missing Message-ID becomes ``<gen-{sha256(raw)[:32]}@inbound.invalid>``, so a redelivery of
    the same bytes dedupes. Attachments larger than ``max_attachment_bytes`` are left out (the
    caller keeps them in the raw store).
    """
    out = ParsedMail(message_id=f"<gen-{hashlib.sha256(raw).hexdigest()[:32]}@inbound.invalid>")
    try:
        msg = _parse_tree(raw, out.problems)
    except Exception as exc:  # _parse_tree has its own fallbacks; this is the last line of defence
        out.problems.append(f"parse failed: {type(exc).__name__}")
        out.text = raw.decode("utf-8", "replace")
        return out
    crlf = b"\r\n" in raw[:4096]
    _guarded(out, "headers", lambda: _fill_headers(msg, out))
    _guarded(out, "auto-generated check", lambda: setattr(out, "auto_generated", _auto_reason(msg)))
    _guarded(out, "parts", lambda: _fill_parts(msg, out, max_attachment_bytes, crlf))
    _guarded(out, "bounce", lambda: setattr(out, "bounce", _bounce(msg)))
    _guarded(out, "reply", lambda: setattr(out, "reply_text", _reply(out.text, out.problems)))
    return out


def normalise_message_id(value: str) -> str | None:
    """The first ``<id>`` in ``value`` (or its single bare token), as ``"<id>"``; None if there is none."""
    found = _MSGID.search(value)
    if found:
        core = found.group(1)
    else:
        tokens = [t.strip("<>") for t in value.split()]
        core = next((t for t in tokens if "@" in t), tokens[0] if len(tokens) == 1 else "")
    core = "".join(ch for ch in core if ch.isprintable() and ch not in "<>")  # "a<b" is no id
    return f"<{core}>" if core and len(core) <= RECORD_CHARS - 2 else None


def strip_subject_prefixes(subject: str) -> str:
    """Drop leading reply/forward prefixes (Re:, AW:, Fwd[2]:, SV :...) and digit-free list tags.

    Bracketed tags with a digit in them, such as a ticket tag ``[LD-1042]``, are kept.
    """
    text = " ".join(subject.split())
    start = 0
    while found := _PREFIX.match(text, start) or _LIST_TAG.match(text, start):
        start = found.end()
    return text[start:]


def extract_reply(text: str, problems: list[str] | None = None) -> str:
    """The new text of a reply: cut at ``REPLY_MARKER``, then quotes and signature removed by
    email_reply_parser (in the first REPLY_SCAN_CHARS). The whole text if nothing would be left
    without a marker; empty if the marker has nothing above it."""
    return _reply(text, problems if problems is not None else [])


def sanitise_html(markup: str) -> str:
    """HTML safe to show in a sandboxed frame (the allowlist in the module docstring)."""
    return nh3.clean(
        markup,
        tags=_HTML_TAGS,
        clean_content_tags=_HTML_DROP,
        attributes=_HTML_ATTRS,
        attribute_filter=_attribute_filter,
        strip_comments=True,
        link_rel="noopener noreferrer nofollow",
        url_schemes={"http", "https", "mailto", "cid", "data"},
        filter_style_properties=_STYLE_PROPS,
    ).replace("\x00", "")


# --- structure -----------------------------------------------------------------------------------


def _guarded(out: ParsedMail, step: str, action: Callable[[], object]) -> None:
    try:
        action()
    except Exception as exc:  # parse() must never raise; the raw bytes are stored already
        out.problems.append(f"{step} failed: {type(exc).__name__}: {str(exc)[:200]}")


def _parse_tree(raw: bytes, problems: list[str]) -> Message:
    try:
        msg = BytesParser(policy=_POLICY).parsebytes(raw)
    except Exception as exc:  # RecursionError on very deep nesting, mostly
        problems.append(f"parse failed ({type(exc).__name__}); body kept as text")
        try:
            msg = BytesParser(policy=_POLICY).parsebytes(raw, headersonly=True)
        except Exception:
            msg = Message(policy=_POLICY)
            msg.set_payload(raw.decode("utf-8", "replace"))
    for name, value in msg.raw_items():
        limit = MAX_CONTENT_HEADER_CHARS if name.lower().startswith("content-") else MAX_HEADER_CHARS
        if len(str(value)) >= limit:
            problems.append(f"header {name} truncated to {limit} chars")
    return msg


def _walk(msg: Message, problems: list[str]) -> list[Message]:
    """Leaves in document order (message/* parts are leaves), at most MAX_DEPTH deep and MAX_PARTS."""
    leaves: list[Message] = []
    defects: list[str] = []
    stack: list[tuple[Message, int]] = [(msg, 0)]
    seen = 0
    while stack:
        part, depth = stack.pop()
        seen += 1
        if seen > MAX_PARTS:
            problems.append(f"part cap: parts after the first {MAX_PARTS} ignored")
            break
        defects += [type(d).__name__ for d in part.defects if type(d).__name__ not in defects]
        payload = _parts(part)
        if part.get_content_maintype() != "multipart" or not payload:
            leaves.append(part)
        elif depth >= MAX_DEPTH:
            if f"depth cap: parts below depth {MAX_DEPTH} ignored" not in problems:
                problems.append(f"depth cap: parts below depth {MAX_DEPTH} ignored")
        else:
            stack.extend((child, depth + 1) for child in reversed(payload))
    problems.extend(f"MIME defect: {name}" for name in defects)
    return leaves


# --- headers -------------------------------------------------------------------------------------


def _raw_values(msg: Message, name: str) -> list[str]:
    """Every value of header ``name``, unfolded, with raw 8-bit bytes decoded."""
    wanted = name.lower()
    return [_fix_8bit("".join(str(v).splitlines())) for k, v in msg.raw_items() if k.lower() == wanted]


def _first(msg: Message, name: str) -> str | None:
    values = _raw_values(msg, name)
    return values[0].strip() if values else None


def _fix_8bit(value: str) -> str:
    """Raw header bytes arrive as surrogate escapes: read them as UTF-8 (RFC 6532), else as cp1252."""
    if value.isascii():
        return value.replace("\x00", "")
    try:
        data = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        data = value.encode("utf-8", "replace")
    return _utf8_or_cp1252(data)


def _cp1252_bytes(error: UnicodeError) -> tuple[str, int]:
    """Codec error handler: bytes that are not UTF-8 are read as cp1252, one sequence at a time."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return error.object[error.start : error.end].decode("cp1252", "replace"), error.end


codecs.register_error("lanedesk-cp1252", _cp1252_bytes)


def _utf8_or_cp1252(data: bytes) -> str:
    """Undeclared 8-bit text: UTF-8 where it is valid, cp1252 (a latin-1 superset) elsewhere."""
    return data.decode("utf-8", "lanedesk-cp1252").replace("\x00", "")


def _decode_words(value: str, problems: list[str] | None = None) -> str:
    """RFC 2047 encoded words, adjacent words of one charset joined first (split multibyte chars)."""
    pieces: list[str] = []
    run: tuple[str, bytes] | None = None
    pos = 0
    for found in _WORD.finditer(value):
        gap = value[pos : found.start()]
        charset = found.group(1).split("*")[0].lower()
        data = _word_bytes(found.group(2).lower(), found.group(3))
        if run and not gap.strip() and run[0] == charset:
            run = (charset, run[1] + data)
        else:
            if run:
                pieces.append(_decode_bytes(run[1], run[0], problems))
            if not (run and not gap.strip()):
                pieces.append(gap)
            run = (charset, data)
        pos = found.end()
    if run:
        pieces.append(_decode_bytes(run[1], run[0], problems))
    pieces.append(value[pos:])
    return "".join(pieces)


def _word_bytes(encoding: str, text: str) -> bytes:
    try:
        if encoding == "b":
            return base64.b64decode(text + "=" * (-len(text) % 4))
        return binascii.a2b_qp(text.encode("ascii", "replace"), header=True)
    except (binascii.Error, ValueError):
        return text.encode("ascii", "replace")


def _decode_bytes(data: bytes, charset: str | None, problems: list[str] | None = None) -> str:
    declared = (charset or "").strip().strip("\"'").lower()
    name = _CHARSETS.get(declared, declared)
    if name not in ("", "us-ascii", "ascii"):
        try:
            codec = codecs.lookup(name).name
            if codec in _NOT_CHARSETS:
                raise LookupError(codec)
            return data.decode(codec, "replace").replace("\x00", "")
        except (LookupError, ValueError, TypeError):
            if problems is not None:
                problems.append(f"unknown charset {declared[:40]} decoded as utf-8")
    return _utf8_or_cp1252(data)


def _text_header(msg: Message, name: str) -> str:
    value = _first(msg, name)
    return " ".join(_decode_words(value).split()) if value else ""


def _addresses(msg: Message, name: str, problems: list[str]) -> list[tuple[str, str]]:
    """(display name, lower-cased addr-spec) pairs; garbled entries recovered by pattern.

    compat32's getaddresses is linear; policy.default's address parser is quadratic on quotes and
    commas (3 s for 16 KB) and recurses on nested comments.
    """
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for value in _raw_values(msg, name):
        try:
            found = [(" ".join(_decode_words(n).split()), a.lower()) for n, a in getaddresses([value])]
        except RecursionError:
            problems.append(f"{name} read by pattern only")
            found = []
        good = [(n, a) for n, a in found if _ADDR.fullmatch(a)]
        if len(good) < len(found) or not found:
            good += [("", a.lower()) for a in _ADDR.findall(value)]
        for display, address in good:
            if address not in seen:
                seen.add(address)
                pairs.append((display, address))
    return pairs


def _fill_headers(msg: Message, out: ParsedMail) -> None:
    for name in ("From", "To", "Cc", "Subject", "Date", "Message-ID"):
        value = _first(msg, name)
        if value is not None:
            out.headers[name] = _decode_words(value[: RECORD_CHARS * 4])[:RECORD_CHARS]
    out.subject = _text_header(msg, "Subject")
    message_id = normalise_message_id(_first(msg, "Message-ID") or "")
    if message_id:
        out.message_id = message_id
    else:
        out.problems.append("generated Message-ID")
    out.in_reply_to = _id_list(" ".join(_raw_values(msg, "In-Reply-To")))
    out.references = _id_list(" ".join(_raw_values(msg, "References")))
    senders = _addresses(msg, "From", out.problems)
    if senders:
        out.from_name, out.from_address = senders[0]
    out.to = [a for _, a in _addresses(msg, "To", out.problems)]
    out.cc = [a for _, a in _addresses(msg, "Cc", out.problems)]
    out.reply_to = [a for _, a in _addresses(msg, "Reply-To", out.problems)]
    out.loop_header = _first(msg, LOOP_HEADER)
    tag = re.match(r"\s*([A-Za-z]{2,3})\b", _first(msg, "Content-Language") or "")
    out.language = tag.group(1).lower() if tag else None
    out.date = _date(_first(msg, "Date"), out.problems)


def _id_list(value: str) -> list[str]:
    ids = [f"<{core}>" for core in _MSGID.findall(value)]
    if not ids:
        ids = [f"<{t.strip('<>')}>" for t in value.split() if "@" in t]
    return list(dict.fromkeys(i for i in ids if len(i) <= RECORD_CHARS))


def _date(value: str | None, problems: list[str]) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except Exception:
        problems.append("unparseable Date")
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# --- auto-generated mail and bounces (notes §1.4, "Proposed" column) ---------------------------


def _auto_reason(msg: Message) -> str | None:
    if _first(msg, LOOP_HEADER) is not None:
        return LOOP_HEADER
    if msg.get_content_type() == "multipart/report":
        return "multipart/report"
    submitted = re.split(r"[;(\s]", _first(msg, "Auto-Submitted") or "no", maxsplit=1)[0].lower()
    if submitted not in ("no", ""):
        return f"Auto-Submitted: {submitted}"
    precedence = (_first(msg, "Precedence") or "").lower()
    if precedence in ("bulk", "junk", "list", "auto_reply"):
        return f"Precedence: {precedence}"
    suppress = _first(msg, "X-Auto-Response-Suppress") or ""
    if _XARS_TOKENS & {t.strip().lower() for t in suppress.split(",")}:
        return f"X-Auto-Response-Suppress: {suppress}"
    for name in ("X-Autoreply", "X-Autorespond", "List-Id", "List-Unsubscribe", "List-Post"):
        if _first(msg, name) is not None:
            return name
    if "<>" in "".join((_first(msg, "Return-Path") or "").split()):
        return "Return-Path: <>"
    for name in ("From", "Sender"):
        for _, address in _addresses(msg, name, []):
            if _ROBOT_LOCAL.match(address):
                return f"sender {address}"
    return None


def _bounce(msg: Message) -> Bounce | None:
    """A delivery status notification (RFC 3464): who failed, and which message of ours it was."""
    if msg.get_content_type() != "multipart/report":
        return None
    leaves = _walk(msg, [])
    status = [p for p in leaves if p.get_content_type() == "message/delivery-status"]
    if not status and str(msg.get_param("report-type", "")).lower() != "delivery-status":
        return None
    recipients: list[str] = []
    permanent = False
    for part in status:
        for block in _dsn_blocks(_decode_bytes(_leaf_bytes(part, False), "utf-8")):
            action = (block.get("action", "").split() or [""])[0].lower()
            if action in ("delivered", "relayed", "expanded"):
                continue
            permanent |= action == "failed" or block.get("status", "").strip().startswith("5")
            for key in ("final-recipient", "original-recipient"):
                address = block.get(key, "").split(";")[-1].strip().strip("<>").lower()
                if "@" in address and address not in recipients:
                    recipients.append(address)
    return Bounce(recipients, _original_id(leaves), permanent)


def _dsn_blocks(text: str) -> list[dict[str, str]]:
    blocks = []
    for chunk in re.split(r"\r?\n[ \t]*\r?\n", text):
        fields: dict[str, str] = {}
        for line in re.sub(r"\r?\n[ \t]+", " ", chunk).splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip():
                fields.setdefault(name.strip().lower(), value.strip())
        if "final-recipient" in fields or "original-recipient" in fields:
            blocks.append(fields)
    return blocks


def _original_id(leaves: list[Message]) -> str | None:
    for part in leaves:
        kind = part.get_content_type()
        inner = _inner_message(part)
        if inner is None and kind in ("text/rfc822-headers", "message/rfc822-headers", "message/rfc822"):
            inner = BytesParser(policy=_POLICY).parsebytes(_leaf_bytes(part, False), headersonly=True)
        if inner is None:
            continue
        found = normalise_message_id(_first(inner, "Message-ID") or "")
        if found:
            return found
    return None


# --- bodies and attachments ----------------------------------------------------------------------


def _fill_parts(msg: Message, out: ParsedMail, max_bytes: int, crlf: bool) -> None:
    plain_part: Message | None = None
    html_part: Message | None = None
    others: list[Message] = []
    for leaf in _walk(msg, out.problems):
        kind = _body_kind(leaf, out.problems)
        if kind == "plain" and plain_part is None:
            plain_part = leaf
        elif kind == "html" and html_part is None:
            html_part = leaf
        else:
            others.append(leaf)
    if plain_part is not None:
        if plain_part.get_content_maintype() == "multipart":
            out.problems.append("multipart without parts kept as text")
        _guarded(out, "text body", partial(_fill_text, plain_part, out))
    if html_part is not None:
        _guarded(out, "HTML body", partial(_fill_html, html_part, out))
    taken: set[str] = set()
    for index, part in enumerate(others, start=1):
        attach = partial(_add_attachment, out, part, index, taken, crlf, max_bytes)
        _guarded(out, f"attachment {index}", attach)


def _fill_text(part: Message, out: ParsedMail) -> None:
    out.text = _part_text(part, out.problems)


def _fill_html(part: Message, out: ParsedMail) -> None:
    source = _part_text(part, out.problems)
    depth = _nesting(source)
    if depth > MAX_HTML_NESTING:  # the HTML5 tree builders are quadratic in depth: 100,000 divs took 59 s
        out.problems.append(f"HTML nested {depth} deep: kept as plain text")
        flat = " ".join(html.unescape(_TAG.sub(" ", source)).split())
        out.html = f"<pre>{html.escape(flat)}</pre>"
        out.text = out.text if out.text.strip() else flat
        return
    out.html = sanitise_html(source)
    if not out.text.strip():
        out.text = _html_to_text(source, out.problems)


def _nesting(source: str) -> int:
    """How deep the elements would nest, counting only tags that an HTML parser does not close itself."""
    depth = deepest = 0
    for tag in _TAG.finditer(source):
        if tag.group(2).lower() not in _SELF_CLOSING:
            depth = max(depth - 1, 0) if tag.group(1) else depth + 1
            deepest = max(deepest, depth)
    return deepest


def _add_attachment(
    out: ParsedMail, part: Message, index: int, taken: set[str], crlf: bool, limit: int
) -> None:
    attachment = _attachment(part, index, taken, crlf)
    if attachment.size > limit:
        out.problems.append(
            f"attachment {attachment.filename} ({attachment.size} bytes) over the limit, dropped"
        )
    else:
        out.attachments.append(attachment)


def _body_kind(part: Message, problems: list[str]) -> str | None:
    try:
        if part.get_content_disposition() == "attachment" or _filename(part):
            return None
    except Exception as exc:
        problems.append(f"unreadable Content-Disposition ({type(exc).__name__})")
        return None
    kind = part.get_content_type()
    if kind == "text/plain" or part.get_content_maintype() == "multipart":
        return "plain"
    return "html" if kind == "text/html" else None


def _parts(part: Message) -> list[Message]:
    """Sub-parts, without get_payload()'s charset decoding of leaves (it raises on odd charsets)."""
    payload = part.get_payload() if part.is_multipart() else None
    return [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []


def _inner_message(part: Message) -> Message | None:
    """The message carried by a message/rfc822 part."""
    inner = _parts(part) if part.get_content_type() == "message/rfc822" else []
    return inner[0] if inner else None


def _leaf_bytes(part: Message, crlf: bool) -> bytes:
    if part.is_multipart():  # message/rfc822, message/delivery-status: re-serialise
        return b"\n".join(_serialise(inner, crlf) for inner in _parts(part))
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _serialise(msg: Message, crlf: bool) -> bytes:
    """The message as bytes. The generators reject some damaged 8-bit parts and header values; the
    last resort is the headers and leaf bodies without MIME boundaries, which still shows the text."""
    try:
        binary = io.BytesIO()
        BytesGenerator(binary, mangle_from_=False, policy=_SERIALISE[crlf]).flatten(msg)
        return binary.getvalue()
    except Exception:
        try:
            text = io.StringIO()
            Generator(text, mangle_from_=False, policy=_SERIALISE[crlf]).flatten(msg)
            return text.getvalue().encode("utf-8", "surrogateescape")
        except Exception:
            return _rough_bytes(msg, "\r\n" if crlf else "\n")


def _rough_bytes(msg: Message, linesep: str) -> bytes:
    head = "".join(f"{name}: {' '.join(str(value).split())}{linesep}" for name, value in msg.raw_items())
    inner = _parts(msg)
    payload = b"" if inner else msg.get_payload(decode=True)
    body = b"".join(_rough_bytes(p, linesep) for p in inner) if inner else payload
    body = body if isinstance(body, bytes) else b""
    return head.encode("utf-8", "surrogateescape") + linesep.encode() + body + linesep.encode()


def _part_text(part: Message, problems: list[str]) -> str:
    text = _decode_bytes(_leaf_bytes(part, False), part.get_content_charset(), problems)
    return text.replace("\r\n", "\n")


def _html_to_text(markup: str, problems: list[str]) -> str:
    try:
        return get_text(markup, _TEXT_CONFIG).strip()
    except Exception as exc:
        problems.append(f"HTML to text failed ({type(exc).__name__}); tags stripped")
        return nh3.clean(markup, tags=set(), clean_content_tags={"script", "style"}).strip()


def _attachment(part: Message, index: int, taken: set[str], crlf: bool) -> Attachment:
    kind = part.get_content_type()
    data = _leaf_bytes(part, crlf)
    name = _filename(part)
    inner = _inner_message(part)
    if not name and inner is not None:
        subject = _text_header(inner, "Subject")
        name = f"{subject}.eml" if subject else None
    content_id = normalise_message_id(_first(part, "Content-ID") or "")
    filename = _safe_filename(name or "", kind, index, taken)
    return Attachment(filename, kind, data, len(data), content_id[1:-1] if content_id else None)


def _filename(part: Message) -> str | None:
    """get_filename(), or the raw parameter when that is missing, mangled or a truncated prefix."""
    try:
        got = part.get_filename()
    except Exception:
        got = None
    got = _decode_words(got) if isinstance(got, str) else None
    raw = None
    for header in ("Content-Disposition", "Content-Type"):
        found = _NAME_PARAM.search(_first(part, header) or "")
        if found:
            value = found.group(1).strip()
            raw = _decode_words(re.sub(r"\\(.)", r"\1", value[1:].rstrip('"')) if value[:1] == '"' else value)
            break
    if not got or "\ufffd" in got or (raw and raw != got and raw.startswith(got)):
        return raw or got
    return got


def _safe_filename(name: str, kind: str, index: int, taken: set[str]) -> str:
    """No path, controls, bidi overrides, reserved device names or leading dots; at most 200 chars."""
    name = re.split(r"[/\\]", unicodedata.normalize("NFC", name))[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = re.sub(r'[<>:"|?*]', "_", name).strip(" .")
    if re.fullmatch(r"(?i)(con|prn|aux|nul|com\d|lpt\d)(\..*)?", name):
        name = f"_{name}"
    stem, dot, ext = name.rpartition(".")
    if len(name) > 200:
        name = f"{stem[: 199 - len(ext[:20])]}.{ext[:20]}" if dot else name[:200]
    if not name:
        name = f"attachment-{index}{_EXTENSIONS.get(kind) or mimetypes.guess_extension(kind) or '.bin'}"
    stem, dot, ext = name.rpartition(".") if "." in name else (name, "", "")
    unique, copy = name, 1
    while unique.lower() in taken:
        copy += 1
        unique = f"{stem} ({copy}){dot}{ext}"
    taken.add(unique.lower())
    return unique


def _attribute_filter(tag: str, attribute: str, value: str) -> str | None:
    """Drops style with url()/expression() and any href/src outside the allowed schemes."""
    squashed = _INVISIBLE.sub("", value).lower()
    if attribute == "style":
        return None if any(bad in squashed.replace("\\", "") for bad in _BAD_STYLE) else value
    if attribute in ("href", "src"):
        return value if squashed.startswith(_IMAGE_SCHEMES if tag == "img" else _LINK_SCHEMES) else None
    return value


# --- reply text ----------------------------------------------------------------------------------


class _QuoteAwareFragments(_ReplyFragments):
    """email_reply_parser with a linear quote-header pattern.

    The upstream pattern ``(?!On.*On\\s.+?wrote:)(On\\s(.+?)wrote:)`` with DOTALL backtracks
    cubically: 10 KB of lines starting with "On " and no "wrote:" took 24 s. This one finds the same
    multi-line "On <date>, <name>\\n<address> wrote:" headers but never crosses a blank line, another
    "On " or 400 characters.
    """

    MULTI_QUOTE_HDR_REGEX = re.compile(r"(On\s(?:(?!On\s)[^\n]|\n(?![ \t]*\n)){0,400}?wrote:)")
    MULTI_QUOTE_HDR_REGEX_MULTILINE = MULTI_QUOTE_HDR_REGEX


def _reply(text: str, problems: list[str]) -> str:
    marker = text.find(REPLY_MARKER)
    if marker >= 0:
        head = text[:marker]
        line_start = head.rfind("\n") + 1
        if not head[line_start:].strip(" \t>"):  # a quoted marker line: drop its "> " prefix too
            head = head[:line_start]
        return _visible(head, problems)
    visible = _visible(text, problems)
    return visible if visible else text.strip()


def _visible(text: str, problems: list[str]) -> str:
    head = text[:REPLY_SCAN_CHARS]
    try:
        visible: str = _QuoteAwareFragments(head).read().reply.strip()
    except Exception as exc:
        problems.append(f"reply parsing failed ({type(exc).__name__})")
        return text.strip()
    if len(text) > REPLY_SCAN_CHARS:
        problems.append(f"reply searched in the first {REPLY_SCAN_CHARS} chars only")
        if visible == head.strip():  # nothing quoted up there: the whole text is new
            return text.strip()
    return visible
