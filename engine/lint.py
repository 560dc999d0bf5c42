"""Structural lints over a diagram's XML tree: what SpiffWorkflow 3.2.0 refuses, mis-runs or ignores.

They need no SpiffWorkflow parse, so one run reports every problem at once. Each lint yields
:class:`~engine.errors.Problem` objects naming the element at fault and saying what to draw
instead (notes/spiffworkflow.md §8, §10, §12.4, §12.5). :mod:`engine.validate` runs them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lxml import etree

from .errors import Problem
from .forms import CONSTRAINTS, FIELD_TYPES
from .parser import CAMUNDA_NS, read_form_fields
from .sandbox import ALLOWED_BUILTINS
from .xmlload import line_of

if TYPE_CHECKING:
    from .validate import Vocabulary

BPMN_NS = "http://www.omg.org/spec/BPMN/20100524/MODEL"
SPIFF_NS = "http://spiffworkflow.org/bpmn/schema/1.0/core"
SUBPROCESSES = frozenset({"subProcess", "transaction", "adHocSubProcess"})
CONDITIONAL = frozenset({"exclusiveGateway", "inclusiveGateway"})
GATEWAYS = frozenset({"exclusiveGateway", "inclusiveGateway", "parallelGateway", "eventBasedGateway"})
ACTIVITIES = frozenset(
    {"task", "userTask", "manualTask", "scriptTask", "serviceTask", "sendTask", "receiveTask"}
    | {"businessRuleTask", "callActivity"}
    | SUBPROCESSES
)
EVENTS = frozenset(
    {"startEvent", "endEvent", "intermediateCatchEvent", "intermediateThrowEvent", "boundaryEvent"}
)
FLOW_NODES = ACTIVITIES | GATEWAYS | EVENTS | {"complexGateway"}
#: Elements a problem can be reported against (a script's problem belongs to its task, etc.).
OWNERS = FLOW_NODES | {"sequenceFlow", "process", "message", "dataStore", "dataStoreReference", "lane"}

UNSUPPORTED = {
    "complexGateway": "complex gateways are not supported by the engine; "
    "use exclusive or inclusive gateways together with a parallel gateway",
    "adHocSubProcess": "ad-hoc subprocesses crash SpiffWorkflow 3.2.0; "
    "use a subprocess with a parallel or event-based gateway instead",
    "businessRuleTask": "business rule tasks need DMN, which the desk does not run; "
    "use a script task or an exclusive gateway",
    "manualTask": "manual tasks wait for nobody the desk knows (no inbox shows them, so the ticket "
    "would stop there); draw a userTask with a form instead",
    "dataStoreReference": "data stores have no implementation in the desk; "
    "keep the data in process variables or use a desk operation",
    "linkEventDefinition": "link events are silently ignored by SpiffWorkflow 3.2.0 (the branch ends and "
    "the process reports completed); draw a sequence flow instead",
    "compensateEventDefinition": "compensation is not supported; model the undo as explicit tasks "
    "after an error boundary event",
}


_SPLIT = "the engine does not split or choose implicitly: add a parallel (or exclusive) gateway after it"
_TIMER_START = (
    "timer start events are not supported (a cycle adds tokens to one instance instead of starting "
    "new ones); use a none start event: the desk starts one instance per ticket"
)
_INTERRUPTING = (
    "SpiffWorkflow 3.2.0 ignores isInterrupting on a message or signal event subprocess (the main flow "
    'keeps running); set isInterrupting="false" or use an interrupting boundary event'
)
_SHARED = "in SpiffWorkflow 3.2.0 they all share one due time: keep a single timer"
_INCLUSIVE_LOOP = (
    "an inclusive join inside a loop fires too early from the third round in SpiffWorkflow 3.2.0; "
    "use an exclusive or parallel gateway here"
)


def local(el: etree._Element) -> str:
    """The local name of an element's tag ('' for comments and processing instructions)."""
    return etree.QName(el).localname if isinstance(el.tag, str) else ""


def source_line(el: etree._Element) -> int:
    """The line an element starts on (0 when lxml does not know)."""
    line = getattr(el, "sourceline", None)  # typed as a placeholder by lxml-stubs
    return line if isinstance(line, int) else 0


def bpmn(name: str) -> str:
    """The Clark-notation tag of a BPMN element."""
    return f"{{{BPMN_NS}}}{name}"


