"""The engine's exception hierarchy. Carries no HTTP codes; callers map them."""

from __future__ import annotations

from dataclasses import dataclass


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a diagram, printable as ``FILE:LINE: ELEMENT_ID: message``."""

    file: str
    line: int
    element_id: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.element_id or '-'}: {self.message}"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: the studio marks ``element_id`` and lists ``text``."""
        return {"line": self.line, "element_id": self.element_id, "message": self.message, "text": str(self)}


class DefinitionError(EngineError):
    """A diagram that cannot be loaded or would not run as drawn."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class FormInvalid(EngineError):
    """Submitted form data failed the task's form; ``errors`` maps field id to message."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


class TaskNotReady(EngineError):
    """The task does not exist in this instance or is no longer waiting for a person."""


class ScriptError(EngineError):
    """A script or expression in the diagram failed or was refused by the sandbox."""

    def __init__(self, message: str, *, element_id: str = "", line: int | None = None):
        self.element_id = element_id
        self.line = line
        where = f"{element_id}: " if element_id else ""
        super().__init__(f"{where}{message}")


class SandboxViolation(ScriptError):
    """A script tried something the sandbox forbids (imports, dunder walks, runaway loops...)."""
