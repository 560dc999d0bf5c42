"""The script engine every diagram runs under: RestrictedPython plus size and time budgets.

SpiffWorkflow runs scripts and expressions with plain ``exec``/``eval`` (notes §6, §10.12). Here
each one is compiled by RestrictedPython under :class:`_DeskPolicy` (cached), sees only
:data:`ALLOWED_BUILTINS`, the desk functions and task data, and runs under a ``sys.settrace`` line
budget and a CPU-time limit. ``*``, ``**``, ``<<`` and ``+`` become calls that refuse to build
huge values (notes §12.2).

Not a complete sandbox (RestrictedPython says so too): C-level bombs such as
``'x'.ljust(10**10)`` or ``f'{1:>999999999}'`` are not caught. Deploying a diagram stays a
code-deployment right; this keeps mistakes and casual abuse from hurting the desk.
"""

from __future__ import annotations

import ast
import builtins
import contextvars
import json
import logging
import operator
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from types import CodeType, FrameType, MappingProxyType, SimpleNamespace
from typing import Any, Literal
from uuid import UUID

from RestrictedPython import RestrictingNodeTransformer, compile_restricted_eval, compile_restricted_exec
from RestrictedPython.Guards import (
    full_write_guard,
    guarded_iter_unpack_sequence,
    guarded_unpack_sequence,
    safe_builtins,
    safer_getattr_raise,
)
from RestrictedPython.transformer import INSPECT_ATTRIBUTES
from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine
from SpiffWorkflow.bpmn.script_engine.python_environment import BasePythonScriptEngineEnvironment
from SpiffWorkflow.bpmn.specs.event_definitions.timer import TimerEventDefinition
from SpiffWorkflow.exceptions import WorkflowException

from .clock import ClockDatetime
from .errors import SandboxViolation, ScriptError

log = logging.getLogger(__name__)

Mode = Literal["exec", "eval"]
Functions = Mapping[str, Callable[..., Any]]
MAX_ITEMS = 1_000_000  #: longest str/bytes/list/tuple an operator may build
MAX_INT_BITS = 100_000  #: largest int (~30,000 digits) an operator may build
_FILENAME = "<diagram script>"
_SYNTAX = re.compile(r"Line (\d+): (SyntaxError|IndentationError|TabError)?")
#: Refused at compile time when read (no plausible task-data field is called this).
_NEVER = {"open", "compile", "globals", "locals", "vars", "getattr", "setattr", "delattr"}
_NEVER |= {"breakpoint", "super"}
#: Absent builtins: a NameError on one is a refusal, not a typo (some may be data fields, e.g. ``id``).
_ABSENT = _NEVER | {"input", "help", "exit", "quit", "type", "object", "id", "hash", "bytes", "bytearray"}
_ABSENT |= {"memoryview", "dir", "iter", "next", "hasattr", "format", "classmethod", "staticmethod"}


def _too_big(what: str) -> SandboxViolation:
    return SandboxViolation(f"refused to build {what} (limits: {MAX_ITEMS:,} items, {MAX_INT_BITS:,} bits)")


def _sized(value: Any) -> bool:
    return isinstance(value, str | bytes | list | tuple)


def _mul(left: Any, right: Any, op: Callable[[Any, Any], Any] = operator.mul) -> Any:
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise _too_big("an integer that large")
    elif isinstance(left, int) or isinstance(right, int):
        seq, times = (right, left) if isinstance(left, int) else (left, right)
        if _sized(seq) and len(seq) * times > MAX_ITEMS:
            raise _too_big(f"a sequence of {len(seq) * times:,} items")
    return op(left, right)


def _pow(base: Any, exp: Any, mod: Any = None) -> Any:
    if (
        mod is None
        and isinstance(base, int)
        and isinstance(exp, int)
        and (base.bit_length() - 1) * exp > MAX_INT_BITS
    ):
        raise _too_big("an integer that large")
    return pow(base, exp, mod)


def _lshift(left: Any, right: Any, op: Callable[[Any, Any], Any] = operator.lshift) -> Any:
    if isinstance(left, int) and isinstance(right, int) and left and left.bit_length() + right > MAX_INT_BITS:
        raise _too_big("an integer that large")
    return op(left, right)


def _add(left: Any, right: Any, op: Callable[[Any, Any], Any] = operator.add) -> Any:
    if _sized(left) and _sized(right) and len(left) + len(right) > MAX_ITEMS:
        raise _too_big(f"a sequence of {len(left) + len(right):,} items")
    return op(left, right)