@dataclass
class Scope:
    """The processes of one document that will run: what every lint looks at."""

    root: etree._Element
    filename: str
    processes: list[etree._Element]
    vocabulary: Vocabulary
    _flows: dict[str, list[etree._Element]] | None = field(default=None, repr=False)

    def iter(self, *names: str) -> Iterator[etree._Element]:
        """Every BPMN element in scope whose local name is one of ``names``."""
        tags = [bpmn(n) for n in names]
        for process in self.processes:
            yield from process.iter(*tags)

    def outgoing(self, element_id: str | None) -> list[etree._Element]:
        """The sequence flows whose sourceRef is ``element_id``."""
        if self._flows is None:
            self._flows = {}
            for flow in self.iter("sequenceFlow"):
                self._flows.setdefault(flow.get("sourceRef") or "", []).append(flow)
        return self._flows.get(element_id or "", [])

    def problem(self, el: etree._Element, message: str, line: int | None = None) -> Problem:
        """A problem reported against ``el``'s owning element, at ``line`` or ``el``'s own line."""
        owner: etree._Element | None = el
        while owner is not None and local(owner) not in OWNERS:
            owner = owner.getparent()
        element_id = (owner if owner is not None else el).get("id") or ""
        return Problem(
            self.filename, line or source_line(el) or line_of(self.root, element_id), element_id, message
        )


def kind(el: etree._Element) -> str:
    """'user task' for userTask: how messages name an element's type."""
    return re.sub(r"(?<!^)([A-Z])", r" \1", local(el)).lower()


def condition_of(flow: etree._Element) -> str | None:
    """A sequence flow's condition text, None when it has none (an empty one counts as none)."""
    expr = flow.find(bpmn("conditionExpression"))
    return expr.text if expr is not None and (expr.text or "").strip() else None


def check_unsupported(scope: Scope) -> Iterator[Problem]:
    """Elements the engine refuses, ignores or runs wrongly."""
    for el in scope.iter(*UNSUPPORTED):
        yield scope.problem(el, UNSUPPORTED[local(el)])
    for el in scope.root.iter(bpmn("dataStore")):
        yield scope.problem(el, UNSUPPORTED["dataStoreReference"])
    for el in scope.iter(*ACTIVITIES):
        if el.get("isForCompensation") == "true":
            yield scope.problem(el, UNSUPPORTED["compensateEventDefinition"])


def check_gateways(scope: Scope) -> Iterator[Problem]:
    """Exclusive/inclusive gateways: conditions on every outgoing flow but the default."""
    for gw in scope.iter("exclusiveGateway", "inclusiveGateway"):
        flows, default, name = scope.outgoing(gw.get("id")), gw.get("default"), gw.get("id")
        if default and default not in {f.get("id") for f in flows}:
            yield scope.problem(
                gw, f"default flow '{default}' does not leave this gateway; pick an outgoing flow"
            )
        for flow in flows:
            has_condition = condition_of(flow) is not None
            if flow.get("id") == default and has_condition:
                yield scope.problem(
                    flow, f"the default flow of gateway '{name}' must not have a condition; remove it"
                )
            elif flow.get("id") != default and not has_condition and len(flows) > 1:
                message = f"flow out of {kind(gw)} '{name}' needs a condition (or make it the default flow)"
                yield scope.problem(flow, message)


def check_flows(scope: Scope) -> Iterator[Problem]:
    """Implicit splits, dangling flows, and start/end events where the engine requires them."""
    nodes = {el.get("id"): el for el in scope.iter(*FLOW_NODES)}
    for flow in scope.iter("sequenceFlow"):
        for ref in ("sourceRef", "targetRef"):
            if flow.get(ref) not in nodes:
                yield scope.problem(
                    flow, f"{ref} '{flow.get(ref)}' is not in this process; reconnect the flow"
                )
        source = nodes.get(flow.get("sourceRef"))
        if source is not None and local(source) not in CONDITIONAL and condition_of(flow) is not None:
            yield scope.problem(
                flow, f"the engine ignores conditions on flows out of a {kind(source)}; {_SPLIT}"
            )
    for node in scope.iter(*(FLOW_NODES - GATEWAYS)):
        count = len(scope.outgoing(node.get("id")))
        if count > 1:
            yield scope.problem(node, f"{kind(node)} has {count} outgoing flows; {_SPLIT}")
    for container in scope.iter("process", "subProcess", "transaction"):
        starts, ends = container.findall(bpmn("startEvent")), container.findall(bpmn("endEvent"))
        if local(container) == "process":
            if not starts:
                yield scope.problem(container, "the process has no start event; add one")
        elif len(starts) != 1:
            yield scope.problem(
                container, f"a subprocess needs exactly one start event; it has {len(starts)}"
            )
        elif not ends:
            yield scope.problem(container, "a subprocess needs an end event; add one")


