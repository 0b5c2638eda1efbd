"""kd_lessons.exercises.cross_tokenizer: exercise 35 (the ULD loss), its three outcomes and its hints."""
import pytest
import torch
from exercise_harness import assert_three_outcomes

from kd_lessons.exercises.core import EXERCISES
from kd_lessons.exercises.cross_tokenizer import ULD_VARIANTS, ULDLoss


def solution():
    namespace = {"torch": torch, "F": torch.nn.functional}
    exec(ULDLoss.solution_code, namespace)
    return namespace[ULDLoss.fn_name]


def test_registered_as_exercise_35():
    assert EXERCISES["uld_loss"].number == 35 and EXERCISES["uld_loss"] is ULDLoss


def test_three_outcomes():
    assert_three_outcomes(ULDLoss())


@pytest.mark.parametrize("variant", ULD_VARIANTS, ids=lambda v: v.name)
def test_each_known_bug_gets_its_own_hint(variant):
    result = ULDLoss().check(variant.fn)
    assert (result.outcome, result.mistake, result.message) == ("incorrect", variant.name, variant.hint)


def test_the_variants_differ_from_the_answer_and_each_other():
    """Every known bug changes the value on some trial, so none can be mistaken for the answer or another bug."""
    trials = ULDLoss.trials()
    outs = [[v.fn(s, t) for s, t in trials] for v in ULD_VARIANTS]
    right = [ULDLoss.reference(s, t) for s, t in trials]
    for name, out in zip((v.name for v in ULD_VARIANTS), outs):
        assert any(not torch.allclose(a, b, atol=1e-5) for a, b in zip(out, right)), name
    for i in range(len(outs)):
        for j in range(i):
            assert any(not torch.allclose(a, b, atol=1e-5) for a, b in zip(outs[i], outs[j]))


def test_a_detached_student_is_named():
    right = solution()
    result = ULDLoss().check(lambda s, t: right(s.detach(), t))
    assert (result.outcome, result.mistake) == ("incorrect", "detached")
