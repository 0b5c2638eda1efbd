"""kd_lessons.exercises.speculative: exercise 34 (speculative sampling's accept / resample step) and its hints."""
import pytest
import torch

from kd_lessons.exercises.core import EXERCISES
from kd_lessons.exercises.speculative import VERIFY_VARIANTS, SpeculativeAccept, _same, verify_trials
from kd_lessons.generative import speculative as sp


def solution():
    namespace = {"torch": torch, "F": torch.nn.functional}
    exec(SpeculativeAccept.solution_code, namespace)
    return namespace[SpeculativeAccept.fn_name]


def test_registered_as_exercise_34():
    assert EXERCISES["speculative_accept"].number == 34


def test_three_outcomes():
    ex = SpeculativeAccept()
    assert ex.check(solution()).outcome == "correct"
    assert ex.check(sp.verify).outcome == "correct"
    assert ex.check(None).outcome == "not_attempted"
    starter = {}
    exec(ex.starter_code, starter)
    assert ex.check(starter[SpeculativeAccept.fn_name]).outcome == "not_attempted"
    assert ex.check(lambda *a: 1 / 0).outcome == "incorrect"
    assert ex.check(lambda *a: 3).outcome == "incorrect"


@pytest.mark.parametrize("variant", VERIFY_VARIANTS, ids=lambda v: v.name)
def test_each_known_bug_gets_its_own_hint(variant):
    result = SpeculativeAccept().check(variant.fn)
    assert (result.outcome, result.mistake, result.message) == ("incorrect", variant.name, variant.hint)


def test_the_trials_tell_every_variant_from_the_reference_and_from_each_other():
    trials = verify_trials()
    outputs = [[v.fn(*args) for args in trials] for v in VERIFY_VARIANTS]
    reference = [sp.verify(*args) for args in trials]
    for name, outs in zip((v.name for v in VERIFY_VARIANTS), outputs):
        assert not all(_same(o, r) for o, r in zip(outs, reference)), name
    for i, a in enumerate(outputs):
        for b in outputs[i + 1:]:
            assert not all(_same(x, y) for x, y in zip(a, b))


def test_an_unknown_mistake_shows_one_failing_case():
    right = solution()
    result = SpeculativeAccept().check(lambda p, q, t, u: (right(p, q, t, u)[0], q[0]))
    assert result.outcome == "incorrect" and result.mistake is None and "the reference keeps" in result.message
