from __future__ import annotations

from typing import Any

import pytest

from engine.errors import FormInvalid
from engine.forms import validate_submission


def field(fid: str, kind: str = "string", **extra: Any) -> dict[str, Any]:
    return {
        "id": fid,
        "label": fid,
        "type": kind,
        "default": extra.pop("default", None),
        "date_pattern": None,
        "options": extra.pop("options", []),
        "validation": extra.pop("validation", {}),
        "properties": {},
    }


TRIAGE = [
    field(
        "category",
        "enum",
        options=[["question", "Question"], ["incident", "Incident"]],
        validation={"required": None},
    ),
    field("priority", "enum", default="P3", options=[["P1", "P1"], ["P3", "P3"]]),
    field("summary", validation={"required": None, "maxlength": "20"}),
    field("minutes", "long", validation={"min": "0", "max": "600"}),
    field("callback", "boolean"),
    field("due", "date"),
    field("code", validation={"pattern": "[A-Z]{3}-[0-9]+"}),
]


def test_valid_data_is_typed_and_defaults_fill_blanks() -> None:
    cleaned = validate_submission(
        TRIAGE,
        {
            "category": "incident",
            "summary": "VPN down",
            "minutes": "45",
            "callback": "on",
            "due": "2026-03-04",
            "code": "ABC-12",
        },
    )
    assert cleaned == {
        "category": "incident",
        "priority": "P3",
        "summary": "VPN down",
        "minutes": 45,
        "callback": True,
        "due": "2026-03-04",
        "code": "ABC-12",
    }


def test_every_field_error_is_reported_at_once() -> None:
    with pytest.raises(FormInvalid) as caught:
        validate_submission(
            TRIAGE,
            {
                "category": "spam",
                "summary": "x" * 21,
                "minutes": "lots",
                "callback": "perhaps",
                "due": "next week",
                "code": "abc",
                "admin": True,
            },
        )
    assert caught.value.errors == {
        "admin": "is not a field of this form",
        "category": "must be one of: question, incident",
        "summary": "must be at most 20 characters",
        "minutes": "must be a whole number",
        "callback": "must be true or false",
        "due": "must be a date (YYYY-MM-DD)",
        "code": "has the wrong format",
    }


def test_missing_required_fields_are_named() -> None:
    with pytest.raises(FormInvalid) as caught:
        validate_submission(TRIAGE, {})
    assert caught.value.errors == {"category": "is required", "summary": "is required"}


@pytest.mark.parametrize("value", ["-1", "601", 3.5, True])
def test_numbers_out_of_range_or_of_the_wrong_type_are_refused(value: Any) -> None:
    with pytest.raises(FormInvalid) as caught:
        validate_submission(TRIAGE, {"category": "question", "summary": "s", "minutes": value})
    assert set(caught.value.errors) == {"minutes"}


def test_a_readonly_field_keeps_its_default() -> None:
    fields = [field("source", default="email", validation={"readonly": None})]
    assert validate_submission(fields, {"source": "forged"}) == {"source": "email"}