# In place, as Python does it: ``items += [x]`` extends the list other names may share.
_INPLACE: dict[str, Callable[[Any, Any], Any]] = {
    "+=": lambda left, right: _add(left, right, operator.iadd),
    "*=": lambda left, right: _mul(left, right, operator.imul),
    "**=": _pow,
    "<<=": lambda left, right: _lshift(left, right, operator.ilshift),
    "-=": operator.isub,
    "/=": operator.itruediv,
    "//=": operator.ifloordiv,
    "%=": operator.imod,
    ">>=": operator.irshift,
    "&=": operator.iand,
    "|=": operator.ior,
    "^=": operator.ixor,
}


def _range(*args: int) -> range:
    span = range(*args)
    if abs(span.stop - span.start) // abs(span.step) > MAX_ITEMS:
        raise _too_big("a range that long")
    return span


def _sum(values: Any, start: Any = 0) -> Any:
    if not isinstance(start, int | float):  # sum(lists, []) would concatenate in C, past the guards
        raise SandboxViolation("sum() adds numbers only in diagram scripts")
    return sum(values, start)


def _getattr(obj: Any, name: str) -> Any:
    if name.startswith("_") or name in INSPECT_ATTRIBUTES or name == "mro":
        raise SandboxViolation(f"attribute {name!r} is not available to diagram scripts")
    try:
        return safer_getattr_raise(obj, name)
    except NotImplementedError as exc:  # str.format & co.
        raise SandboxViolation(str(exc)) from None


def _print_(_getattr_: Any = None) -> SimpleNamespace:
    """RestrictedPython's ``print`` hook: a script's print() goes to this module's debug log."""
    return SimpleNamespace(_call_print=lambda *objects, **_: log.debug("diagram print: %s", objects))


_DROPPED = {"setattr", "delattr", "bytes", "id", "hash"}
# BaseException & co. stay out, so no script can name (and catch) the budget's _Exhausted signal.
_DROPPED |= {"BaseException", "GeneratorExit", "KeyboardInterrupt", "SystemExit"}
_ADDED = {"all", "any", "enumerate", "filter", "map", "max", "min", "reversed", "sorted", "zip"}
_ADDED |= {"dict", "frozenset", "list", "set", "tuple"}
_BUILTINS: dict[str, Any] = {k: v for k, v in safe_builtins.items() if k[0] != "_" and k not in _DROPPED}
_BUILTINS.update((k, getattr(builtins, k)) for k in _ADDED)
# Scripts see the engine clock's datetime: datetime.now() inside a step is the step's "now".
_BUILTINS.update(
    pow=_pow, range=_range, sum=_sum, datetime=ClockDatetime, timedelta=timedelta, timezone=timezone
)
#: The vocabulary scripts and expressions may use besides task data and desk functions.
ALLOWED_BUILTINS: frozenset[str] = frozenset(_BUILTINS) | {"print"}  # print goes to the debug log
_BUILTINS.update(
    _getattr_=_getattr,
    _getitem_=operator.getitem,
    _getiter_=iter,
    _write_=full_write_guard,
    _inplacevar_=lambda op, left, right: _INPLACE[op](left, right),
    _unpack_sequence_=guarded_unpack_sequence,
    _iter_unpack_sequence_=guarded_iter_unpack_sequence,
    _apply_=lambda f, *a, **kw: f(*a, **kw),
    _print_=_print_,
    _mul_=_mul,
    _pow_=_pow,
    _lshift_=_lshift,
    _add_=_add,
)


