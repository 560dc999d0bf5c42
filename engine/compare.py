"""What changed between two versions of a diagram, element by element.

The comparison is semantic: it looks at the process elements (tasks, events, gateways, flows,
lanes) by id and ignores the drawing (BPMN DI: positions, bends, label bounds), comments and
attribute order. A changed element says *what* changed in words a process owner uses: its name,
its type, its timer, its form fields, a condition, the lane it sits in, its documentation...
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from .lint import BPMN_NS, kind, local
from .xmlload import load_xml

#: Children that are diagram elements in their own right, compared on their own.
_OWN_ELEMENTS = {
    "task", "userTask", "manualTask", "serviceTask", "scriptTask", "sendTask", "receiveTask",
    "businessRuleTask", "callActivity", "subProcess", "transaction", "adHocSubProcess",
    "startEvent", "endEvent", "intermediateCatchEvent", "intermediateThrowEvent", "boundaryEvent",
    "exclusiveGateway", "parallelGateway", "inclusiveGateway", "eventBasedGateway",
    "complexGateway", "sequenceFlow", "lane", "laneSet", "dataObject", "dataObjectReference",
    "dataStoreReference", "textAnnotation", "association",
}  # fmt: skip
#: Bookkeeping that follows from the flows (compared there), not a change of its own.
_DERIVED = {"incoming", "outgoing", "flowNodeRef"}
#: Aspects of an element, by the local name of the child that holds them.
_ASPECTS = {
    "timerEventDefinition": "timer",
    "messageEventDefinition": "message",
    "signalEventDefinition": "signal",
    "errorEventDefinition": "error",
    "escalationEventDefinition": "escalation",
    "conditionalEventDefinition": "condition",
    "conditionExpression": "condition",
    "script": "script",
    "documentation": "documentation",
    "extensionElements": "extensions (form fields, inputs/outputs, properties)",
    "multiInstanceLoopCharacteristics": "multi-instance",
    "standardLoopCharacteristics": "loop",
}


@dataclass(frozen=True)
class ElementChange:
    element_id: str
    kind: str  # 'user task', 'sequence flow', ...
    name: str
    change: str  # added | removed | changed
    aspects: tuple[str, ...] = ()  # for 'changed': 'name', 'timer', 'lane', ...

    def to_dict(self) -> dict[str, object]:
        return {
            "element_id": self.element_id,
            "kind": self.kind,
            "name": self.name,
            "change": self.change,
            "aspects": list(self.aspects),
        }


@dataclass
class Comparison:
    changes: list[ElementChange] = field(default_factory=list)

    def of(self, change: str) -> list[ElementChange]:
        return [c for c in self.changes if c.change == change]

    @property
    def identical(self) -> bool:
        return not self.changes

    def to_dict(self) -> dict[str, object]:
        return {
            "added": [c.to_dict() for c in self.of("added")],
            "removed": [c.to_dict() for c in self.of("removed")],
            "changed": [c.to_dict() for c in self.of("changed")],
        }


def compare(old_xml: bytes, new_xml: bytes, *, old_name: str = "old", new_name: str = "new") -> Comparison:
    """Elements added, removed and changed from ``old_xml`` to ``new_xml`` (both loaded hardened).

    Raises :class:`~engine.errors.DefinitionError` if either cannot be loaded.
    """
    old = _elements(load_xml(old_xml, old_name))
    new = _elements(load_xml(new_xml, new_name))
    lanes = (_lanes(old), _lanes(new))
    result = Comparison()
    for element_id, el in new.items():
        if element_id not in old:
            result.changes.append(_change(el, "added"))
    for element_id, el in old.items():
        if element_id not in new:
            result.changes.append(_change(el, "removed"))
            continue
        aspects = _aspects(el, new[element_id], lanes)
        if aspects:
            result.changes.append(_change(new[element_id], "changed", aspects))
    order = {"removed": 0, "changed": 1, "added": 2}
    result.changes.sort(key=lambda c: (order[c.change], c.kind, c.element_id))
    return result


def element_names(xml: bytes, filename: str = "diagram.bpmn") -> dict[str, str]:
    """Element id → its name (or its kind when unnamed), for every semantic element of ``xml``."""
    return {eid: el.get("name") or kind(el) for eid, el in _elements(load_xml(xml, filename)).items()}


def _elements(root: etree._Element) -> dict[str, etree._Element]:
    """Every identified semantic element inside the processes (and the collaboration's messages)."""
    found: dict[str, etree._Element] = {}
    for top in root:
        if not isinstance(top.tag, str) or etree.QName(top).namespace != BPMN_NS:
            continue
        if local(top) in ("process", "message", "signal", "error", "escalation"):
            if top.get("id"):
                found[top.get("id") or ""] = top
            for el in top.iter():
                if isinstance(el.tag, str) and local(el) in _OWN_ELEMENTS and el.get("id"):
                    found.setdefault(el.get("id") or "", el)
    return found


def _change(el: etree._Element, change: str, aspects: tuple[str, ...] = ()) -> ElementChange:
    return ElementChange(el.get("id") or "", kind(el), el.get("name") or "", change, aspects)


def _aspects(
    old: etree._Element, new: etree._Element, lanes: tuple[dict[str, str], dict[str, str]]
) -> tuple[str, ...]:
    found: list[str] = []
    if local(old) != local(new):
        found.append(f"type ({kind(old)} → {kind(new)})")
    if (old.get("name") or "") != (new.get("name") or ""):
        found.append("name")
    old_attrs = {k: v for k, v in old.attrib.items() if k not in ("id", "name")}
    new_attrs = {k: v for k, v in new.attrib.items() if k not in ("id", "name")}
    if old_attrs != new_attrs:
        keys = set(old_attrs) | set(new_attrs)
        changed = sorted({etree.QName(k).localname for k in keys if old_attrs.get(k) != new_attrs.get(k)})
        found.append("attributes (" + ", ".join(changed) + ")")
    element_id = old.get("id") or ""
    if lanes[0].get(element_id) != lanes[1].get(element_id):
        found.append("lane")
    old_parts, new_parts = _parts(old), _parts(new)
    for aspect in sorted(set(old_parts) | set(new_parts)):
        if old_parts.get(aspect) != new_parts.get(aspect):
            found.append(aspect)
    return tuple(found)


def _parts(el: etree._Element) -> dict[str, str]:
    """The element's own content by aspect, canonicalised (whitespace-trimmed text, sorted attrs)."""
    parts: dict[str, list[str]] = {}
    for child in el:
        if not isinstance(child.tag, str):
            continue
        name = local(child)
        if name in _OWN_ELEMENTS or name in _DERIVED:
            continue
        aspect = _ASPECTS.get(name, name)
        parts.setdefault(aspect, []).append(_canonical(child))
    return {aspect: "\n".join(texts) for aspect, texts in parts.items()}


def _canonical(el: etree._Element) -> str:
    attrs = " ".join(f"{k!s}={v!r}" for k, v in sorted(el.attrib.items()))
    text = (el.text or "").strip()
    children = "".join(_canonical(c) for c in el if isinstance(c.tag, str))
    return f"<{etree.QName(el).text} {attrs}>{text}{children}</>"


def _lanes(everything: dict[str, etree._Element]) -> dict[str, str]:
    """Element id → the id of the (innermost) lane that lists it."""
    found: dict[str, str] = {}
    for lane in everything.values():
        if local(lane) == "lane":
            for ref in lane.iterchildren(f"{{{BPMN_NS}}}flowNodeRef"):
                found[(ref.text or "").strip()] = lane.get("id") or ""
    return found
