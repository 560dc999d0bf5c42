"""validate() over the shared corpus of real-world diagrams (the BPMN MIWG test suite).

Diagrams drawn by other tools are the harshest input we have: validate() must answer every
one of them with well-formed problems, never a traceback. The expected outcome per file is
recorded below, so a lint that starts passing or refusing a file shows up as a failure here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from engine.validate import validate
from tests.engine.test_validate import desk_vocabulary

CORPUS = Path(
    os.environ.get("LANEDESK_CORPUS") or Path(__file__).resolve().parents[3] / "shared" / "corpus" / "bpmn"
)
if not CORPUS.is_dir():
    pytest.skip(f"no BPMN corpus at {CORPUS} (set LANEDESK_CORPUS to its directory)", allow_module_level=True)

PRINTED = re.compile(r"^[^:]+:\d+: \S+: .+")

#: What validate() says about each corpus file. The two clean ones are plain tasks in an
#: executable pool; everything else is refused (non-executable pools, conditions that are
#: not Python, service tasks without an operator, data stores, unquoted ISO timers, ...).
EXPECTED = {
    "miwg-bpmn-io/A.1.0-export.bpmn": "failing",
    "miwg-bpmn-io/A.1.0-roundtrip.bpmn": "failing",
    "miwg-bpmn-io/A.2.0-export.bpmn": "failing",
    "miwg-bpmn-io/A.2.0-roundtrip.bpmn": "failing",
    "miwg-bpmn-io/A.2.0-rountrip.bpmn": "failing",
    "miwg-bpmn-io/A.2.1-export.bpmn": "failing",
    "miwg-bpmn-io/A.2.1-roundtrip.bpmn": "failing",
    "miwg-bpmn-io/A.3.0-export.bpmn": "failing",
    "miwg-bpmn-io/A.3.0-roundtrip.bpmn": "failing",
    "miwg-bpmn-io/A.4.0-export.bpmn": "clean",
    "miwg-bpmn-io/A.4.0-roundtrip.bpmn": "failing",
    "miwg-bpmn-io/A.4.1-export.bpmn": "clean",
    "miwg-bpmn-io/A.4.1-roundtrip.bpmn": "failing",
    "miwg-bpmn-io/B.1.0-export.bpmn": "failing",
    "miwg-bpmn-io/B.1.0-roundtrip.bpmn": "failing",
    "miwg-bpmn-io/B.2.0-export.bpmn": "failing",
    "miwg-bpmn-io/B.2.0-roundtrip.bpmn": "failing",
    "miwg-bpmn-io/C.1.0-export.bpmn": "failing",
    "miwg-bpmn-io/C.1.0-roundtrip.bpmn": "failing",
    "miwg-bpmn-io/C.1.1-export.bpmn": "failing",
    "miwg-bpmn-io/C.1.1-roundtrip.bpmn": "failing",
    "miwg-bpmn-io/C.2.0-export.bpmn": "failing",
    "miwg-bpmn-io/C.2.0-roundtrip.bpmn": "failing",
    "miwg-bpmn-io/C.3.0-export.bpmn": "failing",
    "miwg-bpmn-io/C.3.0-roundtrip.bpmn": "failing",
    "miwg-bpmn-io/C.4.0-export.bpmn": "failing",
    "miwg-bpmn-io/C.4.0-roundtrip.bpmn": "failing",
    "miwg-bpmn-io/C.5.0-export.bpmn": "failing",
    "miwg-bpmn-io/C.5.0-roundtrip.bpmn": "failing",
    "miwg-bpmn-io/C.6.0-export.bpmn": "failing",
    "miwg-bpmn-io/C.6.0-roundtrip.bpmn": "failing",
    "miwg-bpmn-io/C.7.0-export.bpmn": "failing",
    "miwg-bpmn-io/C.7.0-roundtrip.bpmn": "failing",
    "miwg-bpmn-io/C.8.0-export.bpmn": "failing",
    "miwg-bpmn-io/C.8.0-roundtrip.bpmn": "failing",
    "miwg-bpmn-io/C.8.1-export.bpmn": "failing",
    "miwg-bpmn-io/C.8.1-roundtrip.bpmn": "failing",
    "miwg-bpmn-io/C.9.0-export.bpmn": "failing",
    "miwg-bpmn-io/C.9.0-roundtrip.bpmn": "failing",
    "miwg-bpmn-io/C.9.1-export.bpmn": "failing",
    "miwg-bpmn-io/C.9.1-roundtrip.bpmn": "failing",
    "miwg-bpmn-io/C.9.2-export.bpmn": "failing",
    "miwg-bpmn-io/C.9.2-roundtrip.bpmn": "failing",
    "miwg-reference/A.1.0.bpmn": "failing",
    "miwg-reference/A.2.0.bpmn": "failing",
    "miwg-reference/A.2.1.bpmn": "failing",
    "miwg-reference/A.3.0.bpmn": "failing",
    "miwg-reference/A.4.0.bpmn": "failing",
    "miwg-reference/A.4.1.bpmn": "failing",
    "miwg-reference/B.1.0.bpmn": "failing",
    "miwg-reference/B.2.0.bpmn": "failing",
    "miwg-reference/C.1.0.bpmn": "failing",
    "miwg-reference/C.1.1.bpmn": "failing",
    "miwg-reference/C.2.0.bpmn": "failing",
    "miwg-reference/C.3.0.bpmn": "failing",
    "miwg-reference/C.4.0.bpmn": "failing",
    "miwg-reference/C.5.0.bpmn": "failing",
    "miwg-reference/C.6.0.bpmn": "failing",
    "miwg-reference/C.7.0.bpmn": "failing",
    "miwg-reference/C.8.0.bpmn": "failing",
    "miwg-reference/C.8.1.bpmn": "failing",
    "miwg-reference/C.9.0.bpmn": "failing",
    "miwg-reference/C.9.1.bpmn": "failing",
    "miwg-reference/C.9.2.bpmn": "failing",
}

FILES = sorted(p.relative_to(CORPUS).as_posix() for p in CORPUS.rglob("*") if p.is_file())


@pytest.mark.parametrize("name", FILES)
def test_validate_answers_every_corpus_file_with_well_formed_problems(name: str) -> None:
    problems = validate((CORPUS / name).read_bytes(), Path(name).name, desk_vocabulary())
    for problem in problems:
        assert PRINTED.match(str(problem)), problem
        assert "\n" not in str(problem)
        assert problem.line > 0, problem
    assert ("failing" if problems else "clean") == EXPECTED.get(name, "unrecorded"), [
        str(p) for p in problems
    ]


def test_the_recorded_outcomes_match_the_corpus() -> None:
    assert sorted(EXPECTED) == FILES
