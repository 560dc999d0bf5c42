from __future__ import annotations

import pytest

from engine.errors import DefinitionError
from engine.xmlload import line_of, load_xml


def test_a_doctype_is_refused_before_parsing() -> None:
    data = b'<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n<x>&xxe;</x>'
    with pytest.raises(DefinitionError) as caught:
        load_xml(data, "evil.bpmn")
    assert str(caught.value) == "evil.bpmn:2: -: DOCTYPE and entity declarations are not allowed in diagrams"


def test_malformed_xml_names_the_line() -> None:
    with pytest.raises(DefinitionError) as caught:
        load_xml(b"<a>\n<b>\n</a>", "broken.bpmn")
    problem = caught.value.problems[0]
    assert (problem.file, problem.line) == ("broken.bpmn", 3)
    assert "malformed XML" in problem.message


def test_an_oversized_upload_is_refused_without_parsing() -> None:
    with pytest.raises(DefinitionError, match="the limit is 1,024"):
        load_xml(b"<a>" + b" " * 2000 + b"</a>", "big.bpmn", max_bytes=1024)


def test_a_100_megabyte_upload_is_refused_by_default() -> None:
    data = b"<a>" + b"x" * (100 * 1024 * 1024) + b"</a>"
    with pytest.raises(DefinitionError, match="104,857,607 bytes"):
        load_xml(data, "huge.bpmn")


def test_line_numbers_are_recovered_from_element_ids() -> None:
    root = load_xml(b'<a>\n<b id="x"/>\n\n<c id="y"/>\n</a>', "f.bpmn")
    assert (line_of(root, "x"), line_of(root, "y"), line_of(root, "missing")) == (2, 4, 1)
