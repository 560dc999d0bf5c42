"""Server-side validation of user-task form submissions against Camunda form fields."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

from .errors import FormInvalid

FIELD_TYPES = frozenset({"string", "long", "boolean", "date", "enum"})
CONSTRAINTS = frozenset({"required", "readonly", "min", "max", "minlength", "maxlength", "pattern"})
_TRUE = {"true", "on", "yes", "1"}
_FALSE = {"false", "off", "no", "0", ""}


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _coerce(field: dict[str, Any], value: Any) -> Any:
    """Convert one submitted value to the field's type, raising ValueError with the reason."""
    kind = field["type"]
    if kind == "long":
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("must be a whole number")
        try:
            return int(str(value).strip())
        except ValueError:
            raise ValueError("must be a whole number") from None
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError("must be true or false")
    if kind == "date":
        if isinstance(value, datetime):
            return value.date().isoformat()
        if isinstance(value, date):
            return value.isoformat()
        try:
            # Stored as ISO text: SpiffWorkflow's serializer has no converter for `date`.
            return date.fromisoformat(str(value).strip()).isoformat()
        except ValueError:
            raise ValueError("must be a date (YYYY-MM-DD)") from None
    if kind == "enum":
        allowed = [opt[0] for opt in field["options"]]
        if str(value) not in allowed:
            raise ValueError(f"must be one of: {', '.join(allowed)}")
        return str(value)
    if not isinstance(value, str):
        raise ValueError("must be text")
    return value


def _check(field: dict[str, Any], value: Any) -> None:
    rules = field["validation"]
    if field["type"] == "long":
        if "min" in rules and value < int(rules["min"]):
            raise ValueError(f"must be at least {rules['min']}")
        if "max" in rules and value > int(rules["max"]):
            raise ValueError(f"must be at most {rules['max']}")
    if field["type"] == "string":
        if "minlength" in rules and len(value) < int(rules["minlength"]):
            raise ValueError(f"must be at least {rules['minlength']} characters")
        if "maxlength" in rules and len(value) > int(rules["maxlength"]):
            raise ValueError(f"must be at most {rules['maxlength']} characters")
        if "pattern" in rules and not re.fullmatch(rules["pattern"], value):
            raise ValueError("has the wrong format")


def validate_submission(fields: list[dict[str, Any]], data: dict[str, Any]) -> dict[str, Any]:
    """Check ``data`` against ``fields`` and return the cleaned values, typed.

    Unknown keys are refused (a form cannot write arbitrary workflow variables); read-only
    fields keep their default; a blank optional field takes its default. Raises
    :class:`FormInvalid` with every field's error at once, so a form can show them all.
    """
    errors: dict[str, str] = {}
    known = {f["id"] for f in fields}
    for key in sorted(set(data) - known):
        errors[key] = "is not a field of this form"
    cleaned: dict[str, Any] = {}
    for field in fields:
        rules = field["validation"]
        value = data.get(field["id"])
        if "readonly" in rules and str(rules.get("readonly", "true")).lower() != "false":
            value = None
        if _blank(value) and field["type"] != "boolean":
            value = field.get("default")
        if _blank(value) and field["type"] != "boolean":
            if "required" in rules and str(rules.get("required", "true")).lower() != "false":
                errors[field["id"]] = "is required"
            continue
        if value is None and field["type"] == "boolean":
            value = field.get("default") or False
        try:
            typed = _coerce(field, value)
            _check(field, typed)
        except ValueError as exc:
            errors[field["id"]] = str(exc)
            continue
        cleaned[field["id"]] = typed
    if errors:
        raise FormInvalid(errors)
    return cleaned