def check_calls(scope: Scope) -> Iterator[Problem]:
    """Call activities call a process of this file (a deployment is one file), never in a circle."""
    processes = {p.get("id"): p for p in scope.root.iter(bpmn("process"))}
    calls: dict[str, set[str]] = {}
    for pid, process in processes.items():
        for call in process.iter(bpmn("callActivity")):
            calls.setdefault(pid or "", set()).add(call.get("calledElement") or "")
    for call in scope.iter("callActivity"):
        target = call.get("calledElement") or ""
        owner = next((p.get("id") or "" for p in call.iterancestors(bpmn("process"))), "")
        if target not in processes:
            yield scope.problem(
                call, f"calls '{target}', which is not a process of this file; add it to the file"
            )
        elif target == owner or _reaches(calls, target, owner):
            how = "itself" if target == owner else f"'{target}', which leads back to '{owner}'"
            yield scope.problem(
                call,
                f"process '{owner}' calls {how}: the engine would nest calls without end; "
                "draw the repetition as a loop with a gateway instead",
            )


def check_events(scope: Scope) -> Iterator[Problem]:
    """Timer start events, interrupting message/signal event subprocesses, event-gateway timers."""
    for start in scope.iter("startEvent"):
        parent = start.getparent()
        in_event_subprocess = parent is not None and parent.get("triggeredByEvent") == "true"
        if start.find(bpmn("timerEventDefinition")) is not None and not in_event_subprocess:
            yield scope.problem(start, _TIMER_START)
        triggers = {local(c) for c in start} & {"messageEventDefinition", "signalEventDefinition"}
        if in_event_subprocess and triggers and start.get("isInterrupting", "true") != "false":
            yield scope.problem(start, _INTERRUPTING)
    by_id = {el.get("id"): el for el in scope.iter("intermediateCatchEvent")}
    for gw in scope.iter("eventBasedGateway"):
        targets = [by_id.get(f.get("targetRef")) for f in scope.outgoing(gw.get("id"))]
        timers = [
            str(t.get("id"))
            for t in targets
            if t is not None and t.find(bpmn("timerEventDefinition")) is not None
        ]
        if len(timers) > 1:
            yield scope.problem(
                gw, f"event-based gateway waits on {len(timers)} timers ({', '.join(timers)}); {_SHARED}"
            )


def check_inclusive_cycles(scope: Scope) -> Iterator[Problem]:
    """Inclusive joins inside a loop fire early from the third round in 3.2.0 (§12.1)."""
    edges: dict[str, set[str]] = {}
    for flow in scope.iter("sequenceFlow"):
        edges.setdefault(flow.get("sourceRef") or "", set()).add(flow.get("targetRef") or "")
    for event in scope.iter("boundaryEvent"):
        edges.setdefault(event.get("attachedToRef") or "", set()).add(event.get("id") or "")
    for gw in scope.iter("inclusiveGateway"):
        gid = gw.get("id") or ""
        if sum(gid in targets for targets in edges.values()) > 1 and _reaches(edges, gid, gid):
            yield scope.problem(gw, _INCLUSIVE_LOOP)


def _reaches(edges: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), list(edges.get(start, ()))
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(edges.get(node, ()))
    return False


