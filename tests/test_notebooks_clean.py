"""Notebooks are committed clean and each one runs code (nbval runs them; this checks what it cannot)."""
from pathlib import Path

import nbformat
import pytest

from kd_lessons.course import NOTEBOOK_GLOB, SETUP_SNIPPET

NOTEBOOKS = sorted(p for p in (Path(__file__).parents[1] / "notebooks").rglob("*.ipynb")
                   if ".ipynb_checkpoints" not in p.parts)


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_clean_and_runs_code(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    assert code, f"{path.name} has no code cell: a notebook that runs no code proves nothing"
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name} has outputs in cells {dirty}: run `make strip` before committing"
    assert path.stat().st_size < 200_000, f"{path.name} is {path.stat().st_size} bytes: keep notebooks small"
    assert nb.cells[0].cell_type == "markdown", f"{path.name} should open with a title and learning goals"


LESSONS = sorted((Path(__file__).parents[1] / "notebooks").glob(NOTEBOOK_GLOB))


SOLVED = sorted((Path(__file__).parents[1] / "notebooks" / "solutions").glob("*.ipynb"))


@pytest.mark.parametrize("path", LESSONS + SOLVED, ids=lambda p: p.name)
def test_first_code_cell_is_the_six_line_setup_cell(path):
    """Every lesson opens where kd_lessons is missing (Colab, a fresh kernel) with the one short install cell."""
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert len(SETUP_SNIPPET.splitlines()) <= 6
    assert first.source == SETUP_SNIPPET, (
        f"{path.name}: its first code cell must be exactly kd_lessons.course.SETUP_SNIPPET (lesson imports go in "
        f"the next cell); run `.venv/bin/python scripts/apply_setup_cell.py {path}` and then `make strip`")


def test_the_setup_cell_is_the_same_in_every_lesson():
    firsts = {next(c for c in nbformat.read(p, as_version=4).cells if c.cell_type == "code").source
              for p in LESSONS + SOLVED}
    assert len(firsts) == 1 and all(len(s.splitlines()) <= 6 for s in firsts), [s.splitlines()[:1] for s in firsts]
