"""The sandboxed script engine, driven through real diagrams parsed by DeskParser."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import pytest
import time_machine
from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.bpmn.exceptions import WorkflowTaskException
from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine, TaskDataEnvironment
from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG
from SpiffWorkflow.util.task import TaskState

from engine.clock import frozen_at
from engine.errors import SandboxViolation, ScriptError
from engine.parser import DeskParser
from engine.sandbox import ALLOWED_BUILTINS, SandboxedScriptEngine, as_script_error, check_source
from engine.xmlload import load_xml

_NS = (
    'xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    'xmlns:spiffworkflow="http://spiffworkflow.org/bpmn/schema/1.0/core"'
)


# --- building small diagrams ---------------------------------------------------------------------
def _definitions(process: str) -> str:
    return (
        f'<bpmn:definitions {_NS} id="defs" targetNamespace="http://lanedesk.test">'
        f'<bpmn:process id="p" isExecutable="true">{process}</bpmn:process></bpmn:definitions>'
    )


def _flow(flow_id: str, source: str, target: str, condition: str | None = None) -> str:
    if condition is None:
        return f'<bpmn:sequenceFlow id="{flow_id}" sourceRef="{source}" targetRef="{target}"/>'
    return (
        f'<bpmn:sequenceFlow id="{flow_id}" sourceRef="{source}" targetRef="{target}">'
        f'<bpmn:conditionExpression xsi:type="bpmn:tFormalExpression">{escape(condition)}'
        "</bpmn:conditionExpression></bpmn:sequenceFlow>"
    )


def _chain(*nodes: tuple[str, str]) -> str:
    """start -> nodes... -> end, each node given as (id, xml)."""
    ids = ["start", *(node_id for node_id, _ in nodes), "end"]
    flows = "".join(_flow(f"f{i}", a, b) for i, (a, b) in enumerate(pairwise(ids)))
    body = "".join(xml for _, xml in nodes)
    return _definitions(f'<bpmn:startEvent id="start"/>{body}<bpmn:endEvent id="end"/>{flows}')


def _script(node_id: str, source: str) -> tuple[str, str]:
    return (
        node_id,
        f'<bpmn:scriptTask id="{node_id}"><bpmn:script>{escape(source)}</bpmn:script></bpmn:scriptTask>',
    )


def _routing(condition: str, *before: tuple[str, str]) -> str:
    """start -> before... -> gateway 'route' -> 'high' when ``condition`` else 'low'; each sets ``lane``."""
    ids = ["start", *(node_id for node_id, _ in before), "route"]
    return _definitions(
        '<bpmn:startEvent id="start"/>'
        + "".join(xml for _, xml in before)
        + '<bpmn:exclusiveGateway id="route" default="to_low"/>'
        + _script("high", "lane = 'high'")[1]
        + _script("low", "lane = 'low'")[1]
        + '<bpmn:endEvent id="end_high"/><bpmn:endEvent id="end_low"/>'
        + "".join(_flow(f"f{i}", a, b) for i, (a, b) in enumerate(pairwise(ids)))
        + _flow("to_high", "route", "high", condition)
        + _flow("to_low", "route", "low")
        + _flow("high_end", "high", "end_high")
        + _flow("low_end", "low", "end_low")
    )


def _spec(xml: str) -> Any:
    parser = DeskParser()
    parser.add_bpmn_xml(load_xml(xml.encode(), "test.bpmn"), filename="test.bpmn")
    return parser.get_spec("p")


def _run(xml: str, engine: Any = None, **data: Any) -> BpmnWorkflow:
    """Start the diagram with ``data`` and run it until it completes or waits."""
    workflow = BpmnWorkflow(_spec(xml), script_engine=engine or SandboxedScriptEngine())
    workflow.get_tasks(state=TaskState.READY)[0].data.update(data)
    workflow.do_engine_steps()
    return workflow


def _refusal(xml: str, engine: Any = None, **data: Any) -> ScriptError:
    with pytest.raises(ScriptError) as caught:
        _run(xml, engine, **data)
    return caught.value


# --- ordinary scripts ----------------------------------------------------------------------------
ORDINARY = """
total = price * quantity + 2 ** 3 - 10 // 3
items = sorted([3, 1, 2]) + [4]
counts = {name: len(name) for name in ['ann', 'bob'] if name != 'bob'}
evens = [n for n in range(10) if n % 2 == 0]
alias = evens
evens += [10]
title = subject.strip().title().replace('Vpn', 'VPN')
words = ', '.join(w.upper() for w in subject.split())
first, *rest = items
due = datetime(2030, 1, 1, 9, tzinfo=timezone.utc) + timedelta(hours=4)
hours = (due - datetime(2030, 1, 1, tzinfo=timezone.utc)).total_seconds() / 3600
n = 1
n += 41
helper = lambda x: x * 2
doubled = helper(21)
try:
    int('not a number')
