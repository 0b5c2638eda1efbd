"""kd_lessons.exercises.trace_filter: exercise 30, rejection sampling of teacher traces, and its hints."""
import pytest
from exercise_harness import assert_three_outcomes

from kd_lessons.exercises.core import EXERCISES
from kd_lessons.exercises.trace_filter import VARIANTS, KeepCorrectTraces, _trials, reference_keep_correct
from kd_lessons.generative import scratchpad as task


def test_registered_as_exercise_30():
    assert EXERCISES["keep_correct_traces"] is KeepCorrectTraces and KeepCorrectTraces.number == 30


def test_three_outcomes():
    assert_three_outcomes(KeepCorrectTraces())


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_each_wrong_answer_gets_its_own_hint(variant):
    result = KeepCorrectTraces().check(variant.fn)
    assert (result.outcome, result.mistake, result.message) == ("incorrect", variant.name, variant.hint)


def test_the_briefs_mistakes_are_all_known():
    assert {"checked_the_trace", "raw_string", "trusted_confidence"} <= {v.name for v in VARIANTS}


def test_the_reference_agrees_with_the_lessons_filter():
    """The exercise's reference and generative.reasoning.filter_correct keep the same texts."""
    for texts, problems, confidences in _trials():
        clean = [t.strip() for t in texts]
        kept, _ = task.filter_correct(clean, problems)
        assert kept == [t.strip() for t in reference_keep_correct(texts, problems, confidences)]
        assert 0 < len(kept) < len(texts)


def test_other_mistakes_are_named():
    reversed_order = KeepCorrectTraces().check(lambda t, p, c: reference_keep_correct(t, p, c)[::-1])
    assert reversed_order.mistake == "reordered"
    as_set = KeepCorrectTraces().check(lambda t, p, c: set(reference_keep_correct(t, p, c)))
    assert as_set.mistake == "not_a_list"
    keep_all = KeepCorrectTraces().check(lambda t, p, c: list(t))
    assert (keep_all.outcome, keep_all.mistake) == ("incorrect", None) and "kept 8 texts where 3" in keep_all.message


GARBAGE = [lambda *a: "a string", lambda *a: None, lambda *a: [1, 2], lambda *a: 1 / 0, lambda: None, 42,
           lambda t, p, c: [None]]


@pytest.mark.parametrize("fn", GARBAGE)
def test_garbage_never_raises(fn):
    result = KeepCorrectTraces().check(fn)
    assert result.outcome == "incorrect" and result.message, result
