"""kd_lessons.diffusion.distill: the PD target against the teacher's two steps, the halvings, one round, bad input."""
import copy

import pytest
import torch

from kd_lessons.diffusion import (
    Denoiser,
    DivergedError,
    alpha_sigma,
    check_steps,
    ddim_sample,
    ddim_step,
    pd_target_v,
    pd_target_x,
    progressive_distillation,
    sample_data,
)
from kd_lessons.diffusion.distill import distill_round, halvings, teacher_two_steps

pytestmark = pytest.mark.usefixtures("one_thread")


def _net(seed=0, **kw):
    torch.manual_seed(seed)
    return Denoiser(**{"hidden": 32, "depth": 2, **kw})


@pytest.mark.parametrize("t, t_next", [(1.0, 0.5), (0.5, 0.25), (0.25, 0.0)])
def test_the_target_makes_one_step_land_on_the_teachers_two(t, t_next):
    teacher, z = _net(), torch.randn(16, 2, generator=torch.Generator().manual_seed(1))
    tt = torch.full((16, 1), t)
    z_tpp = teacher_two_steps(teacher, z, tt, tt - (t - t_next) / 2, torch.full((16, 1), t_next))
    (a_t, s_t), (a_n, s_n) = alpha_sigma(tt), alpha_sigma(torch.full((16, 1), t_next))
    x_tilde = pd_target_x(z, z_tpp, a_t, s_t, a_n, s_n)
    v_tilde = pd_target_v(z, x_tilde, a_t, s_t)
    perfect_student = lambda zz, ttt: v_tilde  # noqa: E731  predicts exactly the target
    assert torch.allclose(ddim_step(perfect_student, z, tt, t_next), z_tpp, atol=1e-5)
    assert not x_tilde.requires_grad and not v_tilde.requires_grad


def test_the_target_is_detached_even_from_a_graph():
    z, z_n = torch.randn(3, 2), torch.randn(3, 2, requires_grad=True)
    (a_t, s_t), (a_n, s_n) = alpha_sigma(0.8), alpha_sigma(0.4)
    assert not pd_target_x(z, z_n, a_t, s_t, a_n, s_n).requires_grad


def test_halvings_and_bad_step_counts():
    assert halvings(64) == [32, 16, 8, 4, 2, 1] and halvings(16, 4) == [8, 4]
    for bad in (48, 0, 3, 2.0, True, "64"):
        with pytest.raises(ValueError, match="power of two"):
            check_steps(bad)
    with pytest.raises(ValueError, match="final_steps=3.*power of two"):
        check_steps(64, 3)
    with pytest.raises(ValueError, match="smaller than teacher_steps"):
        check_steps(8, 8)


def test_one_round_makes_one_step_do_what_two_did():
    g = torch.Generator().manual_seed(0)
    x = sample_data("8gaussians", 1000, g)
    teacher = _net()
    before = copy.deepcopy(teacher.state_dict())
    student, losses = distill_round(teacher, 1, x, 80, batch_size=64, lr=3e-3, generator=g, progress=False)
    assert student is not teacher and all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert sum(losses[-10:]) < 0.2 * sum(losses[:10])
    z = torch.randn(500, 2, generator=g)
    two = ddim_sample(teacher, z, 2)
    err_student = (ddim_sample(student, z, 1) - two).pow(2).mean()
    err_undistilled = (ddim_sample(teacher, z, 1) - two).pow(2).mean()
    assert err_student < 0.2 * err_undistilled, (err_student, err_undistilled)


def test_progressive_distillation_returns_one_student_per_halving():
    x = sample_data("swissroll", 200)
    students, losses = progressive_distillation(_net(hidden=8, depth=1), 8, x, 3, batch_size=16, progress=False)
    assert list(students) == [4, 2, 1] == list(losses) and all(len(v) == 3 for v in losses.values())
    assert len({id(s) for s in students.values()}) == 3
    with pytest.raises(ValueError, match="power of two"):
        progressive_distillation(_net(hidden=8, depth=1), 12, x, 3, progress=False)
    with pytest.raises(ValueError, match="iters=0"):
        progressive_distillation(_net(hidden=8, depth=1), 8, x, 0, progress=False)


class NaNDenoiser(Denoiser):
    def forward(self, z, t):
        return super().forward(z, t) * float("nan")


def test_a_nan_in_a_round_stops_with_a_message():
    with pytest.raises(DivergedError, match=r"progressive distillation \(4 -> 2 steps\).*nothing was cached"):
        progressive_distillation(NaNDenoiser(hidden=8, depth=1), 4, sample_data("8gaussians", 50), 2,
                                 batch_size=8, progress=False)
