"""kd_lessons.exercises.dino: exercises 37 (DINO centering) and 39 (EMA teacher), three outcomes, each bug named."""
import pytest
import torch
from exercise_harness import assert_named, assert_three_outcomes

from kd_lessons.exercises.core import EXERCISES
from kd_lessons.exercises.dino import CENTER_VARIANTS, EMA_VARIANTS, DINOCenter, EMATeacher

CASES = [(DINOCenter, CENTER_VARIANTS), (EMATeacher, EMA_VARIANTS)]


def solution(cls):
    namespace = {"torch": torch, "F": torch.nn.functional, "nn": torch.nn}
    exec(cls.solution_code, namespace)
    return namespace[cls.fn_name]


def test_registered_as_exercises_37_and_39():
    assert [EXERCISES[k].number for k in ("dino_center", "ema_teacher")] == [37, 39]


@pytest.mark.parametrize("cls", [c for c, _ in CASES], ids=lambda c: c.__name__)
def test_three_outcomes(cls):
    assert_three_outcomes(cls())


@pytest.mark.parametrize("cls, variant", [(c, v) for c, vs in CASES for v in vs],
                         ids=lambda x: getattr(x, "name", getattr(x, "__name__", "")))
def test_each_known_bug_gets_its_own_hint(cls, variant):
    assert_named(cls(), variant)


def test_a_detached_student_is_named():
    right = solution(DINOCenter)
    result = DINOCenter().check(lambda s, *rest: right(s.detach(), *rest))
    assert (result.outcome, result.mistake) == ("incorrect", "detached")


def test_a_rebinding_update_is_named():
    def rebinding(teacher, student, m):
        with torch.no_grad():
            for t, s in zip(teacher.parameters(), student.parameters()):
                t = m * t + (1 - m) * s  # noqa: F841 - the mistake: a new tensor, the teacher unchanged

    result = EMATeacher().check(rebinding)
    assert (result.outcome, result.mistake) == ("incorrect", "not_in_place")


def test_a_single_value_return_is_incorrect_not_a_crash():
    result = DINOCenter().check(lambda s, t, c, m, ts, tt: s.sum())
    assert result.outcome == "incorrect" and "(loss, new_center)" in result.message
