"""validate(): every problem of a diagram, each naming its element and line, never a traceback."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from engine.errors import DefinitionError, Problem
from engine.validate import Vocabulary, executable_process_id, validate
from engine.xmlload import load_xml

DATA = Path(__file__).resolve().parents[1] / "data" / "validate"
NS = (
    'xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" '
    'xmlns:camunda="http://camunda.org/schema/1.0/bpmn" '
    'xmlns:spiffworkflow="http://spiffworkflow.org/bpmn/schema/1.0/core"'
)
GROUPS = {"Tier 1": "tier-1", "Tier 2": "tier-2"}


def set_status(status: str) -> None: ...
def escalate(group: str, reason: str = "") -> None: ...
def notify(group: str, template: str) -> None: ...
def sla_due(clock: str) -> None: ...


def desk_vocabulary() -> Vocabulary:
    """The stub desk the tests validate against."""
    return Vocabulary(
        functions={f.__name__: inspect.signature(f) for f in (set_status, escalate, notify, sla_due)},
        literal_choices={("set_status", "status"): frozenset({"open", "pending", "closed"})},
        group_for_lane=GROUPS.get,
        message_names=frozenset({"customer_replied", "agent_replied", "ticket_updated"}),
    )


def el(tag: str, element_id: str | None = None, *children: str, **attrs: str) -> str:
    """``el("task", "t", el("documentation"))``: one element; the ``bpmn:`` prefix is the default."""
    tag = tag if ":" in tag else f"bpmn:{tag}"
    attributes = {"id": element_id, **attrs} if element_id else attrs
    text = "".join(f' {k}="{v}"' for k, v in attributes.items())
    return f"<{tag}{text}>{''.join(children)}</{tag}>" if children else f"<{tag}{text}/>"


def flow(flow_id: str, source: str, target: str, condition: str | None = None) -> str:
    inner = [el("conditionExpression", None, condition)] if condition is not None else []
    return el("sequenceFlow", flow_id, *inner, sourceRef=source, targetRef=target)


def through(*body: str, first: str, last: str) -> str:
    """A process body: start -> first ... last -> end, plus the elements given."""
    edges = [flow("f_start", "start", first), *body, flow("f_end", last, "end")]
    return "\n".join([el("startEvent", "start"), *edges, el("endEvent", "end")])


def diagram(body: str, *, lane: tuple[str, ...] = (), lane_name: str = "Tier 1", before: str = "") -> str:
    refs = "".join(el("flowNodeRef", None, i) for i in lane)
    lanes = el("laneSet", "lanes", "\n", el("lane", "lane", refs, name=lane_name), "\n") if lane else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<bpmn:definitions {NS} id="defs" targetNamespace="http://lanedesk.test">\n'
        f"{before}\n"
        '<bpmn:process id="p" isExecutable="true">\n'
        f"{lanes}\n"
        f"{body}\n"
        "</bpmn:process>\n"
        "</bpmn:definitions>\n"
    )


def single(
    element: str, element_id: str, *, lane: tuple[str, ...] = (), lane_name: str = "Tier 1", before: str = ""
) -> str:
    """A diagram whose process runs start -> element -> end."""
    body = through(element, first=element_id, last=element_id)
    return diagram(body, lane=lane, lane_name=lane_name, before=before)


def check(xml: str, process_id: str | None = None) -> list[Problem]:
    return validate(xml.encode(), "t.bpmn", desk_vocabulary(), process_id=process_id)


def line(xml: str, needle: str) -> int:
    """The 1-based line of the first occurrence of ``needle``."""
    return xml[: xml.index(needle)].count("\n") + 1


def only(problems: list[Problem], element_id: str, *words: str) -> Problem:
    """The one problem about ``element_id``; it must contain every word."""
    found = [p for p in problems if p.element_id == element_id]
    assert len(found) == 1, problems
    for word in words:
        assert word in found[0].message, found[0]
    return found[0]


def script_task(task_id: str, script: str) -> str:
    return el("scriptTask", task_id, el("script", None, script))


def timer_catch(event_id: str, spec: str) -> str:
    return el(
        "intermediateCatchEvent",
        event_id,
        "\n",
        el("timerEventDefinition", f"{event_id}_def", "\n", spec, "\n"),
    )


def timer(kind: str, text: str) -> str:
    return el(kind, None, text) if text else ""


SECOND_PROCESS = el(
    "process",
    "q",
    el("startEvent", "q_start"),
    flow("q_flow", "q_start", "q_end"),
    el("endEvent", "q_end"),
    isExecutable="true",
)
SIMPLE = single(script_task("s", 'set_status("open")'), "s")


# --- whole documents -------------------------------------------------------------------------------


def test_a_clean_diagram_has_no_problems() -> None:
    assert validate((DATA / "clean.bpmn").read_bytes(), "clean.bpmn", desk_vocabulary()) == []


def test_a_minimal_process_is_clean() -> None:
    assert check(SIMPLE) == []


def test_a_diagram_with_several_problems_reports_all_of_them_sorted_by_line() -> None:
    data = (DATA / "several_problems.bpmn").read_bytes()
    problems = validate(data, "several_problems.bpmn", desk_vocabulary())
    text = data.decode()
    assert [p.line for p in problems] == sorted(p.line for p in problems)
    assert len(problems) == 5
    triage = only(
        problems, "triage", "lane 'Tier 9' maps to no agent group; create the group or rename the lane"
    )
    assert triage.line == line(text, '<bpmn:userTask id="triage"')
    assert only(problems, "sla", 'quote it: "PT4H"').line == line(text, "PT4H")
    assert only(problems, "cg", "complex gateway").line == line(text, '<bpmn:complexGateway id="cg"')
    assert only(
        problems, "close", "set_status('opne'): status must be one of closed, open, pending"
    ).line == line(text, "opne")
    only(problems, "wait", "the desk never sends 'foo'")


def test_problems_print_as_file_line_element_message() -> None:
    xml = single(el("complexGateway", "cg"), "cg")
    problem = only(check(xml), "cg")
    where = line(xml, 'id="cg"')
    assert str(problem) == f"t.bpmn:{where}: cg: {problem.message}"


def test_malformed_xml_is_one_problem_with_its_line() -> None:
    problems = validate(b'<?xml version="1.0"?>\n<a>\n<b>\n</a>\n', "bad.bpmn", desk_vocabulary())
    assert [(p.line, p.element_id) for p in problems] == [(4, "")]
    assert "malformed XML" in problems[0].message


def test_a_doctype_is_one_problem() -> None:
    data = b'<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY e "boom">]>\n<x>&e;</x>'
    problems = validate(data, "evil.bpmn", desk_vocabulary())
    assert [str(p) for p in problems] == [
        "evil.bpmn:2: -: DOCTYPE and entity declarations are not allowed in diagrams"
    ]


def test_a_100_megabyte_upload_is_one_problem() -> None:
    problems = validate(b"<a>" + b" " * (100 * 1024 * 1024) + b"</a>", "huge.bpmn", desk_vocabulary())
    assert len(problems) == 1
    assert "the limit is" in problems[0].message


def test_every_schema_error_is_reported_with_its_line() -> None:
    xml = diagram(through(el("task", "t", startQuantity="many"), el("bogus", "b1"), first="t", last="t"))
    problems = [p for p in check(xml) if p.message.startswith("not valid BPMN")]
    assert [(p.line, p.element_id) for p in problems] == [
        (line(xml, 'startQuantity="many"'), "t"),
        (line(xml, "bpmn:bogus"), "b1"),
    ]
    assert "attribute 'startQuantity'" in problems[0].message
    assert "Element 'bpmn:bogus': This element is not expected" in problems[1].message


# --- which process ---------------------------------------------------------------------------------


def test_a_file_without_an_executable_process_is_refused() -> None:
    xml = SIMPLE.replace('isExecutable="true"', 'isExecutable="false"')
    [problem] = check(xml)
    assert (problem.line, problem.element_id) == (2, "")
    assert "no executable process" in problem.message
    with pytest.raises(DefinitionError):
        executable_process_id(load_xml(xml.encode(), "t.bpmn"))


def test_several_executable_processes_need_a_process_id() -> None:
    xml = single(script_task("s", "x = 1"), "s", before=SECOND_PROCESS)
    assert "2 executable processes (q, p)" in check(xml)[0].message
    assert check(xml, process_id="p") == []
    assert executable_process_id(load_xml(xml.encode(), "t.bpmn"), process_id="q") == "q"


def test_a_called_process_does_not_count_as_a_second_candidate() -> None:
    xml = single(el("callActivity", "call", calledElement="q"), "call", before=SECOND_PROCESS)
    assert check(xml) == []
    assert executable_process_id(load_xml(xml.encode(), "t.bpmn")) == "p"


def test_a_call_activity_must_call_a_process_of_the_file() -> None:
    xml = single(el("callActivity", "call", calledElement="elsewhere"), "call")
    only(check(xml), "call", "calls 'elsewhere', which is not a process of this file")


def _called(process_id: str, call_id: str, target: str) -> str:
    """A non-executable process ``process_id`` whose only step calls ``target``."""
    start, end = f"{process_id}_start", f"{process_id}_end"
    return el(
        "process",
        process_id,
        el("startEvent", start),
        el("callActivity", call_id, calledElement=target),
        el("endEvent", end),
        flow(f"{process_id}_f1", start, call_id),
        flow(f"{process_id}_f2", call_id, end),
        isExecutable="false",
    )


def test_a_process_calling_itself_is_refused_naming_the_call_activity() -> None:
    xml = single(el("callActivity", "call", calledElement="q"), "call", before=_called("q", "again", "q"))
    problem = only(check(xml), "again", "process 'q' calls itself", "loop with a gateway")
    assert problem.line == line(xml, 'id="again"')
    assert [p for p in check(xml) if p.element_id == "call"] == []


def test_processes_calling_each_other_in_a_circle_are_refused() -> None:
    before = _called("q", "to_r", "r") + _called("r", "to_q", "q")
    problems = check(single(el("callActivity", "call", calledElement="q"), "call", before=before))
    only(problems, "to_r", "process 'q' calls 'r', which leads back to 'q'")
    only(problems, "to_q", "process 'r' calls 'q', which leads back to 'r'")
    assert [p for p in problems if p.element_id == "call"] == []


def test_an_unknown_process_id_is_refused() -> None:
    [problem] = check(SIMPLE, process_id="nope")
    assert "no process 'nope'" in problem.message
    assert "(it has: p)" in problem.message


def test_a_non_executable_process_id_is_refused() -> None:
    [problem] = check(SIMPLE.replace('isExecutable="true"', 'isExecutable="false"'), process_id="p")
    assert (problem.element_id, problem.line) == ("p", line(SIMPLE, '<bpmn:process id="p"'))
    assert 'set isExecutable="true"' in problem.message


# --- lanes -----------------------------------------------------------------------------------------


def test_a_user_task_outside_any_lane_is_refused() -> None:
    xml = single(el("userTask", "work"), "work")
    assert only(check(xml), "work", "outside any lane").line == line(xml, 'id="work"')


def test_a_lane_without_an_agent_group_is_refused() -> None:
    xml = single(el("userTask", "work"), "work", lane=("work",), lane_name="Tier 9")
    only(check(xml), "work", "lane 'Tier 9' maps to no agent group; create the group or rename the lane")
    assert check(xml.replace("Tier 9", "Tier 2")) == []


def test_a_task_inside_a_subprocess_takes_the_subprocess_lane() -> None:
    inner = [
        el("startEvent", "s2"),
        flow("i1", "s2", "work"),
        el("userTask", "work"),
        flow("i2", "work", "e2"),
    ]
    sub = el("subProcess", "sub", *inner, el("endEvent", "e2"))
    assert check(single(sub, "sub", lane=("sub",))) == []


# --- timers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        ("timeDuration", "PT4H"),
        ("timeDuration", "P1D"),
        ("timeCycle", "R3/PT1H"),
        ("timeDate", "2025-01-01T09:00:00Z"),
    ],
)
def test_unquoted_iso_timer_text_is_refused_with_a_hint_to_quote_it(kind: str, text: str) -> None:
    xml = single(timer_catch("wait", timer(kind, text)), "wait")
    assert only(check(xml), "wait", f'quote it: "{text}"').line == line(xml, f"<bpmn:{kind}>")


@pytest.mark.parametrize(
    ("kind", "text", "words"),
    [
        ("timeDuration", '"4 hours"', ['"4 hours" is not an ISO 8601 duration']),
        ("timeDuration", '"PT4X"', ["not an ISO 8601 duration"]),
        ("timeCycle", '"every hour"', ["not an ISO 8601 cycle"]),
        ("timeCycle", '"R2/2025-01-01T09:00:00/PT1H"', ["not an ISO 8601 cycle", "UTC offset"]),
        ("timeCycle", '"R1/P99999999999M"', ["not an ISO 8601 cycle"]),
        ("timeDuration", '"P99999999999M"', ["at most 100 years"]),
        ("timeDate", '"next monday"', ["not an ISO 8601 date-time"]),
        ("timeDate", '"2025-01-01T09:00:00"', ["no UTC offset", 'write "2025-01-01T09:00:00Z"']),
        ("timeDuration", "4", ["must give ISO 8601 text"]),
        ("timeDuration", 'sla_dew("first_response")', ["sla_dew()", "did you mean sla_due()"]),
        ("timeDuration", "sla_due()", ["missing a required argument: 'clock'"]),
        ("timeDuration", "${duration}", ["not valid Python", '"PT4H"']),
    ],
)
def test_bad_timer_expressions_are_refused(kind: str, text: str, words: list[str]) -> None:
    xml = single(timer_catch("wait", timer(kind, text)), "wait")
    assert only(check(xml), "wait", *words).line == line(xml, f"<bpmn:{kind}>")


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        ("timeDuration", '"PT4H"'),
        ("timeDuration", "'P1DT2H30M'"),
        ("timeCycle", '"R3/PT1H"'),
        ("timeCycle", '"R/2025-01-01T09:00:00Z/P1D"'),
        ("timeDate", '"2025-01-01T09:00:00+01:00"'),
        ("timeDate", 'sla_due("first_response")'),
        ("timeDuration", "reminder_after"),
    ],
)
def test_good_timer_expressions_pass(kind: str, text: str) -> None:
    assert check(single(timer_catch("wait", timer(kind, text)), "wait")) == []


def test_a_timer_without_a_time_is_refused() -> None:
    xml = single(timer_catch("wait", ""), "wait")
    assert only(check(xml), "wait", "the timer has no time").line == line(xml, "<bpmn:timerEventDefinition")


def test_a_timer_start_event_is_refused() -> None:
    start = el("startEvent", "start", el("timerEventDefinition", None, timer("timeDuration", '"PT1H"')))
    xml = SIMPLE.replace('<bpmn:startEvent id="start"/>', start)
    only(check(xml), "start", "timer start events are not supported", "none start event")


def test_an_event_based_gateway_with_two_timers_is_refused() -> None:
    body = [
        el("eventBasedGateway", "gw"),
        timer_catch("t1", timer("timeDuration", '"PT1H"')),
        timer_catch("t2", timer("timeDuration", '"PT2H"')),
        flow("a", "gw", "t1"),
        flow("b", "gw", "t2"),
        el("exclusiveGateway", "join"),
        flow("c", "t1", "join"),
        flow("d", "t2", "join"),
    ]
    xml = diagram(through(*body, first="gw", last="join"))
    problem = only(check(xml), "gw", "2 timers (t1, t2)", "share one due time")
    assert problem.line == line(xml, 'id="gw"')


# --- scripts and expressions -------------------------------------------------------------------------


def test_a_script_syntax_error_names_the_line_inside_the_script() -> None:
    xml = single(script_task("s", "x = 1\ny = (\nz = 3"), "s")
    problem = only(check(xml), "s", "script: not valid Python")
    assert line(xml, "x = 1") < problem.line <= line(xml, "z = 3")


def test_an_unknown_function_is_refused_with_a_suggestion() -> None:
    xml = single(script_task("s", 'x = 1\nset_stauts("open")'), "s")
    problem = only(check(xml), "s", "set_stauts() is neither a desk function nor an allowed builtin")
    assert "did you mean set_status()" in problem.message
    assert problem.line == line(xml, "set_stauts")


@pytest.mark.parametrize(
    ("call", "words"),
    [
        ("escalate()", ["escalate(): missing a required argument: 'group'", "escalate(group, reason='')"]),
        ("notify('tier-2', 'x', 'y')", ["too many positional arguments"]),
        ("escalate('tier-2', urgency=1)", ["unexpected keyword argument 'urgency'"]),
        ("set_status('opne')", ["set_status('opne'): status must be one of closed, open, pending"]),
        ("set_status(status='opne')", ["status must be one of"]),
    ],
)
def test_desk_functions_are_called_with_fitting_arguments(call: str, words: list[str]) -> None:
    only(check(single(script_task("s", call), "s")), "s", *words)


def test_names_bound_earlier_in_the_script_and_builtins_may_be_called() -> None:
    script = (
        "def double(n):\n    return n * 2\nf = len\nx = double(f([1])) + max(1, 2)\ny = [g(1) for g in [abs]]"
    )
    assert check(single(script_task("s", script), "s")) == []


def test_a_name_bound_only_after_the_call_is_unknown() -> None:
    only(check(single(script_task("s", "x = helper()\nhelper = len"), "s")), "s", "helper()")


def test_the_sandbox_refusals_are_reported() -> None:
    pytest.importorskip("engine.sandbox")
    xml = single(script_task("s", "x = 1\ny = ().__class__"), "s")
    assert only(check(xml), "s", "__class__").line == line(xml, "y = ()")


def test_gateway_conditions_are_checked_as_python() -> None:
    body = [
        el("exclusiveGateway", "gw", default="b"),
        flow("a", "gw", "end", "severity = 'high'"),
        flow("b", "gw", "end"),
    ]
    xml = diagram(
        "\n".join([el("startEvent", "start"), flow("f0", "start", "gw"), *body, el("endEvent", "end")])
    )
    assert only(check(xml), "a", "condition: not valid Python").line == line(xml, 'id="a"')


def test_pre_and_post_scripts_and_message_payloads_are_checked() -> None:
    scripts = el(
        "extensionElements",
        None,
        el("spiffworkflow:preScript", None, "reopen()"),
        el("spiffworkflow:postScript", None, "set_status('gone')"),
    )
    payload = el("extensionElements", None, el("spiffworkflow:messagePayload", None, "{'a': frobnicate()}"))
    throw = el("intermediateThrowEvent", "tell", el("messageEventDefinition", None, payload, messageRef="m"))
    body = through(el("task", "t", scripts), throw, flow("x", "t", "tell"), first="t", last="tell")
    problems = check(diagram(body, before=el("message", "m", name="agent_replied")))
    assert {p.message.split(":")[0] for p in problems if p.element_id == "t"} == {"pre-script", "post-script"}
    only(problems, "tell", "message payload: frobnicate()")


def test_a_script_task_without_a_script_is_refused() -> None:
    only(check(single(el("scriptTask", "s"), "s")), "s", "has no script")


# --- gateways and flows ----------------------------------------------------------------------------


def gateway(kind: str, *flows: str, default: str | None = None) -> str:
    gw = el(kind, "gw", default=default) if default else el(kind, "gw")
    return diagram(
        "\n".join([el("startEvent", "start"), flow("f0", "start", "gw"), gw, *flows, el("endEvent", "end")])
    )


def test_exclusive_gateway_flows_need_conditions_except_the_default() -> None:
    flows = [flow("a", "gw", "end"), flow("b", "gw", "end", "x == 1"), flow("c", "gw", "end", "x == 2")]
    xml = gateway("exclusiveGateway", *flows, default="b")
    problems = check(xml)
    assert only(problems, "a", "needs a condition", "exclusive gateway 'gw'").line == line(xml, 'id="a"')
    only(problems, "b", "default flow of gateway 'gw' must not have a condition")
    assert [p.element_id for p in problems] == ["a", "b"]


def test_inclusive_gateway_flows_need_conditions_too() -> None:
    xml = gateway("inclusiveGateway", flow("a", "gw", "end", "True"), flow("b", "gw", "end"))
    only(check(xml), "b", "inclusive gateway 'gw'")


def test_a_task_with_two_outgoing_flows_is_refused() -> None:
    xml = diagram(through(el("task", "t"), flow("a", "t", "end"), first="t", last="t"))
    only(check(xml), "t", "task has 2 outgoing flows", "add a parallel (or exclusive) gateway")


def test_a_condition_on_a_flow_out_of_a_task_is_refused() -> None:
    xml = diagram(through(el("task", "t"), flow("x", "t", "end", "x > 1"), first="t", last="t"))
    problems = check(xml)
    assert only(problems, "x", "ignores conditions on flows out of a task").line == line(xml, 'id="x"')
    only(problems, "t", "task has 2 outgoing flows")


def test_an_inclusive_join_inside_a_loop_is_refused() -> None:
    body = [
        el("inclusiveGateway", "join"),
        el("task", "work"),
        el("exclusiveGateway", "again", default="done"),
        flow("w", "join", "work"),
        flow("x", "work", "again"),
        flow("back", "again", "join", "retry"),
        flow("done", "again", "end"),
    ]
    xml = diagram(
        "\n".join([el("startEvent", "start"), flow("f0", "start", "join"), *body, el("endEvent", "end")])
    )
    only(check(xml), "join", "inclusive join inside a loop")


@pytest.mark.parametrize(
    ("element", "words"),
    [
        (el("complexGateway", "x"), ["complex gateways are not supported"]),
        (el("businessRuleTask", "x"), ["business rule tasks need DMN"]),
        (el("manualTask", "x", name="Call the customer"), ["no inbox", "draw a userTask with a form"]),
        (el("adHocSubProcess", "x", el("task", "in")), ["ad-hoc"]),
        (el("task", "x", isForCompensation="true"), ["compensation is not supported"]),
        (
            el("intermediateThrowEvent", "x", el("linkEventDefinition", name="L")),
            ["silently ignored", "sequence flow"],
        ),
        (
            el("intermediateThrowEvent", "x", el("compensateEventDefinition")),
            ["compensation is not supported"],
        ),
    ],
)
def test_unsupported_elements_are_refused(element: str, words: list[str]) -> None:
    xml = single(element, "x")
    assert only(check(xml), "x", *words).line == line(xml, 'id="x"')


def test_a_data_store_is_refused() -> None:
    ref = el("dataStoreReference", "ref", dataStoreRef="store")
    xml = diagram(
        through(script_task("s", "x = 1"), ref, first="s", last="s"),
        before=el("dataStore", "store", name="CRM"),
    )
    problems = check(xml)
    only(problems, "store", "data stores have no implementation")
    only(problems, "ref", "data stores have no implementation")
    assert len(problems) == 2


def test_a_subprocess_without_a_start_event_is_refused() -> None:
    xml = single(el("subProcess", "sub", el("task", "in")), "sub")
    assert only(check(xml), "sub", "exactly one start event").line == line(xml, 'id="sub"')


def test_an_interrupting_message_event_subprocess_is_refused() -> None:
    start = el("startEvent", "on_msg", el("messageEventDefinition", messageRef="m"))
    sub = el(
        "subProcess", "evsub", start, flow("i", "on_msg", "e2"), el("endEvent", "e2"), triggeredByEvent="true"
    )
    xml = diagram(
        through(script_task("s", "x = 1"), sub, first="s", last="s"),
        before=el("message", "m", name="ticket_updated"),
    )
    only(check(xml), "on_msg", "ignores isInterrupting", 'isInterrupting="false"')
    assert check(xml.replace('id="on_msg"', 'id="on_msg" isInterrupting="false"')) == []


def service(task_id: str, operator: str, **params: str) -> str:
    items = [el("spiffworkflow:parameter", pid, type="str", value=value) for pid, value in params.items()]
    op = el("spiffworkflow:serviceTaskOperator", operator, el("spiffworkflow:parameters", None, *items))
    return el("serviceTask", task_id, el("extensionElements", None, op))


def test_service_tasks_need_a_known_operator_with_fitting_parameters() -> None:
    tasks = [
        el("serviceTask", "none"),
        service("unknown", "page_oncall"),
        service("badparam", "set_status", state="1"),
        service("badvalue", "set_status", status="&quot;gone&quot;"),
        service("good", "set_status", status="&quot;open&quot;"),
    ]
    flows = [
        flow("a", "none", "unknown"),
        flow("b", "unknown", "badparam"),
        flow("c", "badparam", "badvalue"),
    ]
    problems = check(
        diagram(through(*tasks, *flows, flow("d", "badvalue", "good"), first="none", last="good"))
    )
    only(problems, "none", "has no operator", "set_status")
    only(problems, "unknown", "operator 'page_oncall' is not a desk operation")
    only(
        problems,
        "badparam",
        "set_status(state=1): missing a required argument: 'status'",
        "set_status(status)",
    )
    only(problems, "badvalue", "status must be one of closed, open, pending")
    assert len(problems) == 4


# --- messages --------------------------------------------------------------------------------------


def test_a_message_the_desk_never_sends_is_refused() -> None:
    catch = el("intermediateCatchEvent", "wait", el("messageEventDefinition", messageRef="m"))
    xml = single(catch, "wait", before=el("message", "m", name="foo"))
    only(
        check(xml),
        "wait",
        "the desk never sends 'foo'; it sends agent_replied, customer_replied, ticket_updated",
    )
    assert check(xml.replace('name="foo"', 'name="customer_replied"')) == []


def test_a_message_event_without_a_message_is_refused() -> None:
    catch = el("intermediateCatchEvent", "wait", el("messageEventDefinition"))
    only(check(single(catch, "wait")), "wait", "names no message")


# --- forms -----------------------------------------------------------------------------------------


def form(*fields: str) -> str:
    data = el("camunda:formData", None, "\n", "\n".join(fields), "\n")
    return single(el("userTask", "work", el("extensionElements", None, data)), "work", lane=("work",))


def field(field_type: str, *children: str, field_id: str = "f", **attrs: str) -> str:
    return el("camunda:formField", field_id, *children, type=field_type, **attrs)


def constraint(name: str, config: str | None = None) -> str:
    rule = (
        el("camunda:constraint", None, name=name, config=config)
        if config
        else el("camunda:constraint", name=name)
    )
    return el("camunda:validation", None, rule)


@pytest.mark.parametrize(
    ("xml_field", "words"),
    [
        (field("number"), ["form field 'f': type 'number' is not supported"]),
        (field("enum"), ["enum field needs at least one value"]),
        (
            field("enum", el("camunda:value", "low"), defaultValue="mid"),
            ["default 'mid' is not one of its values (low)"],
        ),
        (field("long", constraint("positive")), ["unknown constraint 'positive'"]),
        (field("long", constraint("max", "ten")), ["constraint max needs a whole number, not 'ten'"]),
        (field("string", constraint("pattern", "[a-")), ["pattern '[a-' is not a valid regular expression"]),
        (field("string", constraint("pattern")), ["constraint pattern needs a regular expression"]),
        (field("string", constraint("pattern", " ")), ["constraint pattern needs a regular expression"]),
        (field("boolean", field_id="escalate"), ["'escalate': the id is the name of a desk function"]),
        (field("long", field_id="sum"), ["'sum': the id is the name of a builtin", "rename the field"]),
        (field("string", field_id="datetime"), ["the name of a builtin"]),
        (field("string", field_id="_note"), ["'_note': ids starting with '_' are hidden", "rename"]),
    ],
)
def test_bad_form_fields_are_refused(xml_field: str, words: list[str]) -> None:
    xml = form(xml_field)
    assert only(check(xml), "work", *words).line == line(xml, "<camunda:formField")


def test_a_good_form_passes() -> None:
    options = [el("camunda:value", "low", name="Low"), el("camunda:value", "high", name="High")]
    assert (
        check(
            form(
                field("enum", *options, defaultValue="low"),
                field("string", constraint("maxlength", "9"), field_id="g"),
            )
        )
        == []
    )


def test_duplicate_form_field_ids_are_refused() -> None:
    xml = form(el("camunda:formField", "a", type="string"), el("camunda:formField", "a", type="long"))
    assert only(check(xml), "work", "form field 'a': the id is used twice").line == line(
        xml, 'id="a" type="long"'
    )


# --- the engine's own verdict ----------------------------------------------------------------------


def test_engine_only_problems_get_their_line_from_the_element_id() -> None:
    xml = single(el("task", "many", el("multiInstanceLoopCharacteristics")), "many")
    problem = only(check(xml), "many", "the engine refuses this", "cardinality")
    assert problem.line == line(xml, 'id="many"')


def test_an_unexpected_engine_exception_becomes_a_problem_naming_the_element(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from SpiffWorkflow.bpmn.parser.ProcessParser import ProcessParser

    def explode(self: ProcessParser) -> None:
        raise KeyError("data_objects")

    monkeypatch.setattr(ProcessParser, "add_tasks", explode)
    [problem] = check(SIMPLE)
    assert (problem.element_id, problem.line) == ("p", line(SIMPLE, '<bpmn:process id="p"'))
    assert "KeyError" in problem.message


def test_a_crashing_lint_becomes_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(scope: object) -> list[Problem]:
        raise RuntimeError("oops")

    monkeypatch.setattr("engine.validate.LINTS", (broken,))
    [problem] = check(SIMPLE)
    assert "internal error in broken" in problem.message


def test_every_problem_prints_on_one_line() -> None:
    text = (DATA / "several_problems.bpmn").read_text().replace('name="foo"', 'name="two\nlines"')
    problems = check(text)
    assert problems
    for problem in problems:
        assert re.fullmatch(r"[^:]+:\d+: \S+: .+", str(problem))
