"""Instance state storage: the task tree without the process definition.

The definition is stored once per deployed version (content hash) and the instance's JSON
holds only its tasks, data and events. Loading needs the definition's parsed spec and always
attaches a fresh sandboxed script engine: :class:`DeskWorkflow` refuses any other engine, and
the stock ``deserialize_json`` path is closed, so an instance read from the database can never
run with SpiffWorkflow's default, unsandboxed ``PythonScriptEngine`` (notes §12.2).
"""

from __future__ import annotations

import json
import threading
from datetime import date
from typing import Any
from uuid import UUID

from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.serializer.default.workflow import BpmnWorkflowConverter, WorkflowConverter
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG
from SpiffWorkflow.util.task import TaskState

from .errors import EngineError
from .sandbox import SandboxedScriptEngine

STATE_FORMAT = "lanedesk-1"
_SPIFF_VERSION = "1.5"


class DeskWorkflow(BpmnWorkflow):
    """A BpmnWorkflow that only ever runs with a :class:`SandboxedScriptEngine`."""

    def __init__(self, spec: Any, subprocess_specs: Any = None, *, script_engine: Any, **kwargs: Any):
        _require_sandbox(script_engine)
        super().__init__(spec, subprocess_specs, script_engine=script_engine, **kwargs)

    @property
    def script_engine(self) -> SandboxedScriptEngine:
        engine: SandboxedScriptEngine = self._BpmnWorkflow__script_engine
        return engine

    @script_engine.setter
    def script_engine(self, engine: Any) -> None:
        _require_sandbox(engine)
        self._BpmnWorkflow__script_engine = engine


def _require_sandbox(engine: Any) -> None:
    if not isinstance(engine, SandboxedScriptEngine):
        raise TypeError(f"a desk workflow needs a SandboxedScriptEngine, not {type(engine).__name__}")


class _DeskWorkflowConverter(BpmnWorkflowConverter):
    """Converts the instance part of a DeskWorkflow; the spec is stored with the version."""

    def to_dict(self, workflow: Any) -> dict[str, Any]:
        dct: dict[str, Any] = WorkflowConverter.to_dict(self, workflow)
        dct["subprocesses"] = self.mapping_to_dict(workflow.subprocesses)
        dct["bpmn_events"] = self.registry.convert(workflow.bpmn_events)
        return dct

    def from_dict(self, dct: Any) -> Any:
        raise TypeError("desk instances load through engine.state.restore(), never deserialize_json")

    def restore(self, dct: dict[str, Any], spec: Any, subprocess_specs: dict[str, Any]) -> DeskWorkflow:
        workflow = DeskWorkflow(
            spec, subprocess_specs, script_engine=SandboxedScriptEngine(), deserializing=True
        )
        workflow.tasks = self.mapping_from_dict(dct["tasks"], UUID, workflow=workflow)
        workflow.task_tree = workflow.tasks.get(UUID(dct["root"]))
        self.set_default_attributes(workflow, dct)
        self.subprocesses_from_dict(dct["subprocesses"], workflow)
        workflow.bpmn_events = self.registry.restore(dct.get("bpmn_events", []))
        return workflow


def _build_serializer() -> tuple[BpmnWorkflowSerializer, _DeskWorkflowConverter]:
    registry = BpmnWorkflowSerializer.configure(SPIFF_CONFIG)
    # Dates in task data (e.g. from a script) would otherwise fail to serialize (notes §5).
    registry.register(date, lambda v: {"value": v.isoformat()}, lambda v: date.fromisoformat(v["value"]))
    converter = _DeskWorkflowConverter(DeskWorkflow, registry)
    return BpmnWorkflowSerializer(registry), converter


# The registry toggles a shared ``_encoder_mode`` flag while serializing, so each thread (web
# server threads, the worker) gets its own serializer.
_local = threading.local()


def _serializer() -> tuple[BpmnWorkflowSerializer, _DeskWorkflowConverter]:
    pair = getattr(_local, "pair", None)
    if pair is None:
        pair = _local.pair = _build_serializer()
    return pair


def dump(workflow: DeskWorkflow) -> str:
    """The instance's JSON (no process definition inside)."""
    serializer, _ = _serializer()
    # serialize_json() would add its version key and re-encode; do its two steps ourselves.
    serializer.registry._encoder_mode = True
    try:
        envelope = {"format": STATE_FORMAT, "spiff": _SPIFF_VERSION, "state": serializer.to_dict(workflow)}
        return json.dumps(envelope, cls=serializer._encoder_cls, separators=(",", ":"))
    finally:
        serializer.registry._encoder_mode = False


def restore(text: str, spec: Any, subprocess_specs: dict[str, Any]) -> DeskWorkflow:
    """Rebuild an instance from :func:`dump` output and its version's parsed spec."""
    try:
        envelope = json.loads(text)
    except ValueError as exc:
        raise EngineError(f"stored instance state is not JSON: {exc}") from None
    if envelope.get("format") != STATE_FORMAT or envelope.get("spiff") != _SPIFF_VERSION:
        # SpiffWorkflow's own migrations are broken for live subprocesses (notes §5): refuse,
        # never half-migrate.
        raise EngineError(f"stored instance state has unknown format {envelope.get('format')!r}")
    _, converter = _serializer()
    return converter.restore(envelope["state"], spec, subprocess_specs)


def waiting_elements(text: str) -> list[str]:
    """Element ids of the events a stored instance waits at (timers, messages, joins), read from
    its :func:`dump` JSON without rebuilding the workflow: cheap enough for a page view.

    Engine-internal tasks (``Start``, ``x.BoundaryEventSplit``...) are left out; unreadable or
    foreign state gives an empty list (this is a display aid, never a decision).
    """
    try:
        envelope = json.loads(text)
    except ValueError:
        return []
    if not isinstance(envelope, dict) or envelope.get("format") != STATE_FORMAT:
        return []
    state = envelope.get("state") or {}
    trees = [state.get("tasks") or {}]
    trees += [(sub or {}).get("tasks") or {} for sub in (state.get("subprocesses") or {}).values()]
    found = {
        str(task.get("task_spec"))
        for tree in trees
        for task in tree.values()
        if task.get("state") == TaskState.WAITING
    }
    return sorted(name for name in found if name and "." not in name and name not in ("Start", "End"))
