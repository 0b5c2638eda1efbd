"""kd_lessons.exercises.questions: the bank matches notebook 08; its source tags link to docs/references.md."""
import re
from pathlib import Path

import nbformat

from kd_lessons.exercises import QUESTIONS

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("000", "001", "002", "003", "004")


def _question_cells():
    nb = nbformat.read(ROOT / "notebooks" / "08_interview_questions.ipynb", as_version=4)
    return [c for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("### Q")]


def test_bank_rows_parse_into_four_fields():
    assert [q["id"] for q in QUESTIONS] == [f"Q{i:02d}" for i in range(1, len(QUESTIONS) + 1)]
    assert all(set(q) == {"id", "source", "zh", "en"} and q["en"] for q in QUESTIONS)
    assert QUESTIONS[4] == {"id": "Q05", "source": None, "zh": None,
                            "en": "Why use T > 1, and why multiply the soft loss by T^2?"}
    assert all(q["source"] is None or q["source"][:3] in SOURCES for q in QUESTIONS)


def test_bank_matches_notebook_08():
    """Every question has its heading, in order, with its Chinese wording and one answer."""
    cells = _question_cells()
    assert [c.source.split(".")[0][4:] for c in cells] == [q["id"] for q in QUESTIONS]
    for cell, q in zip(cells, QUESTIONS):
        assert q["zh"] is None or q["zh"] in cell.source, q["id"]
        assert cell.source.count("<details>") == 1, q["id"]


def test_source_tags_link_to_the_references_page():
    """A tagged question links each article it names; untagged ones say they go beyond the sources."""
    references = (ROOT / "docs" / "references.md").read_text(encoding="utf-8")
    assert all(f'<a id="source-{s}"></a>' in references for s in SOURCES)
    assert "## Known mistakes in the sources" in references
    for cell, q in zip(_question_cells(), QUESTIONS):
        tag = next(line for line in cell.source.splitlines() if line.startswith("*("))
        if q["source"] is None:
            assert tag == "*(beyond the sources)*", q["id"]
            continue
        named = set(re.findall(r"\b(00\d)\b", q["source"]))
        linked = set(re.findall(r"\[source (00\d)\]\(\.\./docs/references\.md#source-\1\)", tag))
        assert named == linked, (q["id"], tag)
        plain = re.sub(r"\[source (00\d)\]\([^)]*\)", r"\1", tag).replace("; ", ";")
        assert plain == "*(" + q["source"].replace("; ", ";") + ")*", q["id"]
