"""kd_lessons.exercises.on_policy: exercises 31-33 (OPD reward, GRPO advantage, clipped ratio) and their hints."""
import pytest
import torch
from exercise_harness import assert_named, assert_three_outcomes

from kd_lessons.exercises.core import EXERCISES
from kd_lessons.exercises.on_policy import (
    ADVANTAGE_VARIANTS,
    CLIP_VARIANTS,
    REWARD_VARIANTS,
    ClippedRatio,
    GRPOAdvantage,
    ReverseKLReward,
)

CASES = [(ReverseKLReward, REWARD_VARIANTS), (GRPOAdvantage, ADVANTAGE_VARIANTS), (ClippedRatio, CLIP_VARIANTS)]


def solution(cls):
    namespace = {"torch": torch, "F": torch.nn.functional}
    exec(cls.solution_code, namespace)
    return namespace[cls.fn_name]


def test_registered_as_exercises_31_to_33():
    assert [EXERCISES[k].number for k in ("reverse_kl_reward", "grpo_advantage", "clipped_ratio")] == [31, 32, 33]


@pytest.mark.parametrize("cls", [c for c, _ in CASES], ids=lambda c: c.__name__)
def test_three_outcomes(cls):
    assert_three_outcomes(cls())


@pytest.mark.parametrize("cls, variant", [(c, v) for c, vs in CASES for v in vs],
                         ids=lambda x: getattr(x, "name", getattr(x, "__name__", "")))
def test_each_known_bug_gets_its_own_hint(cls, variant):
    assert_named(cls(), variant)


def test_a_reward_with_gradient_is_named():
    right = solution(ReverseKLReward)

    def with_grad(s, t, x, m):
        return right(s, t, x, m) + 0 * s.sum()

    result = ReverseKLReward().check(with_grad)
    assert (result.outcome, result.mistake) == ("incorrect", "carries_gradient")


def test_a_detached_ratio_is_named():
    right = solution(ClippedRatio)
    result = ClippedRatio().check(lambda n, o, a, c: right(n.detach(), o, a, c))
    assert (result.outcome, result.mistake) == ("incorrect", "detached")