def lane_slug(name: str) -> str | None:
    """The agent group a lane names by convention: 'Tier 2' -> 'tier-2' (None for a blank name)."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or None


def check_lanes(scope: Scope) -> Iterator[Problem]:
    """Every user task sits in a lane that names an agent group (manual tasks are refused outright)."""
    lanes: dict[str, etree._Element] = {}
    for ref in scope.root.iter(bpmn("flowNodeRef")):  # document order: a nested lane overrides its parent
        lane = ref.getparent()
        if ref.text is not None and lane is not None:
            lanes[ref.text] = lane
    for task in scope.iter("userTask"):
        lane = _lane_of(task, lanes)
        name = lane.get("name") if lane is not None else None
        if lane is None:
            yield scope.problem(task, f"{kind(task)} is outside any lane; draw it in its agent group's lane")
        elif not name:
            yield scope.problem(
                task, f"{kind(task)} is in lane '{lane.get('id')}', which has no name; name it"
            )
        elif scope.vocabulary.group_for_lane(name) is None:
            yield scope.problem(
                task, f"lane '{name}' maps to no agent group; create the group or rename the lane"
            )


def _lane_of(el: etree._Element, lanes: dict[str, etree._Element]) -> etree._Element | None:
    # As SpiffWorkflow does it: a subprocess's lane, when named, covers everything inside it.
    parent = el.getparent()
    if parent is not None and local(parent) in SUBPROCESSES:
        outer = _lane_of(parent, lanes)
        if outer is not None and outer.get("name") is not None:
            return outer
    return lanes.get(el.get("id") or "")


def check_messages(scope: Scope) -> Iterator[Problem]:
    """Message catches name a message the desk actually sends (or the diagram throws itself)."""
    names = {m.get("id"): m.get("name") for m in scope.root.iter(bpmn("message"))}
    thrown = {
        names.get(_message_ref(el)) for el in scope.iter("intermediateThrowEvent", "endEvent", "sendTask")
    }
    sent = scope.vocabulary.message_names
    for el in scope.iter("startEvent", "intermediateCatchEvent", "boundaryEvent", "receiveTask"):
        ref = _message_ref(el)
        if ref is None:
            continue
        if not ref:
            yield scope.problem(el, "the message event names no message; pick a declared message")
        elif ref not in names:
            yield scope.problem(el, f"message '{ref}' is not declared in this file; pick a declared message")
        elif not names[ref]:
            yield scope.problem(el, f"message '{ref}' has no name; name it after a message the desk sends")
        elif sent and names[ref] not in sent | thrown:
            yield scope.problem(
                el, f"the desk never sends '{names[ref]}'; it sends {', '.join(sorted(sent))}"
            )


def _message_ref(el: etree._Element) -> str | None:
    definition = el.find(bpmn("messageEventDefinition"))
    if definition is not None:
        return definition.get("messageRef") or ""
    return el.get("messageRef") if local(el) in {"receiveTask", "sendTask"} else None


def check_forms(scope: Scope) -> Iterator[Problem]:
    """Camunda form fields on user tasks use types and constraints the desk can render and check."""
    for task in scope.iter("userTask"):
        seen: set[str] = set()
        xml_fields = list(task.iter(f"{{{CAMUNDA_NS}}}formField"))
        for xml_field, spec in zip(xml_fields, read_form_fields(task), strict=True):
            for message in _field_problems(spec, seen, scope.vocabulary):
                yield scope.problem(xml_field, f"form field '{spec['id']}': {message}")
            seen.add(spec["id"])


def _field_problems(spec: dict[str, Any], seen: set[str], vocabulary: Vocabulary) -> Iterator[str]:
    options = [opt[0] for opt in spec["options"]]
    if not spec["id"]:
        yield "has no id; give it the variable name the answer is stored under"
    elif spec["id"] in seen:
        yield "the id is used twice in this form; rename one of the fields"
    elif spec["id"].startswith("_"):
        yield "ids starting with '_' are hidden from scripts and conditions; rename the field"
    elif spec["id"] in vocabulary.functions:
        yield "the id is the name of a desk function, which the answer would hide; rename the field"
    elif spec["id"] in ALLOWED_BUILTINS:
        yield "the id is the name of a builtin scripts use, which the answer would hide; rename the field"
    if spec["type"] not in FIELD_TYPES:
        yield f"type '{spec['type']}' is not supported; use one of {', '.join(sorted(FIELD_TYPES))}"
    if spec["type"] == "enum" and not options:
        yield "an enum field needs at least one value"
    if spec["type"] == "enum" and spec["default"] is not None and spec["default"] not in options:
        yield f"default '{spec['default']}' is not one of its values ({', '.join(options)})"
    for name, config in spec["validation"].items():
        if name not in CONSTRAINTS:
            yield f"unknown constraint '{name}'; use one of {', '.join(sorted(CONSTRAINTS))}"
        elif name in {"min", "max", "minlength", "maxlength"} and not _is_int(config):
            yield f"constraint {name} needs a whole number, not '{config}'"
        elif name == "pattern" and not (config or "").strip():
            yield "constraint pattern needs a regular expression in its config"
        elif name == "pattern":
            yield from _regex_problems(config)


def _is_int(text: str | None) -> bool:
    return text is not None and re.fullmatch(r"\s*[+-]?\d+\s*", text) is not None


def _regex_problems(pattern: str | None) -> Iterator[str]:
    try:
        re.compile(pattern or "")
    except re.error as exc:
        yield f"pattern '{pattern}' is not a valid regular expression ({exc}); fix it"


LINTS: tuple[Callable[[Scope], Iterable[Problem]], ...] = (
    check_unsupported,
    check_gateways,
    check_flows,
    check_calls,
    check_events,
    check_inclusive_cycles,
    check_lanes,
    check_messages,
    check_forms,
)
