"""kd_lessons.exercises.bn_statistics: DeepInversion's BN-statistics loss (exercise 29)."""
import pytest
import torch
import torch.nn.functional as F
from exercise_harness import assert_three_outcomes
from torch import nn

from kd_lessons.exercises.bn_statistics import BN_VARIANTS, BNStatisticsLoss
from kd_lessons.exercises.core import EXERCISES
from kd_lessons.methods.deep_inversion import bn_statistics_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def solution():
    namespace = {"torch": torch, "F": F, "nn": nn}
    exec(BNStatisticsLoss.solution_code, namespace)
    return namespace[BNStatisticsLoss.fn_name]


def test_three_outcomes():
    assert_three_outcomes(BNStatisticsLoss())


@pytest.mark.parametrize("variant", BN_VARIANTS, ids=lambda v: v.name)
def test_each_wrong_answer_gets_its_own_hint(variant):
    result = BNStatisticsLoss().check(variant.fn)
    assert (result.outcome, result.mistake, result.message) == ("incorrect", variant.name, variant.hint)


def test_the_briefs_mistakes_are_all_known():
    assert {"no_variance", "view_without_permute", "unbiased_variance"} <= {v.name for v in BN_VARIANTS}


def test_each_wrong_answer_really_differs_from_the_reference():
    """A variant equal to the reference on the trials would make its hint unreachable."""
    for x, m, v in BNStatisticsLoss().trials():
        ref = bn_statistics_loss(x, m, v)
        for variant in BN_VARIANTS:
            assert not torch.allclose(variant.fn(x, m, v), ref, rtol=1e-4), variant.name


def test_a_detached_answer_is_named():
    def detached(x, m, v):
        return solution()(x.detach(), m, v)
    result = BNStatisticsLoss().check(detached)
    assert (result.outcome, result.mistake) == ("incorrect", "detached")
    assert "gradient must reach them" in result.message


def test_an_equivalent_answer_by_transposing_is_accepted():
    def transposed(x, running_mean, running_var):
        flat = x.transpose(0, 1).reshape(x.shape[1], -1)
        return (torch.linalg.vector_norm(flat.mean(1) - running_mean)
                + torch.linalg.vector_norm(flat.var(1, unbiased=False) - running_var))
    assert BNStatisticsLoss().check(transposed).outcome == "correct"


@pytest.mark.parametrize("fn", [lambda *a: "a string", lambda *a: None, lambda *a: torch.zeros(3),
                                lambda *a: 1 / 0, lambda: None, 42])
def test_garbage_never_raises(fn):
    result = BNStatisticsLoss().check(fn)
    assert result.outcome == "incorrect" and result.message


def test_registered_as_exercise_29():
    assert EXERCISES["bn_statistics_loss"] is BNStatisticsLoss and BNStatisticsLoss.number == 29
