"""kd_lessons.diffusion.model: the cosine VP schedule, v-prediction, DDIM by hand, determinism, quality, NaN."""
import math

import pytest
import torch
from torch import nn

from kd_lessons.diffusion import (
    Denoiser,
    DivergedError,
    alpha_sigma,
    ddim_sample,
    ddim_step,
    predict_x_eps,
    sample_data,
    sliced_wasserstein,
    train_denoiser,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class ConstantV(nn.Module):
    """A 'model' whose v-prediction is a fixed vector: DDIM can be computed by hand."""

    def __init__(self, v):
        super().__init__()
        self.v = torch.tensor(v)

    def forward(self, z, t):
        return self.v.expand_as(z)


def test_schedule_is_variance_preserving_with_pure_noise_at_1():
    t = torch.linspace(0, 1, 11)
    a, s = alpha_sigma(t)
    assert torch.allclose(a ** 2 + s ** 2, torch.ones(11)) and a[0] == 1 and s[0] == 0
    assert abs(float(a[-1])) < 1e-6 and float(s[-1]) == pytest.approx(1.0)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            alpha_sigma(bad)


def test_ddim_step_by_hand():
    z, v, t, s = [0.3, -1.2], [0.5, 0.25], 0.6, 0.2
    a_t, s_t = math.cos(math.pi * t / 2), math.sin(math.pi * t / 2)
    a_s, s_s = math.cos(math.pi * s / 2), math.sin(math.pi * s / 2)
    want = []
    for zi, vi in zip(z, v):
        x, eps = a_t * zi - s_t * vi, s_t * zi + a_t * vi
        want.append(a_s * x + s_s * eps)
    got = ddim_step(ConstantV(v), torch.tensor([z]), t, s)
    assert torch.allclose(got, torch.tensor([want]), atol=1e-6)


def test_the_true_v_makes_every_step_exact():
    """With v = alpha eps - sigma x of a known (x, eps), x_hat = x, eps_hat = eps and z_s is exactly on the path."""
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g)
    t, s = 0.9, 0.35
    (a_t, s_t), (a_s, s_s) = alpha_sigma(t), alpha_sigma(s)
    model = lambda z, tt: a_t * eps - s_t * x  # noqa: E731
    x_hat, eps_hat = predict_x_eps(model, a_t * x + s_t * eps, t)
    assert torch.allclose(x_hat, x, atol=1e-6) and torch.allclose(eps_hat, eps, atol=1e-6)
    assert torch.allclose(ddim_step(model, a_t * x + s_t * eps, t, s), a_s * x + s_s * eps, atol=1e-6)


def test_sampler_is_deterministic_and_leaves_the_mode_alone():
    torch.manual_seed(0)
    model = Denoiser(hidden=16, depth=2).train()
    z = torch.randn(64, 2)
    a, b = ddim_sample(model, z.clone(), 7), ddim_sample(model, z.clone(), 7)
    assert torch.equal(a, b) and model.training and not a.requires_grad
    assert not torch.equal(a, ddim_sample(model, z, 3))


@pytest.mark.parametrize("steps", [0, -2, 2.5, True, "4"])
def test_bad_step_counts(steps):
    with pytest.raises(ValueError, match="whole number of steps"):
        ddim_sample(Denoiser(hidden=8, depth=1), torch.zeros(3, 2), steps)


def test_bad_noise_shape():
    with pytest.raises(ValueError, match=r"\[batch, dim\]"):
        ddim_sample(Denoiser(hidden=8, depth=1), torch.zeros(3), 4)


def test_more_steps_sample_better_for_a_trained_teacher():
    g = torch.Generator().manual_seed(0)
    x = sample_data("8gaussians", 2000, g)
    torch.manual_seed(0)
    teacher = Denoiser(hidden=64, depth=2)
    losses = train_denoiser(teacher, x, 300, batch_size=128, lr=2e-3, generator=g, progress=False)
    assert sum(losses[-50:]) < sum(losses[:50])
    ref, z = sample_data("8gaussians", 1000, g), torch.randn(1000, 2, generator=g)
    sw = {k: sliced_wasserstein(ddim_sample(teacher, z, k), ref) for k in (1, 4, 16)}
    assert sw[1] > 1.5 * sw[4] and sw[4] > sw[16], sw


class NaNDenoiser(Denoiser):
    def forward(self, z, t):
        return super().forward(z, t) * float("nan")


def test_a_nan_loss_stops_training_with_a_message():
    x = sample_data("8gaussians", 100)
    with pytest.raises(DivergedError, match="became nan at step 0.*nothing was cached.*Lower the learning rate"):
        train_denoiser(NaNDenoiser(hidden=8, depth=1), x, 5, batch_size=8, progress=False)
    with pytest.raises(DivergedError, match="NaN or inf"):
        train_denoiser(Denoiser(hidden=8, depth=1), torch.full((10, 2), float("nan")), 5, progress=False)