class _DeskPolicy(RestrictingNodeTransformer):
    """RestrictedPython's policy plus: guarded size operators; no import, ``finally`` or ``with``;
    bare ``except:`` read as ``except Exception:`` (so the budget's stop signal cannot be swallowed)."""

    _GUARDED = {ast.Mult: "_mul_", ast.Pow: "_pow_", ast.LShift: "_lshift_", ast.Add: "_add_"}

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        node = self.node_contents_visit(node)
        guard = self._GUARDED.get(type(node.op))
        if guard is None:
            return node
        func = ast.copy_location(ast.Name(guard, ast.Load()), node)
        return ast.copy_location(ast.Call(func=func, args=[node.left, node.right], keywords=[]), node)

    def visit_Name(self, node: ast.Name) -> Any:
        if isinstance(node.ctx, ast.Load) and node.id in _NEVER:
            self.error(node, f'"{node.id}" is not available to diagram scripts.')
        return super().visit_Name(node)

    def visit_Try(self, node: ast.Try) -> Any:
        if node.finalbody:
            self.error(node, "try/finally is not allowed in diagram scripts.")
        for handler in node.handlers:
            handler.type = handler.type or ast.copy_location(ast.Name("Exception", ast.Load()), handler)
        return super().visit_Try(node)

    def refuse(self, node: ast.stmt) -> None:
        self.error(node, f"{type(node).__name__} statements are not allowed in diagram scripts.")

    visit_With = visit_Import = visit_ImportFrom = refuse


_cache: dict[tuple[str, str], tuple[CodeType | None, tuple[str, ...]]] = {}


def _compiled(source: str, mode: Mode) -> tuple[CodeType | None, tuple[str, ...]]:
    hit = _cache.get((source, mode))
    if hit is None:
        if len(_cache) > 10_000:  # diagrams hold a bounded set of sources; this only stops a leak
            _cache.clear()
        compile_fn = compile_restricted_exec if mode == "exec" else compile_restricted_eval
        result = compile_fn(source, filename=_FILENAME, policy=_DeskPolicy)
        hit = _cache[(source, mode)] = (result.code, tuple(result.errors))
    return hit


def check_source(source: str, mode: Literal["exec", "eval"]) -> list[str]:
    """Compile ``source`` under the sandbox policy without running anything.

    Returns human-readable problems, each starting ``Line N:`` (syntax errors; refusals such as
    ``__import__``, dunder attributes, ``open``, ``import``, ``try/finally``); ``[]`` when fine.
    """
    return list(_compiled(source, mode)[1])


class _Exhausted(BaseException):
    """Raised by the trace hook. Not an ``Exception``, and scripts can only catch those."""


class _Budget:
    """The trace hook: a line budget and a CPU-time limit for script frames.

    CPython 3.11 emits no ``line`` event for a jump to the same instruction (``while True: pass``
    on one line), so script frames trace opcodes too: an opcode event at or before the previous
    one of the same frame, with no line event in between, is a loop turn and counts as a line.
    The CPU clock (~0.5 µs a read) is read every :data:`_CLOCK_EVERY` events from the start.
    """

    def __init__(self, lines: int, cpu_seconds: float) -> None:
        self.lines, self.left, self.cpu = lines, lines, cpu_seconds
        self.previous = sys.gettrace()  # pytest/coverage may have one; restored afterwards
        self.frame: FrameType | None = None  # where the last opcode event was
        self.offset = -1  # -1: a line event came since
        self.ticks = _CLOCK_EVERY
        self.deadline = time.thread_time() + cpu_seconds

    def on_call(self, frame: FrameType, event: Any, arg: Any) -> Any:
        if frame.f_code.co_filename != _FILENAME:  # desk functions are trusted and keep coverage
            return self.previous(frame, event, arg) if self.previous is not None else None
        frame.f_trace_opcodes = True
        return self.on_event(frame, event, arg)

    def on_event(self, frame: FrameType, event: Any, arg: Any) -> Any:
        if event == "opcode":
            offset, previous = frame.f_lasti, self.offset if frame is self.frame else -1
            self.frame, self.offset = frame, offset
            if offset > previous:  # straight on, or the first opcode of a line already counted
                return self._clock()
        elif event == "line":
            self.frame, self.offset = frame, -1
        elif event != "call":  # return, exception
            return self.on_event
        self.left -= 1
        if self.left <= 0:
            raise _Exhausted(f"stopped after {self.lines:,} lines (runaway loop?)")
        return self._clock()

    def _clock(self) -> Any:
        self.ticks -= 1
        if not self.ticks:
            self.ticks = _CLOCK_EVERY
            if time.thread_time() > self.deadline:
                raise _Exhausted(f"stopped after {self.cpu} s of CPU time (runaway loop?)")
        return self.on_event


#: Trace events between two reads of the CPU clock.
_CLOCK_EVERY = 64


_bound: contextvars.ContextVar[Mapping[int, Functions]] = contextvars.ContextVar(
    "lanedesk_desk_functions", default=MappingProxyType({})
)


