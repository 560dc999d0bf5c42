from __future__ import annotations

import pytest

from engine.errors import DefinitionError
from engine.xmlload import line_of, load_xml


def test_a_doctype_is_refused_before_parsing() -> None:
    data = b'<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n<x>&xxe;</x>'
    with pytest.raises(DefinitionError) as caught:
        load_xml(data, "evil.bpmn")
    assert str(caught.value) == "evil.bpmn:2: -: DOCTYPE and entity declarations are not allowed in diagrams"


@pytest.mark.parametrize(
    ("encoding", "doctype"),
    [
        ("utf-16", '<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n<x>&xxe;</x>'),
        ("utf-16-be", '<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n<x>&xxe;</x>'),
        ("utf-32", '<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n<x>&xxe;</x>'),
        ("utf-16", '<!DOCTYPE x SYSTEM "http://evil.example/x.dtd">\n<x/>'),
        ("utf-16", "<!DOCTYPE x>\n<x/>"),
    ],
)
def test_a_doctype_in_another_encoding_is_refused_too(encoding: str, doctype: str) -> None:
    text = f'<?xml version="1.0" encoding="{encoding.upper()}"?>\n{doctype}'
    data = text.encode(encoding) if encoding != "utf-16-be" else b"\xfe\xff" + text.encode(encoding)
    assert b"<!DOCTYPE" not in data
    with pytest.raises(DefinitionError) as caught:
        load_xml(data, "evil.bpmn")
    assert str(caught.value) == "evil.bpmn:1: -: DOCTYPE and entity declarations are not allowed in diagrams"


def test_a_utf16_diagram_without_a_doctype_still_loads() -> None:
    data = '<?xml version="1.0" encoding="UTF-16"?>\n<a><b id="x"/></a>'.encode("utf-16")
    assert line_of(load_xml(data, "ok.bpmn"), "x") == 2


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
