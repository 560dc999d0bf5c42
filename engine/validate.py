"""Deploy-time validation of a process owner's diagram: every problem, with element and line.

``validate`` runs the tree lints (:mod:`engine.lint`), the checks of scripts, expressions and
timers below, and SpiffWorkflow's own parse, and returns every problem found, sorted by line.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import re
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from lxml import etree
from SpiffWorkflow.bpmn.parser.ValidationException import ValidationException
from SpiffWorkflow.bpmn.specs.event_definitions.timer import TimerEventDefinition
from SpiffWorkflow.spiff.parser.process import VALIDATOR

from .errors import DefinitionError, Problem
from .lint import LINTS, SPIFF_NS, Scope, bpmn, kind, lane_slug, local, source_line
from .parser import DeskParser
from .sandbox import ALLOWED_BUILTINS, check_source
from .xmlload import line_of, load_xml

__all__ = ["Vocabulary", "executable_process_id", "lane_slug", "validate"]

_SCHEMA = "not valid BPMN: "
_NAMESPACES = {
    "{http://www.omg.org/spec/BPMN/20100524/MODEL}": "bpmn:",
    "{http://www.omg.org/spec/BPMN/20100524/DI}": "bpmndi:",
    "{http://spiffworkflow.org/bpmn/schema/1.0/core}": "spiffworkflow:",
    "{http://camunda.org/schema/1.0/bpmn}": "camunda:",
}


@dataclass(frozen=True)
class Vocabulary:
    """What a diagram may refer to: desk functions, their literal choices, lanes' groups, messages."""

    #: Desk operations and expression functions callable from scripts and expressions.
    functions: Mapping[str, inspect.Signature]
    #: (function, parameter) -> the literal values that parameter accepts.
    literal_choices: Mapping[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    #: Lane name -> agent group slug, None when there is no such group.
    group_for_lane: Callable[[str], str | None] = lane_slug
    #: Messages the desk sends into instances (empty: message names are not checked).
    message_names: frozenset[str] = frozenset()


def validate(
    data: bytes, filename: str, vocabulary: Vocabulary, *, process_id: str | None = None
) -> list[Problem]:
    """Every problem found in the diagram ``data``, sorted by line; ``[]`` means it can be deployed.

    ``process_id`` names the process to deploy when the file has several executable ones.
    Never raises for bad input: unreadable XML, schema errors and engine failures all come
    back as :class:`Problem` objects (``FILE:LINE: ELEMENT_ID: message``).
    """
    try:
        root = load_xml(data, filename)
    except DefinitionError as exc:
        return sorted(exc.problems)
    try:
        return _validate_tree(root, filename, vocabulary, process_id)
    except Exception as exc:  # a bug of ours must still come back as an answer, not a traceback
        return [Problem(filename, 1, "", f"internal error while validating ({exc!r}); please report it")]


def executable_process_id(root: etree._Element, filename: str = "", process_id: str | None = None) -> str:
    """The id of the process to run from this document.

    That is ``process_id`` when given (it must exist and be executable), otherwise the one
    executable process that no call activity calls. Raises :class:`DefinitionError` when there
    is no such process, or several.
    """
    ids, problems = _select(root, filename, process_id)
    if problems:
        raise DefinitionError(problems)
    return ids[0]


def _validate_tree(
    root: etree._Element, filename: str, vocabulary: Vocabulary, process_id: str | None
) -> list[Problem]:
    selected, problems = _select(root, filename, process_id)
    scope = Scope(root, filename, _processes_in_scope(root, selected), vocabulary)
    for check in (*LINTS, check_code, check_timers, check_services):
        try:
            problems.extend(check(scope))
        except Exception as exc:
            problems.append(
                Problem(filename, 1, "", f"internal error in {check.__name__} ({exc!r}); please report it")
            )
    reported = {p.element_id for p in problems}
    # The tree lints run first: SpiffWorkflow's XSD pre-processing renames elements in place.
    for problem in _spiff_problems(root, filename, selected):
        # The engine stops at its first error and says less than the lints about the same element;
        # when it cannot name the element, the lints' problems usually cover it (data stores...).
        named = problem.element_id not in reported if problem.element_id else not problems
        if named or problem.message.startswith(_SCHEMA):
            problems.append(problem)
    # One problem per output line, four fields: names and engine messages may hold newlines, and a
    # broken diagram may have an id with blanks (which the schema check reports).
    return sorted(
        {
            Problem(p.file, p.line, "_".join(p.element_id.split()), " ".join(p.message.split()))
            for p in problems
        }
    )


def _select(root: etree._Element, filename: str, process_id: str | None) -> tuple[list[str], list[Problem]]:
    processes = {p.get("id") or "": p for p in root.iter(bpmn("process"))}
    executable = [pid for pid, p in processes.items() if p.get("isExecutable", "true") == "true"]
    line = source_line(root) or 1
    if process_id is not None:
        if process_id not in processes:
            known = ", ".join(sorted(processes)) or "none"
            return [], [
                Problem(
                    filename, line, "", f"there is no process '{process_id}' in this file (it has: {known})"
                )
            ]
        if process_id not in executable:
            message = 'the process is not executable; set isExecutable="true" on it'
            return [], [Problem(filename, line_of(root, process_id), process_id, message)]
        return [process_id], []
    called = {ca.get("calledElement") for ca in root.iter(bpmn("callActivity"))}
    candidates = [pid for pid in executable if pid not in called]
    if len(candidates) == 1:
        return candidates, []
    if not candidates:
        message = 'no executable process in this file; set isExecutable="true" on the ticket process'
        return [], [Problem(filename, line, "", message)]
    message = (
        f"{len(candidates)} executable processes ({', '.join(candidates)}); name the one to deploy, "
        'or set isExecutable="false" on the others'
    )
    return candidates, [Problem(filename, line, "", message)]


def _processes_in_scope(root: etree._Element, selected: list[str]) -> list[etree._Element]:
    """The selected processes and those they call, transitively; every process when none is selected."""
    by_id = {p.get("id"): p for p in root.iter(bpmn("process"))}
    if not selected:
        return list(by_id.values())
    todo, seen = list(selected), []
    while todo:
        process = by_id.get(todo.pop())
        if process is not None and process not in seen:
            seen.append(process)
            todo += [ca.get("calledElement") or "" for ca in process.iter(bpmn("callActivity"))]
    return seen


def _spiff_problems(root: etree._Element, filename: str, selected: list[str]) -> list[Problem]:
    """SpiffWorkflow's own verdict: the XSD, then parsing each selected process and its callees."""
    parser = DeskParser()
    problems: list[Problem] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notes from the library are not the author's problem
        try:
            parser.add_bpmn_xml(root, filename=filename)
        except Exception as exc:
            return _exception_problems(exc, root, filename)
        for pid in selected:
            try:
                parser.get_spec(pid)
                parser.get_subprocess_specs(pid)
            except Exception as exc:
                problems += _exception_problems(exc, root, filename)
    return problems


def _exception_problems(exc: Exception, root: etree._Element, filename: str) -> list[Problem]:
    if isinstance(exc, ValidationException):
        if not exc.id and isinstance(exc.line_number, int):
            return _schema_problems(root, filename, exc)
        element_id = str(exc.id or "")
        line = exc.line_number if isinstance(exc.line_number, int) else line_of(root, element_id)
        text = str(exc.args[0] if exc.args else exc).strip().rstrip(".")
        return [Problem(filename, line, element_id, f"the engine refuses this: {_shorten(text)}")]
    node = _node_in_traceback(exc)
    element_id = (node.get("id") or "") if node is not None else ""
    line = (source_line(node) if node is not None else 0) or 1
    message = f"the engine failed to load this ({type(exc).__name__}: {exc}); change or remove this element"
    return [Problem(filename, int(line), element_id, message)]


def _schema_problems(root: etree._Element, filename: str, exc: ValidationException) -> list[Problem]:
    """Every XSD error of the last validation (SpiffWorkflow's exception carries only the last)."""
    entries = [e for e in VALIDATOR.validator.error_log if e.level_name == "ERROR"]
    if not entries:
        return [Problem(filename, int(exc.line_number), "", f"{_SCHEMA}{_shorten(str(exc.args[0]))}")]
    by_line = {}
    for el in root.iter():
        if isinstance(el.tag, str) and el.get("id") and source_line(el) not in by_line:
            by_line[source_line(el)] = el.get("id") or ""
    return [
        Problem(filename, e.line or 1, by_line.get(e.line, ""), f"{_SCHEMA}{_shorten(e.message)}")
        for e in entries
    ]


def _shorten(text: str) -> str:
    for uri, prefix in _NAMESPACES.items():
        text = text.replace(uri, prefix)
    text = re.sub(r"<Element (\S+) at 0x[0-9a-f]+>", r"\1", text)  # lxml reprs in engine messages
    return text.strip().rstrip(". ")


def _node_in_traceback(exc: BaseException) -> etree._Element | None:
    """The innermost BPMN node a SpiffWorkflow parser was working on when ``exc`` was raised."""
    found = None
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        node = getattr(frame.f_locals.get("self"), "node", None)
        if isinstance(node, etree._Element) and node.get("id") and local(node):
            found = node
    return found


# --- Scripts, expressions and timers -------------------------------------------------------------

Mode = Literal["exec", "eval"]

#: Where code lives in a diagram: tag -> (mode, what to call it in messages).
_CODE_SITES: dict[str, tuple[Mode, str]] = {
    bpmn("conditionExpression"): ("eval", "condition"),
    bpmn("condition"): ("eval", "condition"),
    bpmn("loopCondition"): ("eval", "loop condition"),
    bpmn("completionCondition"): ("eval", "completion condition"),
    bpmn("loopCardinality"): ("eval", "loop cardinality"),
    f"{{{SPIFF_NS}}}messagePayload": ("eval", "message payload"),
    f"{{{SPIFF_NS}}}preScript": ("exec", "pre-script"),
    f"{{{SPIFF_NS}}}postScript": ("exec", "post-script"),
}
_TIMER_HINT = 'write a quoted ISO value such as "PT4H", or a desk function such as sla_due("first_response")'
_BARE_ISO = re.compile(
    r"(R\d*/)?(P(?=\D*\d)[\dYMWDTHS.,]+|\d{4}-?\d\d-?\d\d(T[\d:.]+)?(Z|[+-]\d\d(:?\d\d)?)?)(/\S*)?"
)
_DURATION = re.compile(r"P(?!$)(\d+([.,]\d+)?[YMWD])*(T(\d+([.,]\d+)?[HMS])+)?", re.IGNORECASE)


def code_problems(source: str, mode: Mode, vocabulary: Vocabulary) -> list[tuple[int, str]]:
    """Problems in one script (``exec``) or expression (``eval``): ``(line within source, message)``.

    Checks Python syntax, the sandbox's compile-time rules, and
    every call of a bare name: it must be a desk function called with arguments that fit its
    signature (and its literal choices), an allowed builtin, or a name the script bound earlier.
    """
    text, first = source, 1
    if mode == "eval":  # eval() ignores surrounding blank space, and so do we
        text, first = source.strip(), 1 + source[: len(source) - len(source.lstrip())].count("\n")
    try:
        tree = ast.parse(text, mode=mode)
    except SyntaxError as exc:
        return [(first + (exc.lineno or 1) - 1, f"not valid Python: {exc.msg}")]
    found = [(first + offset - 1, message) for offset, message in _sandbox_problems(text, mode)]
    refused = {name for _, message in found for name in re.findall(r'"(\w+)"', message)}
    bindings, builtins = _bindings(tree), ALLOWED_BUILTINS
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id not in refused:
            found += [
                (first + node.lineno - 1, m) for m in _call_problems(node, bindings, builtins, vocabulary)
            ]
    return found


def _sandbox_problems(text: str, mode: Mode) -> list[tuple[int, str]]:
    try:
        messages = check_source(text, mode)
    except Exception as exc:
        return [(1, f"the sandbox could not compile this ({exc!r})")]
    matches = [(re.match(r"Line (\d+): (.*)", m, re.DOTALL), m) for m in messages]
    return [(int(match[1]), match[2]) if match else (1, m) for match, m in matches]


def _bindings(tree: ast.AST) -> dict[str, list[tuple[int, int]]]:
    """Where each name is bound in a script: assignments, loop targets, defs, parameters."""
    found: dict[str, list[tuple[int, int]]] = {}
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names = [node.id]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names = [node.name]
        elif isinstance(node, ast.arg):
            names = [node.arg]
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names = [node.name]
        elif isinstance(node, ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp):
            # Bound before the element expression runs, though written after it.
            targets = (n for gen in node.generators for n in ast.walk(gen.target))
            names = [n.id for n in targets if isinstance(n, ast.Name)]
        for name in names:
            found.setdefault(name, []).append((getattr(node, "lineno", 0), getattr(node, "col_offset", 0)))
    return found


def _call_problems(
    call: ast.Call,
    bindings: dict[str, list[tuple[int, int]]],
    builtins: frozenset[str],
    vocabulary: Vocabulary,
) -> list[str]:
    assert isinstance(call.func, ast.Name)
    name = call.func.id
    if name in vocabulary.functions:
        return _argument_problems(call, name, vocabulary)
    if name in builtins or any(at < (call.lineno, call.col_offset) for at in bindings.get(name, ())):
        return []
    close = difflib.get_close_matches(name, [*vocabulary.functions, *builtins], n=1)
    hint = f"did you mean {close[0]}()? " if close else ""
    known = ", ".join(sorted(vocabulary.functions)) or "none"
    return [f"{name}() is neither a desk function nor an allowed builtin; {hint}desk functions: {known}"]


def _argument_problems(call: ast.Call, name: str, vocabulary: Vocabulary) -> list[str]:
    signature = vocabulary.functions[name]
    if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
        return []  # *args / **kwargs: nothing to check before run time
    try:
        bound = signature.bind(*call.args, **{k.arg: k.value for k in call.keywords if k.arg})
    except TypeError as exc:
        return [f"{ast.unparse(call)}: {exc}; call it as {name}{_plain(signature)}"]
    found = []
    for param, value in bound.arguments.items():
        choices = vocabulary.literal_choices.get((name, param))
        if choices and isinstance(value, ast.Constant) and value.value not in choices:
            found.append(f"{ast.unparse(call)}: {param} must be one of {', '.join(sorted(choices))}")
    return found


def _plain(signature: inspect.Signature) -> inspect.Signature:
    """``(group, reason='')``: a signature as authors write calls, without annotations."""
    params = [p.replace(annotation=p.empty) for p in signature.parameters.values()]
    return signature.replace(parameters=params, return_annotation=signature.empty)


def _code_sites(scope: Scope) -> Iterator[tuple[etree._Element, str, Mode, str]]:
    for task in scope.iter("scriptTask"):
        scripts = [child for child in task if local(child) == "script"]  # the engine runs the last one
        if scripts and (scripts[-1].text or "").strip():
            yield scripts[-1], scripts[-1].text or "", "exec", "script"
    payloads = [
        el for m in scope.root.iter(bpmn("message")) for el in m.iter(f"{{{SPIFF_NS}}}messagePayload")
    ]
    for el in [el for process in scope.processes for el in process.iter(*_CODE_SITES)] + payloads:
        if (el.text or "").strip():
            mode, what = _CODE_SITES[el.tag]
            yield el, el.text or "", mode, what


def check_code(scope: Scope) -> Iterator[Problem]:
    """Scripts, conditions, payloads and pre/post scripts: syntax, sandbox rules, function calls."""
    for task in scope.iter("scriptTask"):
        if not any(local(c) == "script" and (c.text or "").strip() for c in task):
            yield scope.problem(task, "the script task has no script; write the Python it should run")
    for el, source, mode, what in _code_sites(scope):
        for offset, message in code_problems(source, mode, scope.vocabulary):
            hint = "; scripts and expressions are Python" if message.startswith("not valid Python") else ""
            yield scope.problem(el, f"{what}: {message}{hint}", line=(source_line(el) or 1) + offset - 1)


def check_timers(scope: Scope) -> Iterator[Problem]:
    """Timer texts are Python expressions giving ISO 8601 values: quoted, valid, with offsets."""
    for definition in scope.iter("timerEventDefinition"):
        kinds = ("timeDate", "timeDuration", "timeCycle")  # the engine takes the first, in this order
        spec = next((el for k in kinds for el in definition.iter(bpmn(k))), None)
        text = (spec.text or "").strip() if spec is not None else ""
        if spec is None or not text:
            yield scope.problem(definition, f"the timer has no time; {_TIMER_HINT}")
        elif len(text) < 80 and _BARE_ISO.fullmatch(text):
            yield scope.problem(spec, f'timer {text} is not a Python expression; quote it: "{text}"')
        elif code := code_problems(spec.text or "", "eval", scope.vocabulary):
            for offset, message in code:
                yield scope.problem(
                    spec, f"timer: {message}; {_TIMER_HINT}", line=(source_line(spec) or 1) + offset - 1
                )
        elif isinstance(expression := ast.parse(text, mode="eval").body, ast.Constant):
            for message in _iso_problems(local(spec), expression.value):
                yield scope.problem(spec, message)


def _iso_problems(spec: str, value: object) -> Iterator[str]:
    if not isinstance(value, str):
        yield f"the timer must give ISO 8601 text, not {value!r}; {_TIMER_HINT}"
    elif spec == "timeDuration" and not _duration_ok(value):
        yield f'"{value}" is not an ISO 8601 duration of at most 100 years; write one such as "PT4H" or "P1D"'
    elif spec == "timeCycle" and not _cycle_ok(value):
        yield f'"{value}" is not an ISO 8601 cycle; write one such as "R3/PT1H" (dates with a UTC offset)'
    elif spec == "timeDate" and _aware(value) is None:
        yield f'"{value}" is not an ISO 8601 date-time; write one such as "2025-01-01T09:00:00Z"'
    elif spec == "timeDate" and not _aware(value):
        yield f'"{value}" has no UTC offset, so it would fire in the server\'s timezone; write "{value}Z"'


def _aware(text: str) -> bool | None:
    """Whether an ISO date-time carries a UTC offset; None when it is not a date-time at all."""
    try:
        return datetime.fromisoformat(text).tzinfo is not None
    except ValueError:
        return None


def _duration_ok(text: str) -> bool:
    # The engine adds months one by one (notes §3): an absurd length would hang a worker, not fail.
    try:
        parts = TimerEventDefinition.parse_iso_duration(text)
    except Exception:  # SpiffWorkflow raises a bare Exception('Invalid duration')
        return False
    weights = {"years": 366, "months": 31, "weeks": 7, "days": 1, "hours": 1 / 24, "minutes": 1 / 1440}
    days = sum(float(parts.get(unit, 0)) * weight for unit, weight in weights.items())
    return _DURATION.fullmatch(text) is not None and days + float(parts.get("seconds", 0)) / 86400 <= 36600


def _cycle_ok(text: str) -> bool:
    """``R[n]/duration``, ``R[n]/start/duration`` or ``R[n]/duration/end``, as the engine reads them."""
    match = re.fullmatch(r"R\d*/([^/]+)(?:/([^/]+))?", text, re.IGNORECASE)
    if match is None:
        return False
    parts = [p for p in match.groups() if p is not None]
    durations = [p for p in parts if p.upper().startswith("P")]
    dates = [p for p in parts if not p.upper().startswith("P")]
    return len(durations) == 1 and _duration_ok(durations[0]) and all(_aware(d) for d in dates)


def check_services(scope: Scope) -> Iterator[Problem]:
    """Service tasks name a desk operation and pass it parameters it takes."""
    functions = scope.vocabulary.functions
    known = ", ".join(sorted(functions)) or "none"
    for task in scope.iter("serviceTask"):
        operator = task.find(f"{bpmn('extensionElements')}/{{{SPIFF_NS}}}serviceTaskOperator")
        name = operator.get("id") if operator is not None else None
        if operator is None or name is None:
            yield scope.problem(
                task, f"{kind(task)} has no operator; set spiffworkflow:serviceTaskOperator to one of {known}"
            )
        elif name not in functions:
            yield scope.problem(operator, f"operator '{name}' is not a desk operation; use one of {known}")
        else:
            # The engine evaluates each parameter value as an expression and calls the operator
            # with them as keywords: check exactly that call.
            params = [(p.get("id"), p.get("value")) for p in operator.iter(f"{{{SPIFF_NS}}}parameter")]
            call = f"{name}({', '.join(f'{pid}=({value})' for pid, value in params)})"
            for _, message in code_problems(call, "eval", scope.vocabulary):
                yield scope.problem(operator, f"operator parameters: {message}")