def _trusted(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` (a desk function) as scripts call it: run with the script's trace hook off.

    Desk functions are our code and may do a lot (ORM writes, template rendering): traced, every
    Python call inside them went through the hook (688 hook calls per mail processed by the
    bundled lifecycle, 7 with this). The budget still counts the script's own lines, and its CPU
    clock keeps running across the call. A desk function never calls back what it is given; a
    callable argument is refused all the same, since it would run untraced.
    """

    def call(*args: Any, **kwargs: Any) -> Any:
        for value in (*args, *kwargs.values()):
            if callable(value):
                raise SandboxViolation(f"{_name_of(function)}() takes values, not functions")
        tracer = sys.gettrace()
        budget = getattr(tracer, "__self__", None)
        if not isinstance(budget, _Budget):  # not under a script: nothing to switch off
            return function(*args, **kwargs)
        sys.settrace(budget.previous)  # pytest's or coverage's hook, if any, keeps seeing our code
        try:
            return function(*args, **kwargs)
        finally:
            sys.settrace(tracer)

    call.__name__ = call.__qualname__ = _name_of(function)
    call.__doc__ = function.__doc__
    return call


def _name_of(function: Callable[..., Any]) -> str:
    return getattr(function, "__name__", None) or type(function).__name__


def _trusted_all(functions: Functions) -> dict[str, Callable[..., Any]]:
    return {name: _trusted(function) for name, function in functions.items()}


class SandboxedScriptEngine(PythonScriptEngine):
    """SpiffWorkflow script engine running every script and expression in the sandbox.

    Raises :class:`ScriptError` (:class:`SandboxViolation` for refusals) carrying the task's BPMN
    id and the line. Unlike the stock engine: a failed script leaves task data untouched; data
    keys starting with ``_`` are invisible to scripts; a data key named like a desk function is an
    error. Not serialized with the workflow: attach a new engine after every load (notes §12.2).
    """

    def __init__(
        self, functions: Functions | None = None, *, line_budget: int = 200_000, cpu_seconds: float = 0.5
    ) -> None:
        super().__init__(environment=_SandboxEnvironment(self))
        self.functions: Functions = _trusted_all(functions or {})
        self.line_budget, self.cpu_seconds = line_budget, cpu_seconds

    @contextmanager
    def bound(self, functions: Mapping[str, Callable[..., Any]]) -> Iterator[None]:
        """Desk functions available to scripts/expressions for the duration of one engine call
        (a contextvars.ContextVar, so concurrent threads each see their own). Merged over the
        constructor's functions."""
        current = _bound.get()
        merged = {**current.get(id(self), self.functions), **_trusted_all(functions)}
        token = _bound.set({**current, id(self): merged})
        try:
            yield
        finally:
            _bound.reset(token)

    def current_functions(self) -> Functions:
        """The desk functions visible now: the constructor's, or those of the enclosing bound()."""
        return _bound.get().get(id(self), self.functions)

    def evaluate(self, task: Any, expression: str, external_context: Mapping[str, Any] | None = None) -> Any:
        """Value of ``expression`` over the task's data; for a timer, an aware datetime becomes ISO text."""
        element_id = _element_id(task)
        result = self.run(expression, "eval", task.data, external_context, element_id)
        event = getattr(task.task_spec, "event_definition", None)
        if isinstance(result, datetime) and isinstance(event, TimerEventDefinition):
            if result.utcoffset() is None:
                message = f"timer expression {expression!r} gave a naive datetime; give it a timezone"
                raise ScriptError(message, element_id=element_id)
            return result.isoformat()
        return result

    def execute(self, task: Any, script: str, external_context: Mapping[str, Any] | None = None) -> bool:
        """Run ``script``; its new and changed variables land in ``task.data`` as with the stock engine."""
        self.run(script, "exec", task.data, external_context, _element_id(task))
        return True

    def call_service(
        self, task: Any, operation_name: str, operation_params: Mapping[str, Any], **_: Any
    ) -> str:
        """Call desk function ``operation_name`` with the evaluated parameter values; the result as
        JSON text (SpiffWorkflow's ServiceTask ``json.loads`` it into its result variable)."""
        element_id = _element_id(task)
        function = self.current_functions().get(operation_name)
        if function is None:
            raise ScriptError(
                f"service operator {operation_name!r} is not a desk function", element_id=element_id
            )
        try:
            return json.dumps(function(**{name: param["value"] for name, param in operation_params.items()}))
        except Exception as exc:
            message = f"service operator {operation_name!r} failed: {type(exc).__name__}: {exc}"
            raise ScriptError(message, element_id=element_id) from exc

    def get_error_line_number_and_content(self, script: str, err: BaseException) -> tuple[int, str]:
        """The stock version crashes on RestrictedPython's ``lineno=None``; this one gives ``(0, '')``."""
        line = getattr(err, "line", None) or getattr(err, "lineno", None) or _script_line(err) or 0
        lines = script.splitlines()
        return line, lines[line - 1] if 0 < line <= len(lines) else ""

    def run(
        self,
        source: str,
        mode: Mode,
        data: dict[str, Any],
        external: Mapping[str, Any] | None,
        element_id: str = "",
    ) -> Any:
        """Compile (cached) and run ``source`` over ``data``; for ``exec``, write its variables back."""
        code, errors = _compiled(source, mode)
        if code is None:
            found = _SYNTAX.match(errors[0])
            cls = ScriptError if found and found.group(2) else SandboxViolation
            raise cls("; ".join(errors), element_id=element_id, line=int(found.group(1)) if found else None)
        functions = self.current_functions()
        if clash := functions.keys() & data.keys():
            message = (
                f"task data {sorted(clash)} would hide the desk function(s) of that name; rename the field"
            )
            raise ScriptError(message, element_id=element_id)
        namespace: dict[str, Any] = {**(external or {}), **functions, **data}
        for key in [k for k in namespace if k[:1] == "_"]:  # such names could replace the guards
            del namespace[key]
        namespace["__builtins__"] = _BUILTINS
        budget = _Budget(self.line_budget, self.cpu_seconds)
        sys.settrace(budget.on_call)
        try:
            result = eval(code, namespace)  # exec-mode code gives None, as exec() would
        except (_Exhausted, Exception) as exc:
            raise _runtime_error(exc, source, mode, element_id) from None
        finally:
            sys.settrace(budget.previous)
        if mode == "exec":  # as TaskDataEnvironment: no builtins, callables, functions or context
            written = {
                key: value
                for key, value in namespace.items()
                if not (key.startswith("_") or key in functions or key in (external or {}))
            }
            for key, value in written.items():  # refuse before anything changes
                if not callable(value) and (problem := unstorable(key, value)):
                    raise ScriptError(problem, element_id=element_id)
            for key in [k for k in data if not k.startswith("_") and k not in namespace]:
                del data[key]
            for key, value in written.items():
                if callable(value):
                    data.pop(key, None)
                else:
                    data[key] = value
        return result


#: Exact types task data may hold: what comes back unchanged from engine.state.dump/restore
#: (JSON's own, and those the serializer registry converts). Tuples and sets come back as lists.
_STORABLE: frozenset[type] = frozenset({type(None), bool, int, float, str, date, timedelta, UUID})
MAX_DATA_DEPTH = 100  #: deepest nesting of lists and dicts in one variable


class _Unstorable(Exception):
    pass


def unstorable(name: str, value: Any) -> str | None:
    """Why variable ``name`` could not be stored with the instance unchanged (None when it can).

    Allowed: None, bool, int, float, str, datetime (naive or with a fixed offset), date,
    timedelta, UUID, and lists and dicts with text keys of those, at most
    :data:`MAX_DATA_DEPTH` deep and :data:`MAX_ITEMS` items in all (shared parts counted each
    time, as the JSON is written).
    """
    sizes: dict[int, int] = {}  # checked containers: items they write
    open_: set[int] = set()  # containers being checked (a cycle comes back to one)

    def walk(value: Any, where: str, depth: int) -> int:
        kind = type(value)
        if kind in _STORABLE:
            return 1
        if kind is datetime:
            if value.tzinfo is None or type(value.tzinfo) is timezone:
                return 1
            raise _Unstorable(f"{where} has the time zone {value.tzinfo!r}; use .astimezone(timezone.utc)")
        if kind is not list and kind is not dict:
            hint = "wrap it in list()" if hasattr(value, "__iter__") else "store text or a number instead"
            if kind is set or kind is frozenset:
                hint = "wrap it in sorted() or list()"
            elif kind is bytes or kind is bytearray:
                hint = "store text instead (.decode())"
            raise _Unstorable(f"{where} is of type {kind.__name__}, which task data cannot hold; {hint}")
        if id(value) in sizes:
            return sizes[id(value)]
        if id(value) in open_ or depth >= MAX_DATA_DEPTH:
            raise _Unstorable(f"{where} contains itself or is nested over {MAX_DATA_DEPTH} levels deep")
        open_.add(id(value))
        total = 1
        items = value.items() if kind is dict else enumerate(value)
        for key, item in items:
            if kind is dict and (type(key) is not str or key == "typename"):
                reason = (  # a 'typename' key makes the serializer read the dict as one of its objects
                    "the key 'typename', which the engine reserves; rename it"
                    if key == "typename"
                    else f"the key {key!r}, which would come back as text; use text keys (str(key))"
                )
                raise _Unstorable(f"{where} has {reason}")
            total += 1 if type(item) in _STORABLE else walk(item, f"{where}[{key!r}]", depth + 1)
        if total > MAX_ITEMS:
            raise _Unstorable(f"{where} holds over {MAX_ITEMS:,} values; store less")
        open_.discard(id(value))
        sizes[id(value)] = total
        return total

    try:
        walk(value, name, 0)
    except _Unstorable as exc:
        return f"variable {name!r} cannot be stored with the task: {exc}"
    return None


class _SandboxEnvironment(BasePythonScriptEngineEnvironment):
    """SpiffWorkflow also calls ``script_engine.environment.evaluate`` directly (completion and
    conditional-path conditions, message correlations): those run in the sandbox too."""

    def __init__(self, engine: SandboxedScriptEngine) -> None:
        super().__init__({})
        self.engine = engine

    def evaluate(self, expression: str, context: dict[str, Any], external_context: Any = None) -> Any:
        return self.engine.run(expression, "eval", context, external_context)

    def execute(self, script: str, context: dict[str, Any], external_context: Any = None) -> bool:
        self.engine.run(script, "exec", context, external_context)
        return True


def _element_id(task: Any) -> str:
    return str(getattr(getattr(task, "task_spec", None), "bpmn_id", None) or "")


def _script_line(exc: BaseException) -> int | None:
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if f.filename == _FILENAME]
    return lines[-1] if lines else None


def _runtime_error(exc: BaseException, source: str, mode: Mode, element_id: str) -> ScriptError:
    line, lines = _script_line(exc), source.splitlines()
    if mode == "eval":
        where = f" in expression {source!r}"
    else:
        where = f" (line {line}: {lines[line - 1].strip()!r})" if line and line <= len(lines) else ""
    if isinstance(exc, _Exhausted | ScriptError):  # our guards, or a desk function refusing
        cls = ScriptError if type(exc) is ScriptError else SandboxViolation
        return cls(f"{exc.args[0]}{where}", element_id=element_id, line=line)
    if isinstance(exc, NameError) and exc.name in _ABSENT:
        return SandboxViolation(
            f"{exc.name!r} is not available to diagram scripts{where}", element_id=element_id, line=line
        )
    return ScriptError(f"{type(exc).__name__}: {exc}{where}", element_id=element_id, line=line)


def as_script_error(exc: BaseException) -> ScriptError:
    """Turn whatever SpiffWorkflow raised out of wf.do_engine_steps()/task.run()/refresh_timers
    (typically WorkflowTaskException wrapping our error, or our error itself) into a ScriptError
    (or SandboxViolation when the sandbox refused) carrying element_id (the BPMN id of the task,
    task.task_spec.bpmn_id) and line where known, with a clear message."""
    spec = getattr(getattr(exc, "task", None), "task_spec", None) or getattr(exc, "task_spec", None)
    element_id = str(getattr(spec, "bpmn_id", None) or "")
    seen: BaseException | None = exc
    while seen is not None:  # ours, possibly behind SpiffWorkflow's wrappers
        if isinstance(seen, ScriptError):
            if seen.element_id or not element_id:
                return seen
            cls = SandboxViolation if isinstance(seen, SandboxViolation) else ScriptError
            return cls(str(seen.args[0]), element_id=element_id, line=seen.line)
        seen = seen.__cause__ or seen.__context__
    line = getattr(exc, "line_number", None) or getattr(exc, "lineno", None) or _script_line(exc)
    message = (
        str(exc.args[0])
        if isinstance(exc, WorkflowException) and exc.args
        else f"{type(exc).__name__}: {exc}"
    )
    return ScriptError(message, element_id=element_id, line=line if isinstance(line, int) and line else None)
