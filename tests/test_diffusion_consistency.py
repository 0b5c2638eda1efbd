"""kd_lessons.diffusion.consistency: the boundary condition, one step that follows the teacher's ODE, bad input."""
import pytest
import torch

from kd_lessons.diffusion import (
    Denoiser,
    DivergedError,
    consistency_distillation,
    consistency_sample,
    ddim_sample,
    predict_x_eps,
    sample_data,
    train_denoiser,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_x_prediction_meets_the_boundary_condition():
    torch.manual_seed(0)
    z = torch.randn(8, 2)
    assert torch.allclose(predict_x_eps(Denoiser(hidden=16, depth=2), z, 0.0)[0], z, atol=1e-6)  # f(z, 0) = z


def test_one_consistency_step_follows_the_teachers_many_steps():
    g = torch.Generator().manual_seed(0)
    x = sample_data("8gaussians", 2000, g)
    torch.manual_seed(0)
    teacher = Denoiser(hidden=32, depth=2)
    train_denoiser(teacher, x, 150, batch_size=128, lr=2e-3, generator=g, progress=False)
    student, losses = consistency_distillation(teacher, x, 120, n_grid=8, ema=0.9, batch_size=128, lr=2e-3, generator=g,
                                               progress=False)
    z = torch.randn(500, 2, generator=g)
    ode = ddim_sample(teacher, z, 16)
    err_cd = (consistency_sample(student, z, 1) - ode).pow(2).mean()
    err_teacher = (ddim_sample(teacher, z, 1) - ode).pow(2).mean()
    assert err_cd < 0.1 * err_teacher, (err_cd, err_teacher)
    a = consistency_sample(student, z, 3, torch.Generator().manual_seed(1))
    assert torch.equal(a, consistency_sample(student, z, 3, torch.Generator().manual_seed(1)))  # seeded re-noising
    assert not torch.equal(a, consistency_sample(student, z, 3, torch.Generator().manual_seed(2)))


class NaNDenoiser(Denoiser):
    def forward(self, z, t):
        return super().forward(z, t) * float("nan")


def test_bad_input_and_nan():
    x = sample_data("8gaussians", 50)
    for ema in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"EMA momentum must lie in \[0, 1\)"):
            consistency_distillation(Denoiser(hidden=8, depth=1), x, 2, ema=ema, progress=False)
    with pytest.raises(ValueError, match="n_grid=0"):
        consistency_distillation(Denoiser(hidden=8, depth=1), x, 2, n_grid=0, progress=False)
    with pytest.raises(ValueError, match="whole number of steps"):
        consistency_sample(Denoiser(hidden=8, depth=1), torch.zeros(3, 2), 0)
    with pytest.raises(DivergedError, match="consistency distillation: the loss became nan"):
        consistency_distillation(NaNDenoiser(hidden=8, depth=1), x, 2, batch_size=8, progress=False)
