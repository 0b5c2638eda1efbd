"""kd_lessons.exercises.step_distillation: exercise 38 (the progressive-distillation target) and its hints."""
import pytest
import torch
from exercise_harness import assert_three_outcomes

from kd_lessons.diffusion import Denoiser, alpha_sigma, ddim_step
from kd_lessons.diffusion.distill import teacher_two_steps
from kd_lessons.exercises import EXERCISES, ProgressiveDistillationTarget
from kd_lessons.exercises.step_distillation import VARIANTS, _trials

pytestmark = pytest.mark.usefixtures("one_thread")


def solution():
    namespace = {"torch": torch, "F": torch.nn.functional}
    exec(ProgressiveDistillationTarget.solution_code, namespace)
    return namespace["pd_target"]


def test_registered_as_exercise_38():
    assert EXERCISES["pd_target"] is ProgressiveDistillationTarget and ProgressiveDistillationTarget.number == 38


def test_three_outcomes():
    assert_three_outcomes(ProgressiveDistillationTarget())


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_each_known_bug_gets_its_own_hint(variant):
    result = ProgressiveDistillationTarget().check(variant.fn)
    assert (result.outcome, result.mistake, result.message) == ("incorrect", variant.name, variant.hint)


def test_the_variants_differ_from_the_answer_on_every_trial():
    right = solution()
    for variant in VARIANTS:
        for args in _trials():
            assert not torch.allclose(variant.fn(*args), right(*args), rtol=1e-4, atol=1e-6), variant.name


def test_a_target_with_gradient_is_named():
    def with_grad(z_t, z_tpp, a_t, s_t, a_n, s_n):
        ratio = s_n / s_t
        return (z_tpp - ratio * z_t) / (a_n - ratio * a_t)

    result = ProgressiveDistillationTarget().check(with_grad)
    assert (result.outcome, result.mistake) == ("incorrect", "carries_gradient")


def test_the_solution_reproduces_the_teachers_two_steps_in_one():
    """What the exercise is for: one DDIM step with x~ from z_t lands on the teacher's z_t''."""
    torch.manual_seed(0)
    teacher = Denoiser(hidden=16, depth=2)
    z_t = torch.randn(5, 2)
    t, t_mid, t_next = 0.75, 0.625, 0.5
    z_tpp = teacher_two_steps(teacher, z_t, t, t_mid, t_next)
    a_t, s_t = alpha_sigma(torch.full((5, 1), t))
    a_n, s_n = alpha_sigma(torch.full((5, 1), t_next))
    x_tilde = solution()(z_t, z_tpp, a_t, s_t, a_n, s_n)
    eps = (z_t - a_t * x_tilde) / s_t
    assert torch.allclose(a_n * x_tilde + s_n * eps, z_tpp, atol=1e-5)
    assert not torch.allclose(ddim_step(teacher, z_t, t, t_next), z_tpp, atol=1e-3)  # the teacher's one step misses
