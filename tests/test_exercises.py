"""Every exercise in kd_lessons.exercises: the three outcomes, each known mistake named, the notebook in sync."""
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kd_lessons.exercises import EXERCISES
from kd_lessons.losses import distillation_loss

LEARNER = Path(__file__).resolve().parents[1] / "notebooks" / "09_coding_exercises.ipynb"
KEYS = list(EXERCISES)
FIXES = [key for key, cls in EXERCISES.items() if cls.broken]
# Exercises whose checker compares with known wrong answers (the find-and-fix ones inherit theirs).
WITH_VARIANTS = [key for key, cls in EXERCISES.items() if "variants" in vars(cls)]

pytestmark = pytest.mark.usefixtures("one_thread")


def define(code: str, name: str):
    """Run a cell's code with the notebook's setup imports and return the function it defines."""
    namespace = {"torch": torch, "F": F, "nn": nn, "distillation_loss": distillation_loss}
    exec(code, namespace)
    return namespace[name]


@pytest.mark.parametrize("key", KEYS)
def test_reference_solution_is_correct(key):
    ex = EXERCISES[key]()
    result = ex.check(define(ex.solution_code, ex.fn_name))
    assert (result.outcome, result.mistake) == ("correct", None), result.message


@pytest.mark.parametrize("key", KEYS)
def test_starter_code_and_none_are_not_attempted(key):
    ex = EXERCISES[key]()
    result = ex.check(define(ex.starter_code, ex.fn_name))
    assert result.outcome == "not_attempted" and "NotImplementedError" in result.message
    result = ex.check(None)
    assert result.outcome == "not_attempted" and f"define `{ex.fn_name}`" in result.message


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch warns about some of the known mistakes
@pytest.mark.parametrize("key", FIXES)
def test_broken_code_is_incorrect_and_names_its_bug(key):
    ex = EXERCISES[key]()
    result = ex.check(define(ex.broken, ex.fn_name))
    assert (result.outcome, result.mistake) == ("incorrect", ex.bug), result.message


VARIANT_CASES = [pytest.param(key, variant, id=f"{key}-{variant.name}")
                 for key in WITH_VARIANTS for variant in EXERCISES[key].variants]


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch warns about some of the known mistakes
@pytest.mark.parametrize("key,variant", VARIANT_CASES)
def test_each_known_wrong_answer_gets_its_specific_hint(key, variant):
    result = EXERCISES[key]().check(variant.fn)
    assert (result.outcome, result.mistake, result.message) == ("incorrect", variant.name, variant.hint)


@pytest.mark.parametrize("key", KEYS)
def test_mistakes_are_listed_once_and_include_the_bug(key):
    ex = EXERCISES[key]()
    assert ex.mistakes and len(set(ex.mistakes)) == len(ex.mistakes)
    assert (ex.bug is None) == (not ex.broken)
    assert ex.bug is None or ex.bug in ex.mistakes


@pytest.mark.parametrize("key", KEYS)
def test_learner_errors_are_reported_not_raised(key):
    def boom(*args):
        raise ValueError("oops")

    result = EXERCISES[key]().check(boom)
    assert result.outcome == "incorrect" and "ValueError: oops" in result.message


# ---------------------------------------------------------------- notebook 09 follows the classes


def _exercise_cells():
    """(heading, starter cell, check cell) for each cell tagged `solution` in the learner notebook."""
    cells = nbformat.read(LEARNER, as_version=4).cells
    return [(cells[i - 1].source.splitlines()[0], cell, cells[i + 1]) for i, cell in enumerate(cells)
            if "solution" in cell.metadata.get("tags", [])]


def test_notebook_has_one_cell_per_exercise_in_order():
    keys = [cell.metadata["kd_exercise"] for _, cell, _ in _exercise_cells()]
    numbers = sorted(EXERCISES[key].number for key in keys)
    assert sorted(keys) == sorted(KEYS) and numbers == list(range(1, len(KEYS) + 1))


@pytest.mark.parametrize("key", KEYS)
def test_notebook_cells_match_the_exercise(key):
    heading, starter, check = next(c for c in _exercise_cells() if c[1].metadata["kd_exercise"] == key)
    cls = EXERCISES[key]
    assert heading == f"### {cls.number}. {cls.title}"
    assert starter.source.rstrip("\n") == cls().starter_code.rstrip("\n")
    assert f"exercises.{cls.__name__}()" in check.source and f".check({cls.fn_name})" in check.source
