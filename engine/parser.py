"""SpiffBpmnParser extended to read Camunda 7 form fields on user tasks.

The form is kept in ``task_spec.extensions['form']`` as a list of plain dicts, so it survives
SpiffWorkflow's serializer with no extra converter and the Spiff extensions (pre/post scripts,
properties, instructions) are kept too (notes/spiffworkflow.md §12.3).
"""

from __future__ import annotations

from typing import Any

from lxml import etree
from SpiffWorkflow.bpmn.parser.BpmnParser import full_tag
from SpiffWorkflow.spiff.parser.process import VALIDATOR, SpiffBpmnParser
from SpiffWorkflow.spiff.parser.task_spec import UserTaskParser
from SpiffWorkflow.spiff.specs.defaults import UserTask

CAMUNDA_NS = "http://camunda.org/schema/1.0/bpmn"
_C = f"{{{CAMUNDA_NS}}}"


def read_form_fields(node: etree._Element) -> list[dict[str, Any]]:
    """The ``camunda:formData/camunda:formField`` children of a task node, as plain dicts.

    Each dict: ``id, label, type, default, options [(id, name)], validation {name: config},
    properties {id: value}, date_pattern``.
    """
    fields: list[dict[str, Any]] = []
    for xml_field in node.iter(f"{_C}formField"):
        field: dict[str, Any] = {
            "id": xml_field.get("id") or "",
            "label": xml_field.get("label") or xml_field.get("id") or "",
            "type": xml_field.get("type") or "string",
            "default": xml_field.get("defaultValue"),
            "date_pattern": xml_field.get("datePattern"),
            "options": [],
            "validation": {},
            "properties": {},
        }
        for child in xml_field:
            if child.tag == f"{_C}value":
                field["options"].append([child.get("id") or "", child.get("name") or child.get("id") or ""])
            elif child.tag == f"{_C}validation":
                for constraint in child:
                    if constraint.get("name"):
                        field["validation"][constraint.get("name")] = constraint.get("config")
            elif child.tag == f"{_C}properties":
                for prop in child:
                    if prop.get("id"):
                        field["properties"][prop.get("id")] = prop.get("value")
        fields.append(field)
    return fields


class DeskUserTaskParser(UserTaskParser):
    """Spiff's user task parser plus Camunda form fields."""

    def parse_extensions(self, node: Any = None) -> dict[str, Any]:
        # The base TaskParser assigns this dict to ``task_spec.extensions`` after create_task.
        extensions: dict[str, Any] = super().parse_extensions(node)
        fields = read_form_fields(self.node if node is None else node)
        if fields:
            extensions["form"] = fields
        return extensions


class DeskParser(SpiffBpmnParser):
    """The one parser the desk uses: Spiff extensions, Camunda forms, XSD validation on."""

    OVERRIDE_PARSER_CLASSES = {
        **SpiffBpmnParser.OVERRIDE_PARSER_CLASSES,
        full_tag("userTask"): (DeskUserTaskParser, UserTask),
    }

    def __init__(self) -> None:
        super().__init__(validator=VALIDATOR)
