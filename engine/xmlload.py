"""Hardened XML loading for diagrams: a BPMN file is code, so parse it as untrusted input."""

from __future__ import annotations

import re

from lxml import etree

from .errors import DefinitionError, Problem

#: Largest diagram we accept. The bundled lifecycle is ~60 KB; 5 MB leaves room for big
#: collaborations while refusing uploads that would only exhaust memory.
MAX_DIAGRAM_BYTES = 5 * 1024 * 1024

_DOCTYPE = re.compile(rb"<!DOCTYPE|<!ENTITY", re.IGNORECASE)
_NO_DOCTYPE = "DOCTYPE and entity declarations are not allowed in diagrams"


def _safe_parser() -> etree.XMLParser:
    # No DTD, no entity expansion, no network; lxml's own size limits stay on (huge_tree=False).
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


def load_xml(data: bytes, filename: str, *, max_bytes: int = MAX_DIAGRAM_BYTES) -> etree._Element:
    """Parse ``data`` as a diagram document, refusing what a hostile upload could use.

    Raises :class:`DefinitionError` (never an lxml exception) for: documents over
    ``max_bytes``, any DOCTYPE or entity declaration (in any encoding), and malformed XML (with
    its line).
    """
    if len(data) > max_bytes:
        raise DefinitionError(
            [Problem(filename, 1, "", f"diagram is {len(data):,} bytes; the limit is {max_bytes:,}")]
        )
    match = _DOCTYPE.search(data)
    if match:
        line = data.count(b"\n", 0, match.start()) + 1
        raise DefinitionError([Problem(filename, line, "", _NO_DOCTYPE)])
    try:
        root = etree.fromstring(data, parser=_safe_parser())
    except etree.XMLSyntaxError as exc:
        line = exc.lineno or 1
        raise DefinitionError([Problem(filename, line, "", f"malformed XML: {exc.msg}")]) from None
    if root is None:
        raise DefinitionError([Problem(filename, 1, "", "empty document")])
    # The byte scan above misses other encodings (UTF-16...): ask the parsed document too.
    docinfo = root.getroottree().docinfo
    if getattr(docinfo, "doctype", "") or docinfo.internalDTD is not None:  # lxml-stubs lack doctype
        raise DefinitionError([Problem(filename, 1, "", _NO_DOCTYPE)])
    return root


def line_of(root: etree._Element, element_id: str | None) -> int:
    """Source line of the element with ``id == element_id`` (1 when unknown).

    SpiffWorkflow 3.2.0 reports ``line_number=''`` for element-level errors (it reads
    ``node.line_number``; lxml calls it ``sourceline``), so we recover it from the id.
    """
    if not element_id:
        return 1
    for element in root.iter():
        line = getattr(element, "sourceline", None)  # lxml-stubs mistype it
        if element.get("id") == element_id and isinstance(line, int) and line > 0:
            return line
    return 1
