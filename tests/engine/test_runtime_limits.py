"""engine.runtime on small inline diagrams: endless loops, task data that cannot be stored, and
the timers predicted behind event-based gateways."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any
from xml.sax.saxutils import escape

import pytest

from engine import runtime
from engine.errors import ScriptError
from engine.runtime import Definition, Instance
from tests.engine.test_sandbox import watchdog

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
_NS = (
    'xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
)


def _definition(body: str) -> Definition:
    xml = (
        f'<bpmn:definitions {_NS} id="defs" targetNamespace="http://lanedesk.test">'
        f'<bpmn:process id="p" isExecutable="true">{body}</bpmn:process></bpmn:definitions>'
    )
    return Definition.parse(xml.encode(), "t.bpmn", "p")


def _flow(flow_id: str, source: str, target: str, condition: str | None = None) -> str:
    if condition is None:
        return f'<bpmn:sequenceFlow id="{flow_id}" sourceRef="{source}" targetRef="{target}"/>'
    return (
        f'<bpmn:sequenceFlow id="{flow_id}" sourceRef="{source}" targetRef="{target}">'
        f'<bpmn:conditionExpression xsi:type="bpmn:tFormalExpression">{escape(condition)}'
        "</bpmn:conditionExpression></bpmn:sequenceFlow>"
    )


def _script(node_id: str, source: str) -> str:
    return f'<bpmn:scriptTask id="{node_id}"><bpmn:script>{escape(source)}</bpmn:script></bpmn:scriptTask>'


def _script_then_wait(source: str) -> Definition:
    """start -> script 'work' -> user task 'wait' -> end."""
    ids = ["start", "work", "wait", "end"]
    return _definition(
        '<bpmn:startEvent id="start"/>'
        + _script("work", source)
        + '<bpmn:userTask id="wait"/><bpmn:endEvent id="end"/>'
        + "".join(_flow(f"f{i}", a, b) for i, (a, b) in enumerate(pairwise(ids)))
    )


def _start(definition: Definition, functions: dict[str, Any] | None = None) -> Instance:
    instance, _ = Instance.start(definition, data={}, now=T0, functions=functions or {})
    return instance


# --- a cycle with no wait state --------------------------------------------------------------------
SPIN = _definition(
    '<bpmn:startEvent id="start"/><bpmn:exclusiveGateway id="join"/>'
    + _script("again", "n = 1")
    + '<bpmn:exclusiveGateway id="check" default="out"/><bpmn:endEvent id="end"/>'
    + _flow("f1", "start", "join")
    + _flow("f2", "join", "again")
    + _flow("f3", "again", "check")
    + _flow("back", "check", "join", "n == 1")
    + _flow("out", "check", "end")
)


def test_a_cycle_without_a_wait_state_is_stopped_naming_an_element_of_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime, "MAX_STEPS", 90)

    with watchdog(60), pytest.raises(ScriptError) as caught:
        _start(SPIN)

    assert "more than 90 steps in one event" in str(caught.value)
    assert "endless loop without a wait state" in str(caught.value)
    assert caught.value.element_id in {"join", "again", "check"}


def test_the_default_step_limit_stops_a_spin_within_seconds() -> None:
    with watchdog(60), pytest.raises(ScriptError, match="more than 1,000 steps"):
        _start(SPIN)


# --- task data that engine.state could not store unchanged -----------------------------------------
UNSTORABLE = [
    ("x = map(str, [1, 2])", "x is of type map", "wrap it in list()"),
    ("x = zip([1], [2])", "x is of type zip", "wrap it in list()"),
    ("x = reversed([1, 2])", "x is of type list_reverseiterator", "wrap it in list()"),
    ("x = enumerate(['a'])", "x is of type enumerate", "wrap it in list()"),
    ("x = (n for n in [1])", "x is of type generator", "wrap it in list()"),
    ("x = range(3)", "x is of type range", "wrap it in list()"),
    ("x = (1, 2)", "x is of type tuple", "wrap it in list()"),
    ("x = {'a': [{1, 2}]}", "x['a'][0] is of type set", "sorted() or list()"),
    ("x = frozenset([1])", "x is of type frozenset", "sorted() or list()"),
    ("x = 'é'.encode()", "x is of type bytes", ".decode()"),
    ("x = timezone.utc", "x is of type timezone", "store text or a number"),
    ("x = {'ok': {1: 'one'}}", "x['ok'] has the key 1, which would come back as text", "str(key)"),
    ("x = {'typename': 'ticket'}", "the key 'typename', which the engine reserves", "rename it"),
    ("x = [1]\nx.append(x)", "x[1] contains itself", ""),
    ("x = [[]]\nfor i in range(40):\n    x = [x, x]", "holds over 1,000,000 values", ""),
]


@pytest.mark.parametrize(("source", "what", "hint"), UNSTORABLE)
def test_a_script_leaving_a_value_task_data_cannot_store_is_refused_naming_it(
    source: str, what: str, hint: str
) -> None:
    with pytest.raises(ScriptError) as caught:
        _start(_script_then_wait(f"ok = 1\n{source}"))

    assert caught.value.element_id == "work"
    assert "variable 'x' cannot be stored" in str(caught.value)
    assert what in str(caught.value)
    assert hint in str(caught.value)


def test_values_task_data_can_store_come_back_unchanged_after_dump_and_load() -> None:
    script = "\n".join(
        [
            "words = sorted({'b', 'a'})",
            "pairs = [list(p) for p in zip([1, 2], ['x', 'y'])]",
            "at = datetime(2026, 3, 2, 9, tzinfo=timezone.utc)",
            "local = datetime(2026, 3, 2, 9, tzinfo=timezone(timedelta(hours=2)))",
            "naive = datetime(2026, 3, 2, 9)",
            "day = at.date()",
            "wait = timedelta(hours=4)",
            "nested = {'a': [1, 2.5, None, True, 'x', {'b': []}], 'big': 10 ** 30}",
            "shared = [nested, nested]",
        ]
    )
    instance = _start(_script_then_wait(script))
    definition = instance.definition
    [view] = instance.user_tasks()
    before = dict(instance.workflow.get_task_from_id(uuid.UUID(view.task_id)).data)

    loaded = Instance.load(definition, instance.dump())
    after = loaded.workflow.get_task_from_id(uuid.UUID(view.task_id)).data

    assert after == before
    assert {k: type(v) for k, v in after.items()} == {k: type(v) for k, v in before.items()}
    assert before["words"] == ["a", "b"]


def test_a_refused_value_leaves_the_task_data_as_it_was() -> None:
    ids = ["start", "ask", "work", "wait", "end"]
    definition = _definition(
        '<bpmn:startEvent id="start"/><bpmn:userTask id="ask"/>'
        + _script("work", "n = n + 1\nkeys = {n: 'x'}")
        + '<bpmn:userTask id="wait"/><bpmn:endEvent id="end"/>'
        + "".join(_flow(f"f{i}", a, b) for i, (a, b) in enumerate(pairwise(ids)))
    )
    instance, _ = Instance.start(definition, data={"n": 1}, now=T0, functions={})
    [ask] = instance.user_tasks()

    with pytest.raises(ScriptError, match="variable 'keys' cannot be stored"):
        instance.complete_task(ask.task_id, {}, now=T0, functions={})

    script = next(t for t in instance.workflow.get_tasks() if t.task_spec.bpmn_id == "work")
    assert script.data == {"n": 1}
    Instance.load(definition, instance.dump())


# --- timers predicted behind an event-based gateway ------------------------------------------------
def _timer(event_id: str, kind: str, expression: str) -> str:
    return (
        f'<bpmn:intermediateCatchEvent id="{event_id}"><bpmn:timerEventDefinition>'
        f'<bpmn:{kind} xsi:type="bpmn:tFormalExpression">{escape(expression)}</bpmn:{kind}>'
        "</bpmn:timerEventDefinition></bpmn:intermediateCatchEvent>"
    )


# The engine keeps one due time for all timers behind a gateway: that of the first (notes §12.4);
# the others are predicted by evaluating their expressions again.
GATEWAY = _definition(
    '<bpmn:startEvent id="start"/><bpmn:eventBasedGateway id="gateway"/>'
    + _timer("silence", "timeDuration", '"P3D"')
    + _timer("deadline", "timeDate", 'sla_due("resolution")')
    + '<bpmn:endEvent id="quiet"/><bpmn:endEvent id="late"/>'
    + _flow("f1", "start", "gateway")
    + _flow("f2", "gateway", "silence")
    + _flow("f3", "gateway", "deadline")
    + _flow("f4", "silence", "quiet")
    + _flow("f5", "deadline", "late")
)
DUE = T0 + timedelta(days=1)


def _desk(now: datetime) -> dict[str, Any]:
    def sla_due(clock: str) -> datetime:
        return DUE if clock == "resolution" else now

    return {"sla_due": sla_due}


def test_next_wake_predicts_a_gateway_timer_that_calls_a_desk_function() -> None:
    instance, _ = Instance.start(GATEWAY, data={}, now=T0, functions=_desk(T0))

    assert instance.next_wake(T0) == DUE  # with the functions of the last call


def test_next_wake_of_a_loaded_instance_takes_the_functions_it_is_given() -> None:
    instance, _ = Instance.start(GATEWAY, data={}, now=T0, functions=_desk(T0))
    loaded = Instance.load(GATEWAY, instance.dump())

    assert loaded.next_wake(T0) == T0 + timedelta(days=3)  # no desk functions: the engine's own time
    assert loaded.next_wake(T0, functions=_desk(T0)) == DUE


def test_next_wake_predicts_under_the_clock_of_now() -> None:
    definition = _definition(
        '<bpmn:startEvent id="start"/><bpmn:eventBasedGateway id="gateway"/>'
        + _timer("silence", "timeDuration", '"P3D"')
        + _timer("soon", "timeDate", "datetime.now(timezone.utc) + timedelta(hours=2)")
        + '<bpmn:endEvent id="quiet"/><bpmn:endEvent id="late"/>'
        + _flow("f1", "start", "gateway")
        + _flow("f2", "gateway", "silence")
        + _flow("f3", "gateway", "soon")
        + _flow("f4", "silence", "quiet")
        + _flow("f5", "soon", "late")
    )
    instance, _ = Instance.start(definition, data={}, now=T0, functions={})

    assert instance.next_wake(T0) == T0 + timedelta(hours=2)