except:
    parsed = False
"""

EXPECTED = {
    "price": 5,
    "quantity": 3,
    "subject": " vpn is down ",
    "total": 20,
    "items": [1, 2, 3, 4],
    "counts": {"ann": 3},
    "evens": [0, 2, 4, 6, 8, 10],
    "alias": [0, 2, 4, 6, 8, 10],
    "title": "VPN Is Down",
    "words": "VPN, IS, DOWN",
    "first": 1,
    "rest": [2, 3, 4],
    "due": datetime(2030, 1, 1, 13, tzinfo=UTC),
    "hours": 13.0,
    "n": 42,
    "doubled": 42,
    "parsed": False,
}


def test_ordinary_script_assignments_land_in_task_data() -> None:
    workflow = _run(_chain(_script("work", ORDINARY)), price=5, quantity=3, subject=" vpn is down ")

    assert workflow.is_completed()
    assert workflow.data == EXPECTED  # the lambda, builtins and guards stayed out


def test_ordinary_script_gives_the_same_data_as_the_stock_engine() -> None:
    xml = _chain(_script("work", ORDINARY))
    data = {"price": 5, "quantity": 3, "subject": " vpn is down "}

    stock_globals = {"datetime": datetime, "timedelta": timedelta, "timezone": timezone}
    stock = _run(xml, PythonScriptEngine(environment=TaskDataEnvironment(stock_globals)), **data)
    sandboxed = _run(xml, SandboxedScriptEngine(), **data)

    assert sandboxed.data == stock.data == EXPECTED


def test_script_can_delete_a_variable_as_with_the_stock_engine() -> None:
    workflow = _run(_chain(_script("work", "del scratch\nkept = 1")), scratch=1)

    assert workflow.data == {"kept": 1}


def test_failed_script_leaves_task_data_untouched() -> None:
    workflow = BpmnWorkflow(
        _spec(_chain(_script("work", "a = 2\nb = 1 / 0"))), script_engine=SandboxedScriptEngine()
    )
    workflow.get_tasks(state=TaskState.READY)[0].data.update(a=1)

    with pytest.raises(ScriptError):
        workflow.do_engine_steps()

    assert workflow.get_next_task(spec_name="work").data == {"a": 1}


def test_data_keys_starting_with_underscore_cannot_replace_the_guards_and_are_kept() -> None:
    # Form or message data is untrusted: a "_getattr_" field must not stand in for the guard.
    workflow = _run(_chain(_script("work", "x = ticket.get('id')")), _getattr_="evil", ticket={"id": 1})

    assert workflow.data == {"_getattr_": "evil", "ticket": {"id": 1}, "x": 1}


def test_print_goes_to_the_debug_log(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="engine.sandbox"):
        workflow = _run(_chain(_script("work", "print('hello', 42)\nx = 1")))

    assert workflow.data == {"x": 1}
    assert "hello" in caplog.text


# --- desk functions ------------------------------------------------------------------------------
def _recorder() -> tuple[list[tuple[Any, ...]], Callable[..., str]]:
    calls: list[tuple[Any, ...]] = []

    def set_status(*args: Any, **kwargs: Any) -> str:
        calls.append((args, kwargs))
        return "done"

    return calls, set_status


def test_script_calls_a_bound_desk_function_with_its_arguments() -> None:
    calls, set_status = _recorder()
    engine = SandboxedScriptEngine()
    xml = _chain(_script("work", "result = set_status(ticket_id, 'pending', note='waiting on customer')"))

    with engine.bound({"set_status": set_status}):
        workflow = _run(xml, engine, ticket_id=7)

    assert calls == [((7, "pending"), {"note": "waiting on customer"})]
    assert workflow.data == {"ticket_id": 7, "result": "done"}


def test_desk_functions_run_without_the_scripts_trace_hook_which_comes_back_after() -> None:
    # Desk functions are our code and do real work (an ORM flush is thousands of calls): the
    # hook would be called for each of them. Coverage's or a debugger's hook stays on.
    outside = sys.gettrace()
    seen: list[object] = []
    engine = SandboxedScriptEngine(line_budget=1_000)

    with engine.bound({"probe": lambda: seen.append(sys.gettrace()) or len(seen)}):
        workflow = _run(_chain(_script("work", "a = probe()\nb = probe()")), engine)
        # ... while the script's own lines are still counted, calls or not.
        with pytest.raises(SandboxViolation, match="stopped after 1,000 lines"):
            _run(_chain(_script("work", "n = 0\nfor i in range(5000):\n    n = n + probe() * 0")), engine)

    assert workflow.data == {"a": 1, "b": 2}
    assert seen[:2] == [outside, outside]
    assert sys.gettrace() is outside


def test_a_script_cannot_hand_a_function_to_a_desk_function_to_run_untraced() -> None:
    calls, set_status = _recorder()
    engine = SandboxedScriptEngine()

    with engine.bound({"set_status": set_status}):
        error = _refusal(_chain(_script("work", "set_status(lambda: 1)")), engine)

    assert isinstance(error, SandboxViolation)
    assert "set_status() takes values, not functions" in str(error)
    assert calls == []


def test_bound_functions_merge_over_the_constructors_and_end_with_the_block() -> None:
    engine = SandboxedScriptEngine({"base": lambda: 1, "both": lambda: "constructor"})

    with engine.bound({"both": lambda: "bound", "extra": lambda: 2}):
        inside = {name: fn() for name, fn in engine.current_functions().items()}

    assert inside == {"base": 1, "both": "bound", "extra": 2}
    assert sorted(engine.current_functions()) == ["base", "both"]


def test_bound_functions_are_seen_only_by_the_binding_thread() -> None:
    engine = SandboxedScriptEngine({"base": lambda: 1})
    seen: dict[str, list[str]] = {}
    other = threading.Thread(target=lambda: seen.update(other=sorted(engine.current_functions())))

    with engine.bound({"extra": lambda: 2}):
        other.start()
        other.join()
        seen["binding"] = sorted(engine.current_functions())

    assert seen == {"other": ["base"], "binding": ["base", "extra"]}


def test_task_data_shadowing_a_desk_function_is_a_clear_error() -> None:
    engine = SandboxedScriptEngine({"set_status": lambda status: status})

    error = _refusal(_chain(_script("work", "x = 1")), engine, set_status="open")

    assert error.element_id == "work"
    assert "set_status" in str(error) and "rename" in str(error)


# --- gateways ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("priority", "lane"), [("urgent", "high"), ("normal", "low")])
def test_gateway_condition_routes_by_task_data(priority: str, lane: str) -> None:
    workflow = _run(
        _routing("priority == 'urgent' and len(tags) > 1"), priority=priority, tags=["vpn", "vip"]
    )

    assert workflow.is_completed()
    assert workflow.data["lane"] == lane


def test_gateway_condition_may_call_a_desk_function() -> None:
    engine = SandboxedScriptEngine({"is_vip": lambda customer: customer == "acme"})

    workflow = _run(_routing("is_vip(customer)"), engine, customer="acme")

    assert workflow.data["lane"] == "high"


# --- refusals ------------------------------------------------------------------------------------
ATTACK_SCRIPTS = [
    ("x = __import__('os').system('id')", "__import__"),
    ("import os", "Import"),
    ("x = open('/etc/passwd').read()", "open"),
    ("exec('x = 1')", "Exec calls"),
    ("x = eval('1')", "Eval calls"),
    ("x = ().__class__.__base__.__subclasses__()", "__subclasses__"),
    ("x = getattr(subject, '__globals__')", "getattr"),
    ("x = '{0.__class__}'.format(1)", "format"),
    ("x = f'{subject.__class__}'", "__class__"),
    ("x = ValueError.mro()", "mro"),
    ("x = type(subject)", "'type' is not available"),
    ("while True:\n    pass", "stopped after 200,000 lines"),
    # One-line loops: CPython 3.11 reports no line event for a jump to the same instruction.
    ("while True: pass", "stopped after 200,000 lines"),
    ("while 1: pass", "stopped after 200,000 lines"),
    ("while True: continue", "stopped after 200,000 lines"),
    ("n = 0\nwhile True: pass", "stopped after 200,000 lines"),
    # Comprehension frames cost so much per line that the CPU limit (0.5 s) may come first
    # on a loaded machine: either budget stopping it is the behaviour.
    ("f = lambda: [0 for i in range(3)]\nwhile True: f()", "stopped after "),
    (
        "while True:\n    try:\n        while True:\n            pass\n    except:\n        pass",
        "stopped after",
    ),
    ("try:\n    x = 1\nfinally:\n    pass", "try/finally"),
    ("x = 'x' * 10**10", "refused to build a sequence"),
    ("x = [0] * 10**10", "refused to build a sequence"),
    ("x = 10**10**10", "refused to build an integer"),
    ("x = pow(10, 10**10)", "refused to build an integer"),
    ("x = 1 << 10**10", "refused to build an integer"),
    ("x = 9\nx **= 10**10", "refused to build an integer"),
    ("s = 'x'\nwhile True:\n    s = s + s", "refused to build a sequence"),
    ("x = list(range(10**12))", "refused to build a range"),
    ("x = sum([[1]] * 1000, [])", "sum() adds numbers only"),
]


class _Hung(BaseException):
    """Raised by :func:`watchdog`: not an Exception, so no script or engine handler takes it."""


@contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Fail (instead of hanging the suite) when the block runs longer than ``seconds``."""

    def expire(signum: int, frame: Any) -> None:
        raise _Hung(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize(("source", "reason"), ATTACK_SCRIPTS)
def test_script_task_refuses_escapes_and_bombs_naming_the_element(source: str, reason: str) -> None:
    with watchdog(20):
        error = _refusal(_chain(_script("work", source)), subject="vpn")

    assert isinstance(error, SandboxViolation)
    assert error.element_id == "work"
    assert reason in str(error)
    assert str(error).startswith("work: ")


ATTACK_CONDITIONS = [
    ("__import__('os').system('touch /tmp/pwned') == 0", "__import__"),
    ("open('/etc/passwd') is not None", "open"),
    ("eval('1') == 1", "Eval calls"),
    ("exec('x = 1') is None", "Exec calls"),
    ("len(().__class__.__base__.__subclasses__()) > 0", "__subclasses__"),
    ("getattr(priority, '__globals__') is None", "getattr"),
    ("'{0.__class__}'.format(1) != ''", "format"),
    ("len('x' * 10**10) > 0", "refused to build a sequence"),
    ("10**10**10 > 0", "refused to build an integer"),
    ("(1 << 10**10) > 0", "refused to build an integer"),
    ("len([1 for a in range(10**6) for b in range(10**6)]) > 0", "stopped after "),  # lines or CPU
]


@pytest.mark.parametrize(("condition", "reason"), ATTACK_CONDITIONS)
def test_gateway_condition_refuses_escapes_and_bombs_naming_the_gateway(condition: str, reason: str) -> None:
    error = _refusal(_routing(condition), priority="urgent")

    assert isinstance(error, SandboxViolation)
    assert error.element_id == "route"
    assert reason in str(error)


def test_runaway_loop_is_stopped_by_cpu_time_too() -> None:
    engine = SandboxedScriptEngine(line_budget=10**12, cpu_seconds=0.05)

    error = _refusal(_chain(_script("work", "n = 0\nwhile True:\n    n = n + 1")), engine)

    assert isinstance(error, SandboxViolation)
    assert "0.05 s of CPU" in str(error)
    assert error.line in (2, 3)  # a line of the loop; which one the deadline lands on is timing


def test_cpu_limit_counts_from_the_start_and_stops_few_heavy_lines_early() -> None:
    # ~10 ms of C work per loop turn, a few trace events each: a check only every 1,024 lines,
    # or a deadline set only then, would let this run for seconds.
    engine = SandboxedScriptEngine(cpu_seconds=0.05)
    started = time.thread_time()

    with watchdog(20):
        error = _refusal(_chain(_script("work", "x = [sum(range(10**6)) for i in range(1000)]")), engine)

    assert "0.05 s of CPU" in str(error)
    assert time.thread_time() - started < 0.5


def test_previous_trace_function_is_restored_even_after_a_runaway_loop() -> None:
    def tracer(frame: Any, event: str, arg: Any) -> None:
        return None

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        _run(_chain(_script("work", "x = 1")))
        assert sys.gettrace() is tracer
        _refusal(_chain(_script("work", "while True:\n    pass")))
        assert sys.gettrace() is tracer
        with watchdog(20):
            _refusal(_chain(_script("work", "while True: pass")))
        assert sys.gettrace() is tracer
    finally:
        sys.settrace(previous)


def test_expressions_spiffworkflow_evaluates_without_a_task_are_sandboxed_too() -> None:
    # Completion conditions and message correlations go through script_engine.environment.evaluate.
    environment = SandboxedScriptEngine().environment

    assert environment.evaluate("ticket['id'] * 2", {"ticket": {"id": 21}}) == 42
    with pytest.raises(SandboxViolation):
        environment.evaluate("__import__('os')", {})


# --- timers and service tasks --------------------------------------------------------------------
def _timer_diagram(expression: str) -> str:
    timer = (
        '<bpmn:intermediateCatchEvent id="sla_timer"><bpmn:timerEventDefinition>'
        f'<bpmn:timeDate xsi:type="bpmn:tFormalExpression">{escape(expression)}</bpmn:timeDate>'
        "</bpmn:timerEventDefinition></bpmn:intermediateCatchEvent>"
    )
    return _chain(("sla_timer", timer))


@pytest.fixture
def server_in_india(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The server's local zone is UTC+05:30 (a POSIX TZ rule: no tz database needed)."""
    monkeypatch.setenv("TZ", "IST-5:30")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("server_in_india")
def test_scripts_read_the_engine_clock_through_today_utcnow_and_now() -> None:
    script = "\n".join(
        [
            "a = datetime.today()",
            "b = datetime.utcnow()",
            "c = datetime.now()",
            "d = datetime.now(timezone.utc)",
        ]
    )

    with frozen_at(datetime(2030, 1, 1, 9, tzinfo=UTC)):
        data = _run(_chain(_script("clock", script))).data

    assert data["a"] == data["c"] == datetime(2030, 1, 1, 14, 30)  # naive, the server's zone
    assert data["b"] == datetime(2030, 1, 1, 9)  # naive, UTC
    assert data["d"] == datetime(2030, 1, 1, 9, tzinfo=UTC)
    assert {type(value) for value in data.values()} == {datetime}


def test_timer_expression_may_return_an_aware_datetime() -> None:
    due = datetime(2030, 1, 1, 13, tzinfo=UTC)
    engine = SandboxedScriptEngine({"sla_due": lambda kind: due if kind == "first_response" else None})

    with time_machine.travel(datetime(2030, 1, 1, 9, tzinfo=UTC), tick=False):
        workflow = _run(_timer_diagram('sla_due("first_response")'), engine)
    timer = workflow.get_next_task(spec_name="sla_timer")
    assert timer.state == TaskState.WAITING
    assert timer.internal_data["event_value"] == "2030-01-01T13:00:00+00:00"

    with time_machine.travel(datetime(2030, 1, 1, 13, 1, tzinfo=UTC), tick=False):
        workflow.refresh_timers()
        workflow.do_engine_steps()
        workflow.refresh_timers()
        workflow.do_engine_steps()
    assert workflow.is_completed()


def test_timer_expression_giving_a_naive_datetime_is_refused() -> None:
    engine = SandboxedScriptEngine({"sla_due": lambda: datetime(2030, 1, 1, 13)})

    error = _refusal(_timer_diagram("sla_due()"), engine)

    assert error.element_id == "sla_timer"
    assert "naive datetime" in str(error)


def _service_diagram(operator: str, **params: str) -> str:
    parameters = "".join(
        f'<spiffworkflow:parameter id="{name}" type="any" value={quoteattr(value)}/>'
        for name, value in params.items()
    )
    service = (
        '<bpmn:serviceTask id="update"><bpmn:extensionElements>'
        f'<spiffworkflow:serviceTaskOperator id="{operator}" resultVariable="outcome">'
        f"<spiffworkflow:parameters>{parameters}</spiffworkflow:parameters>"
        "</spiffworkflow:serviceTaskOperator></bpmn:extensionElements></bpmn:serviceTask>"
    )
    return _chain(("update", service))


def test_service_task_calls_the_desk_function_with_evaluated_parameters() -> None:
    calls, set_status = _recorder()
    engine = SandboxedScriptEngine({"set_status": set_status})

    workflow = _run(
        _service_diagram("set_status", status="'pending'", ticket="ticket_id + 1"), engine, ticket_id=6
    )

    assert calls == [((), {"status": "pending", "ticket": 7})]
    assert workflow.data["outcome"] == "done"


def test_service_task_with_an_unknown_operator_names_the_element() -> None:
    error = _refusal(_service_diagram("send_rocket"))

    assert error.element_id == "update"
    assert "send_rocket" in str(error)


def test_service_parameter_expressions_are_sandboxed() -> None:
    engine = SandboxedScriptEngine({"set_status": lambda status: status})

    error = _refusal(_service_diagram("set_status", status="__import__('os')"), engine)

    assert isinstance(error, SandboxViolation)
    assert error.element_id == "update"


def test_service_result_that_is_not_json_names_the_element() -> None:
    engine = SandboxedScriptEngine({"due": lambda: datetime(2030, 1, 1, tzinfo=UTC)})

    error = _refusal(_service_diagram("due"), engine)

    assert error.element_id == "update"
    assert "not JSON serializable" in str(error)


# --- serialization -------------------------------------------------------------------------------
_SERIALIZER = BpmnWorkflowSerializer(BpmnWorkflowSerializer.configure(SPIFF_CONFIG))
_PREPARE = "due = datetime(2030, 1, 1, tzinfo=timezone.utc) + timedelta(hours=4)\nseen = [priority]"


def _finish(workflow: BpmnWorkflow, priority: str) -> None:
    task = workflow.get_tasks(state=TaskState.READY, manual=True)[0]
    task.data["priority"] = priority
    task.run()
    workflow.do_engine_steps()


@pytest.mark.parametrize("priority", ["urgent", "normal"])
def test_results_are_identical_after_a_serialize_round_trip(priority: str) -> None:
    xml = _routing(
        "priority == 'urgent' and due.hour == 4",
        _script("prep", _PREPARE),
        ("wait", '<bpmn:userTask id="wait"/>'),
    )
    straight = _run(xml, priority="low")
    _finish(straight, priority)

    reloaded = _SERIALIZER.deserialize_json(_SERIALIZER.serialize_json(_run(xml, priority="low")))
    assert not isinstance(reloaded.script_engine, SandboxedScriptEngine)  # the engine is not serialized
    reloaded.script_engine = SandboxedScriptEngine()
    _finish(reloaded, priority)

    assert reloaded.is_completed() and straight.is_completed()
    assert reloaded.data == straight.data
    assert reloaded.data["lane"] == ("high" if priority == "urgent" else "low")


# --- check_source and error reporting ------------------------------------------------------------
def test_check_source_accepts_ordinary_scripts_and_expressions() -> None:
    assert check_source(ORDINARY, "exec") == []
    assert check_source("priority == 'urgent' and len(tags) > 1", "eval") == []


@pytest.mark.parametrize(
    ("source", "mode", "expected"),
    [
        ("x = 1\ny = (\n", "exec", "SyntaxError"),
        ("x = 1", "eval", "SyntaxError"),
        ("x = __import__('os')", "exec", '"__import__" is an invalid variable name'),
        ("().__class__", "eval", '"__class__" is an invalid attribute name'),
        ("open('/etc/passwd')", "eval", '"open" is not available'),
        ("import os", "exec", "Import statements are not allowed"),
        ("try:\n    x = 1\nfinally:\n    x = 2", "exec", "try/finally is not allowed"),
        ("with x:\n    pass", "exec", "With statements are not allowed"),
    ],
)
def test_check_source_reports_problems_with_their_line(source: str, mode: Any, expected: str) -> None:
    problems = check_source(source, mode)

    assert problems
    assert problems[0].startswith("Line ")
    assert expected in " ".join(problems)


def test_allowed_builtins_is_a_small_documented_vocabulary() -> None:
    assert {
        "len",
        "sorted",
        "sum",
        "datetime",
        "timedelta",
        "timezone",
        "isinstance",
        "range",
    } <= ALLOWED_BUILTINS
    dangerous = {
        "open",
        "exec",
        "eval",
        "compile",
        "__import__",
        "getattr",
        "setattr",
        "type",
        "BaseException",
    }
    assert not dangerous & ALLOWED_BUILTINS


def test_as_script_error_gives_element_and_line_for_a_failing_line_3_script() -> None:
    xml = _chain(_script("work", "a = 1\nb = 2\nc = a / (b - 2)\nd = 4"))

    with pytest.raises(Exception) as caught:
        _run(xml)
    error = as_script_error(caught.value)

    assert type(error) is ScriptError
    assert (error.element_id, error.line) == ("work", 3)
    assert "ZeroDivisionError" in str(error) and "c = a / (b - 2)" in str(error)


def test_syntax_error_keeps_its_reason_and_line_instead_of_crashing() -> None:
    # The stock 3.2.0 engine raises TypeError here (RestrictedPython's SyntaxError has lineno=None).
    error = _refusal(_chain(_script("work", "a = 1\nb = (")))

    assert type(error) is ScriptError
    assert (error.element_id, error.line) == ("work", 2)
    assert "SyntaxError" in str(error)


def test_get_error_line_number_and_content_copes_with_a_missing_line() -> None:
    engine = SandboxedScriptEngine()

    assert engine.get_error_line_number_and_content("a = 1", SyntaxError("bad")) == (0, "")
    assert engine.get_error_line_number_and_content("a = 1\nb = (", ScriptError("x", line=2)) == (2, "b = (")


def test_as_script_error_unwraps_spiffworkflow_wrappers() -> None:
    workflow = BpmnWorkflow(_spec(_chain(_script("work", "x = 1"))), script_engine=SandboxedScriptEngine())
    task = workflow.get_next_task(spec_name="work")

    try:
        raise WorkflowTaskException("wrapped", task=task) from SandboxViolation("refused", line=2)
    except WorkflowTaskException as wrapped:
        unwrapped = as_script_error(wrapped)
    plain = as_script_error(WorkflowTaskException("plain failure", task=task, line_number=5))

    assert isinstance(unwrapped, SandboxViolation)
    assert (unwrapped.element_id, unwrapped.line, str(unwrapped)) == ("work", 2, "work: refused")
    assert (type(plain), plain.element_id, plain.line, str(plain)) == (
        ScriptError,
        "work",
        5,
        "work: plain failure",
    )
