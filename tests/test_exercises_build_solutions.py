"""scripts/build_solutions.py: the solved copy of notebook 09 is generated, never edited by hand."""
import importlib.util
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("build_solutions", ROOT / "scripts" / "build_solutions.py")
build_solutions = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_solutions)


def _learner():
    return nbformat.read(build_solutions.LEARNER, as_version=4)


def test_committed_solved_copy_is_up_to_date():
    """Regenerate in memory; the committed copy must match byte for byte."""
    expected = nbformat.writes(build_solutions.build_solutions(_learner()))
    assert build_solutions.SOLVED.read_text(encoding="utf-8") == expected, "run: make solutions"


def test_solved_copy_fills_solutions_asserts_and_fixes_links():
    solved = build_solutions.build_solutions(_learner())
    assert "](../../docs/references.md" in solved.cells[0].source
    assert solved.cells[0].source.endswith(build_solutions.SOLVED_NOTE)
    summary = next(i for i, c in enumerate(solved.cells) if "summary" in c.metadata.get("tags", []))
    assert solved.cells[summary + 1].source == build_solutions.ASSERT_ALL
    assert not any("NotImplementedError" in c.source for c in solved.cells if c.cell_type == "code")


def test_a_notebook_without_one_summary_cell_is_rejected():
    nb = _learner()
    nb.cells = [c for c in nb.cells if "summary" not in c.metadata.get("tags", [])]
    with pytest.raises(ValueError, match="exactly one cell tagged 'summary' \\(found 0\\)"):
        build_solutions.build_solutions(nb)


def test_a_solution_cell_with_an_unknown_exercise_is_rejected():
    nb = _learner()
    next(c for c in nb.cells if "solution" in c.metadata.get("tags", [])).metadata["kd_exercise"] = "nope"
    with pytest.raises(ValueError, match="kd_exercise='nope'; set its metadata"):
        build_solutions.build_solutions(nb)


def test_cli_checks_and_rejects_unknown_arguments(capsys):
    assert build_solutions.main(["--check"]) == 0
    assert build_solutions.main(["build-solutions"]) == 2
    out = capsys.readouterr().out
    assert "up to date" in out and "usage: python scripts/build_solutions.py [--check]" in out
